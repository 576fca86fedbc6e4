"""Deletion and insertion (Petsiuk et al., 2018; Samek et al., 2017's region perturbation): the model's
score as patches are removed from the input, or put back, in the order the map ranks them."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.checks import positive_int
from ..core.errors import InvalidParameterError
from .base import Context, Curve, Metric, Pairs, Score

REPLACEMENTS = ("value", "min", "mean", "blur")
OUTPUTS = ("auto", "softmax", "sigmoid", "logit")
ORDERS = ("morf", "lerf")


def scores_of(logits: Tensor, classes: Tensor, output: str, task: str) -> Tensor:
    """The score of ``classes`` in ``logits`` (k, K) as ``output`` says ("auto": sigmoid for multilabel models)."""
    kind = ("sigmoid" if task == "multilabel" else "softmax") if output == "auto" else output
    picked = logits.gather(1, classes[:, None])[:, 0]
    if kind == "softmax":
        return (picked - torch.logsumexp(logits, 1)).exp()
    return torch.sigmoid(picked) if kind == "sigmoid" else picked


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    grid = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(grid**2) / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    # Mirror at the edges; images smaller than the kernel repeat their edge pixels instead.
    mode = "reflect" if radius < min(x.shape[-2:]) else "replicate"
    padded = F.pad(x, (radius, radius, radius, radius), mode=mode)
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class _Perturbation(Metric):
    needs_model: ClassVar[bool] = True
    needs_replacement: ClassVar[bool] = True
    _inserting: ClassVar[bool] = False

    def __init__(
        self,
        *,
        patch: int = 16,
        steps: int = 20,
        replacement: str = "value",
        value: float = 0.0,
        sigma: float = 5.0,
        order: str = "morf",
        output: str = "auto",
        abs: bool = False,
    ) -> None:
        self.patch = positive_int("patch", patch, owner=self.id)
        self.steps = positive_int("steps", steps, owner=self.id)
        for name, given, allowed in (("replacement", replacement, REPLACEMENTS), ("order", order, ORDERS),
                                     ("output", output, OUTPUTS)):  # fmt: skip
            if given not in allowed:
                raise InvalidParameterError(
                    f"{self.id}: {name} must be one of {', '.join(map(repr, allowed))}, got {given!r}."
                )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidParameterError(f"{self.id}: value must be a finite number, got {value!r}.")
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
            raise InvalidParameterError(f"{self.id}: sigma (of the blur, in pixels) must be > 0, got {sigma!r}.")
        if not isinstance(abs, bool):
            raise InvalidParameterError(f"{self.id}: abs must be True or False, got {abs!r}.")
        self.replacement, self.value, self.sigma = replacement, float(value), float(sigma)
        self.order, self.output, self.abs = order, output, abs

    def params(self) -> dict[str, Any]:
        return {
            "patch": self.patch, "steps": self.steps, "replacement": self.replacement, "value": self.value,
            "sigma": self.sigma, "order": self.order, "output": self.output, "abs": self.abs,
        }  # fmt: skip

    def _replacement(self, x: Tensor) -> Tensor:
        """What removed pixels become, per image: (N, C, H, W)."""
        if self.replacement == "value":
            return torch.full_like(x, self.value)
        if self.replacement == "min":  # Quantus's "black": the image's smallest value
            return x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x)
        if self.replacement == "mean":
            return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        return _gaussian_blur(x, self.sigma)

    def ranks(self, maps: Tensor) -> tuple[Tensor, Tensor]:
        """(rank of each patch per pair (P, K), patch of each pixel (H, W)); rank 0 goes first."""
        p, h, w = maps.shape
        rows, cols = math.ceil(h / self.patch), math.ceil(w / self.patch)
        ys = torch.arange(h, device=maps.device) // self.patch
        xs = torch.arange(w, device=maps.device) // self.patch
        patch_of = ys[:, None] * cols + xs[None, :]
        sums = maps.new_zeros((p, rows * cols)).index_add_(1, patch_of.flatten(), maps.flatten(1))
        order = torch.argsort(sums, dim=1, descending=self.order == "morf", stable=True)
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(rows * cols, device=maps.device).expand_as(order).contiguous()
        )
        return rank, patch_of

    def score(self, pairs: Pairs, context: Context) -> Score:
        x = context.inputs
        assert x is not None
        maps = pairs.reduced().to(x.device)
        if self.abs:
            maps = maps.abs()
        rank, patch_of = self.ranks(maps)
        patches = rank.shape[1]
        points = self.steps + 1
        removed = torch.round(torch.arange(points, dtype=torch.float64) * patches / self.steps).to(torch.long)
        removed = removed.to(x.device)
        fill = self._replacement(x)
        sample = pairs.sample.to(x.device)
        target = pairs.target.to(x.device)

        def images(first: int, count: int) -> Tensor:
            item = torch.arange(first, first + count, device=x.device)
            pair, step = item // points, item % points
            changed = (rank[pair] < removed[step][:, None]).gather(1, patch_of.flatten().expand(count, -1))
            changed = changed.view(count, 1, *patch_of.shape)
            rows = sample[pair]
            if self._inserting:
                return torch.where(changed, x[rows], fill[rows])
            return torch.where(changed, fill[rows], x[rows])

        logits = context.forward(len(sample) * points, images, self.id)
        classes = target.repeat_interleave(points)
        curve = scores_of(logits, classes, self.output, context.task).view(-1, points).to(torch.float64)
        auc = (curve[:, :-1] + curve[:, 1:]).sum(1) / (2 * self.steps)
        fractions = [s / self.steps for s in range(points)]
        return Score(auc, {"curve": Curve(curve, f"{self.id}_fraction", fractions)})


class Deletion(_Perturbation):
    """Area under the target's score as patches are replaced, most relevant first (lower is better).

    ``patch`` pixels square (partial at the right and bottom edges), ranked by the channel-summed
    map; ``steps`` + 1 points, at fractions 0, 1/steps, ..., 1 of the patches removed. Removed
    pixels become ``value`` (``replacement="value"``), the image's smallest value (``"min"``, Quantus's
    ``"black"``), its per-channel mean (``"mean"``) or a Gaussian blur of it (``"blur"``, ``sigma``).
    ``order="lerf"`` removes the least relevant first (then higher is better). Scores are
    probabilities (softmax, or sigmoid for multilabel models) unless ``output="logit"``. The
    curve is stored beside the area, as ``<method>_deletion_curve``.
    """

    id: ClassVar[str] = "deletion"
    higher_is_better: ClassVar[bool] = False


class Insertion(_Perturbation):
    """Area under the target's score as patches of the input are put back into the replaced image,
    most relevant first (higher is better); parameters as :class:`Deletion` (RISE uses ``"blur"``)."""

    id: ClassVar[str] = "insertion"
    _inserting: ClassVar[bool] = True
