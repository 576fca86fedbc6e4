"""Feature masks for perturbation methods: which pixels are removed together.

A feature is a set of pixels, over all channels, that a method keeps or replaces by the baseline as
one. ``features=`` is one of

- ``"grid"``: square cells of ``cell`` pixels (an int or a pair (height, width); 16 by default), in
  rows from the top left; the cells of the last row and column are clipped at the border, so an
  image smaller than a cell is one feature;
- ``"slic"``: SLIC superpixels of each image (``skimage.segmentation.slic`` with ``n_segments=segments``
  and ``compactness=compactness``, on the CPU, in float64; deterministic), computed from the
  explained image itself (the clean image: copies that ``smooth=`` adds noise to keep its
  features); scikit-image is an optional dependency;
- an integer label mask: (H, W) shared by every sample, or (N, H, W) one per sample of the call (such
  masks are rows of one ``explain()`` call, as per-sample baselines are). Labels need not be
  contiguous: each distinct value is one feature, and features are numbered in increasing order of
  their labels.

The number of features may differ between samples (superpixels, per-sample masks). Methods lay out
their items for the call's largest count; the items of features a sample does not have do nothing
and run no forward pass.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..core.checks import json_safe
from ..core.errors import InvalidParameterError, PluginError
from .arguments import check_pair

KINDS = ("grid", "slic")
#: the cell of ``features="grid"`` when none is given: 196 features on 224 px images, one on 12 px ones
DEFAULT_CELL = 16
#: SLIC's defaults, as scikit-image sets them
DEFAULT_SEGMENTS = 100
DEFAULT_COMPACTNESS = 10.0


class FeatureMasks:
    """The features of a method's inputs: labels 0 .. F-1 per pixel and the count F of each sample.

    Built from the method's ``features=``, ``cell=``, ``segments=`` and ``compactness=`` arguments
    (checked here, at construction). Superpixels are computed in :meth:`check` for the call's
    inputs, and looked up by the samples' positions in the call during its passes.
    """

    def __init__(self, method: str, features: Any, cell: Any, segments: Any, compactness: Any) -> None:
        self.method = method
        self.kind, self.cell, self.segments, self.compactness = _check_kind(
            method, features, cell, segments, compactness
        )
        self.mask: Tensor | None = None  # (S, H, W) int32 labels 0 .. F-1, S = 1 (shared) or N (per sample)
        self.counts: Tensor | None = None  # (S,) features of each mask
        if self.kind == "mask":
            self.mask, self.counts = relabel(method, features)
            self._given = features.detach()
        if self.kind == "slic":
            _import_slic(method)  # a missing scikit-image is said when the method is made
        self._grid: dict[tuple[int, int], Tensor] = {}
        self._on_device: dict[tuple[str, tuple[int, int]], Tensor] = {}

    def params(self) -> dict[str, Any]:
        """The arguments that define the features, JSON-safe, for provenance."""
        if self.kind == "grid":
            return {"features": "grid", "cell": list(self.cell)}
        if self.kind == "slic":
            return {"features": "slic", "segments": self.segments, "compactness": self.compactness}
        return {"features": json_safe(self._given)}

    def rows_of_one_call(self) -> str | None:
        """Why ``run`` may not explain a data set block by block with these features, or None (superpixels
        are computed for each block's images)."""
        if self.kind == "mask" and self.mask is not None and self.mask.shape[0] > 1:
            return "features given per sample, (N, H, W), are rows of one explain() call"
        return None

    def check(self, inputs: Tensor) -> None:
        """Refuse inputs (N, C, H, W) a mask does not fit; compute the call's superpixels."""
        n, (h, w) = inputs.shape[0], tuple(inputs.shape[-2:])
        if self.kind == "mask" and self.mask is not None:
            s, mh, mw = self.mask.shape
            if (mh, mw) != (h, w) or s not in (1, n):
                raise InvalidParameterError(
                    f"{self.method}: features of shape {tuple(self.mask.shape) if s > 1 else (mh, mw)} do not fit "
                    f"inputs of shape {tuple(inputs.shape)}; give an (H, W) = ({h}, {w}) mask shared by every "
                    f"sample or an (N, H, W) = ({n}, {h}, {w}) one per sample, in the order of the inputs."
                )
        elif self.kind == "slic":
            self.mask, self.counts = superpixels(self.method, inputs, self.segments, self.compactness)
            self._on_device.clear()

    def most(self, shape: tuple[int, ...]) -> int:
        """The largest number of features of a sample, for inputs of ``shape`` (…, H, W).

        Superpixels before :meth:`check` has seen inputs of this size: the number of segments asked for.
        """
        h, w = shape[-2:]
        if self.kind == "grid":
            return int(self._grid_labels(h, w).max()) + 1
        if self.counts is None or self.mask is None or tuple(self.mask.shape[1:]) != (h, w):
            return int(self.segments)
        return int(self.counts.max())

    def labels(self, position: Tensor | None, shape: tuple[int, ...], device: torch.device) -> tuple[Tensor, Tensor]:
        """Labels (n, H, W) int64 on ``device`` and counts (n,) (CPU) of the samples at ``position`` (n,)."""
        h, w = shape[-2:]
        n = 1 if position is None else len(position)
        if self.kind == "grid":
            grid = self._grid_labels(h, w)
            count = torch.full((n,), int(grid.max()) + 1, dtype=torch.long)
            return self._cached(device, grid.unsqueeze(0)).expand(n, h, w), count
        if self.mask is None or self.counts is None:
            raise PluginError(
                f"{self.method}: superpixels are computed in check_inputs(); call it with the inputs first."
            )
        mask = self._cached(device, self.mask)
        if mask.shape[0] == 1:
            return mask.expand(n, h, w), self.counts.expand(n)
        if position is None:
            raise PluginError(
                f"{self.method}: features per sample need the samples' positions in the call (Batch.position)."
            )
        if int(position.max()) >= mask.shape[0]:
            raise PluginError(
                f"{self.method}: a pass holds sample {int(position.max())} of a call whose features were computed "
                f"for {mask.shape[0]} samples; check_inputs() must see the call's inputs."
            )
        return mask[position.to(device)].long(), self.counts[position.cpu()]

    def _cached(self, device: torch.device, mask: Tensor) -> Tensor:
        """``mask`` on ``device``: int64 when it is shared by every sample, else as stored (int32, indexed per pass)."""
        key = (str(device), tuple(mask.shape))
        if key not in self._on_device:
            self._on_device[key] = mask.to(device=device, dtype=torch.long if mask.shape[0] == 1 else mask.dtype)
        return self._on_device[key]

    def _grid_labels(self, h: int, w: int) -> Tensor:
        if (h, w) not in self._grid:
            ch, cw = self.cell
            rows = torch.arange(h) // ch
            cols = torch.arange(w) // cw
            self._grid[(h, w)] = rows[:, None] * math.ceil(w / cw) + cols[None, :]
        return self._grid[(h, w)]

    def __getstate__(self) -> dict[str, Any]:
        # Copies sent to other processes start without device copies (superpixels are per call anyway).
        return {**self.__dict__, "_on_device": {}}


def _check_kind(
    method: str, features: Any, cell: Any, segments: Any, compactness: Any
) -> tuple[str, tuple[int, int], int, float]:
    """The kind of features ("grid", "slic" or "mask") and their parameters, checked."""
    if isinstance(features, str):
        if features not in KINDS:
            raise InvalidParameterError(
                f"{method}: features must be one of {', '.join(map(repr, KINDS))} or an integer label mask "
                f"(H, W) or (N, H, W), got {features!r}."
            )
        kind = features
    elif isinstance(features, Tensor):
        kind = "mask"
    else:
        raise InvalidParameterError(
            f"{method}: features must be 'grid', 'slic' or an integer label mask tensor (H, W) or (N, H, W), "
            f"got {type(features).__name__}."
        )
    for name, value, owner in (
        ("cell", cell, "grid"),
        ("segments", segments, "slic"),
        ("compactness", compactness, "slic"),
    ):
        if value is not None and kind != owner:
            raise InvalidParameterError(
                f"{method}: {name} applies to features={owner!r} only, but features is "
                f"{kind if kind != 'mask' else 'a label mask'}; leave {name} out or use features={owner!r}."
            )
    pair = check_pair(method, "cell", DEFAULT_CELL if cell is None else cell)
    count = DEFAULT_SEGMENTS if segments is None else segments
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidParameterError(
            f"{method}: segments must be a positive int (superpixels asked for), got {count!r}."
        )
    squeeze = DEFAULT_COMPACTNESS if compactness is None else compactness
    if isinstance(squeeze, bool) or not isinstance(squeeze, (int, float)) or not (0 < squeeze < math.inf):
        raise InvalidParameterError(
            f"{method}: compactness must be a finite number > 0 (SLIC's balance of colour and space), got {squeeze!r}."
        )
    return kind, pair, int(count), float(squeeze)


def relabel(method: str, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Labels 0 .. F-1 (S, H, W) int32 on the CPU, in increasing order of ``mask``'s (H, W) or (N, H, W)
    values, and each row's count F (S,)."""
    if mask.dtype.is_floating_point or mask.dtype.is_complex or mask.dtype == torch.bool:
        raise InvalidParameterError(
            f"{method}: a feature mask holds integer labels, got dtype {mask.dtype}; pass e.g. mask.long()."
        )
    if mask.dim() not in (2, 3) or mask.numel() == 0:
        raise InvalidParameterError(
            f"{method}: a feature mask is (H, W), shared by every sample, or (N, H, W), one per sample; "
            f"got shape {tuple(mask.shape)}."
        )
    rows = mask.detach().cpu().long().reshape(-1, *mask.shape[-2:])
    labels, counts = [], []
    for row in rows:
        values, inverse = torch.unique(row, sorted=True, return_inverse=True)
        # int32 keeps the labels of a call's superpixels at half the size; passes index them as int64.
        labels.append(inverse.to(torch.int32))
        counts.append(len(values))
    return torch.stack(labels), torch.tensor(counts, dtype=torch.long)


def superpixels(method: str, inputs: Tensor, segments: int, compactness: float) -> tuple[Tensor, Tensor]:
    """SLIC labels 0 .. F-1 (N, H, W) int32 of each image of ``inputs`` (N, C, H, W), and the counts (N,)."""
    slic = _import_slic(method)
    images = inputs.detach().to(device="cpu", dtype=torch.float64).permute(0, 2, 3, 1).numpy()
    labels = []
    for image in images:
        # One channel is a grey image; three are RGB, which SLIC clusters in CIELAB; others as they are.
        grey = image.shape[-1] == 1
        found = slic(image[..., 0] if grey else image, n_segments=segments, compactness=compactness,
                     channel_axis=None if grey else -1)  # fmt: skip
        labels.append(torch.from_numpy(found.astype("int64")))
    return relabel(method, torch.stack(labels))


def _import_slic(method: str) -> Any:
    try:
        from skimage.segmentation import slic
    except ImportError:
        raise InvalidParameterError(
            f"{method}: features='slic' needs scikit-image; pip install scikit-image (or xai-bench[superpixels])."
        ) from None
    return slic
