"""Perturbation methods over a feature mask: feature ablation, Shapley value sampling, KernelSHAP, LIME.

Each method keeps some features of an input (see :mod:`.features`) and sets the others to
``baseline``; one item of its expansion axis is one such perturbed copy, put through the model once
for every target of the sample (a copy's logits give all their scores). What an item adds is
linear in its scores: feature ablation and Shapley sampling add them straight into the maps, and
KernelSHAP and LIME add the sufficient statistics of their weighted regressions into
``Attribution.sums`` (Z^T W Z and Z^T W y per target, and the like), which :meth:`finish` solves. The
engine may therefore split a sample's items between passes anywhere.

Random draws (permutations, coalitions) come from a generator seeded by ``seed``, the method and the
sample's key (a hash of its id), on the CPU: they do not depend on batching, blocks, resume or
device, and torch's global random state is left alone.

Every map holds one value per feature, shared by its pixels and channels. Scores are added up in
float64.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.checks import positive_int
from ..core.errors import InvalidParameterError, PluginError, warn
from .base import Attribution, Attributor, Batch, Cost
from .features import FeatureMasks

#: Eigenvalues below this share of the largest count as zero when a regression's normal equations
#: are solved (a minimum-norm solution where the coalitions do not determine every coefficient).
RANK_RTOL = 1e-10
#: LIME's coordinate descent stops when no coefficient moved by more than this share of the largest.
LASSO_TOL = 1e-12
LASSO_SWEEPS = 10_000
#: KernelSHAP and LIME keep (features × features) sums per sample: at most this many features.
MAX_REGRESSION_FEATURES = 2048


class _FeaturePerturbation(Attributor):
    """What the four methods share: features, baseline, the copies of each pass and their forward."""

    reports_outputs: ClassVar[bool] = True

    def __init__(self, *, features: Any, cell: Any, segments: Any, compactness: Any, baseline: Any) -> None:
        self._features = FeatureMasks(self.id, features, cell, segments, compactness)
        if isinstance(baseline, bool) or not isinstance(baseline, (int, float)) or not math.isfinite(baseline):
            raise InvalidParameterError(
                f"{self.id}: baseline must be a finite number (the value a removed feature takes), got {baseline!r}."
            )
        self.baseline = float(baseline)
        # The class count of the last forward: a pass with nothing to run still owes (n, classes) outputs.
        self._classes = 1

    def params(self) -> dict[str, Any]:
        return {**self._features.params(), **super().params()}

    @abc.abstractmethod
    def items(self, features: int) -> int:
        """Items per sample when the call's samples have at most ``features`` features."""

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        return Cost(items=self.items(self._features.most(input_shape)), backward=False)

    def check_inputs(self, inputs: Tensor) -> None:
        self._features.check(inputs)

    def works_in_blocks(self) -> str | None:
        return self._features.rows_of_one_call()

    def _layout(self, batch: Batch) -> tuple[int, Tensor, Tensor]:
        """The call's largest feature count, and the pass's labels (n, H, W) and counts (n,)."""
        x = batch.inputs
        most = self._features.most(tuple(x.shape))
        labels, counts = self._features.labels(batch.position, tuple(x.shape), x.device)
        return most, labels, counts

    def _scores(
        self, model: nn.Module, batch: Batch, labels: Tensor, present: Tensor, runs: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Put the copies of the pairs ``runs`` (P,) through the model once: the features ``present``
        (P, F) kept, the others set to the baseline. Returns those pairs' indices (R,), their images'
        logits (R, K) (None when no pair runs) and every target's score (R, T) in the accumulator dtype."""
        x = batch.inputs
        rows = runs.nonzero().flatten()
        if len(rows) == 0:  # only items of features these samples do not have
            return rows, None, torch.zeros((0, batch.targets.shape[1]), dtype=accumulator_dtype(x), device=x.device)
        with torch.no_grad():
            out = model(self._copies(batch, labels, present[rows], batch.sample[rows]))
        self._classes = out.shape[1]
        scores = out.gather(1, batch.targets[batch.sample[rows].to(x.device)]).to(accumulator_dtype(x))
        return rows, out, scores

    def _copies(self, batch: Batch, labels: Tensor, present: Tensor, sample: Tensor, dtype: torch.dtype | None = None):
        """Copies (R, C, H, W) of the inputs ``sample`` (R,) with the features ``present`` (R, F) kept and the
        others set to the baseline, in ``dtype`` (the inputs' by default)."""
        x = batch.inputs
        h, w = x.shape[-2:]
        sample = sample.to(x.device)
        # Labels shared by every sample come as a view with stride 0: gather through a view of it, not a copy.
        index = labels[:1].expand(len(sample), h, w) if labels.stride(0) == 0 else labels[sample]
        pixels = present.to(x.device).gather(1, index.reshape(len(sample), h * w)).view(-1, 1, h, w)
        clean = x[sample].to(dtype or x.dtype)
        return torch.where(pixels, clean, torch.tensor(self.baseline, dtype=clean.dtype, device=x.device))

    def _clean_outputs(self, batch: Batch, rows: Tensor, out: Tensor | None) -> Tensor:
        """The logits (n, K) of the inputs whose item 0 (the unperturbed copy) ran here; NaN rows elsewhere."""
        classes = out.shape[1] if out is not None else self._classes
        outputs = batch.inputs.new_full((batch.inputs.shape[0], classes), float("nan"))
        if out is not None:
            clean = (batch.item[rows] == 0).nonzero().flatten()
            outputs[batch.sample[rows[clean]].to(out.device)] = out[clean.to(out.device)].to(outputs.dtype)
        return outputs

    def finish(self, inputs: Tensor, total: Attribution) -> Attribution:
        return Attribution(on_channels(total.maps, inputs))


def on_channels(maps: Tensor, inputs: Tensor) -> Tensor:
    """Maps (N, T, 1, H, W) shared by the channels of ``inputs`` (N, C, H, W): (N, T, C, H, W) in their dtype."""
    return maps.to(inputs.dtype).expand(-1, -1, inputs.shape[1], -1, -1).contiguous()


def on_pixels(per_feature: Tensor, labels: Tensor) -> Tensor:
    """Maps (n, T, 1, H, W) from values (n, F, T) per feature and labels (n, H, W): each pixel its feature's value."""
    n, _, t = per_feature.shape
    h, w = labels.shape[-2:]
    index = labels.reshape(n, h * w, 1).expand(n, h * w, t)
    return per_feature.gather(1, index).permute(0, 2, 1).reshape(n, t, 1, h, w)


class FeatureAblation(_FeaturePerturbation):
    """The score drop when one feature is set to the baseline: ``f(x) - f(x without feature j)``.

    Each pixel of feature j gets that drop, on every channel (captum's ``FeatureAblation`` with a
    ``feature_mask`` and ``baselines``). The expansion axis is the input itself (item 0) followed by
    one copy per feature; items of features a sample does not have do nothing.

    ``features``: ``"grid"`` (cells of ``cell`` pixels, 16 by default), ``"slic"`` (superpixels,
    ``segments`` and ``compactness``) or an integer label mask (H, W) or (N, H, W); see
    :mod:`xai_bench.attributors.features`. ``baseline``: the value of a removed feature's pixels.
    """

    id: ClassVar[str] = "feature_ablation"

    def __init__(
        self,
        *,
        features: Any = "grid",
        cell: Any = None,
        segments: Any = None,
        compactness: Any = None,
        baseline: Any = 0.0,
    ) -> None:
        super().__init__(features=features, cell=cell, segments=segments, compactness=compactness, baseline=baseline)

    def items(self, features: int) -> int:
        return 1 + features

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        most, labels, counts = self._layout(batch)
        item, sample = batch.item, batch.sample
        removed = item - 1  # -1: the input itself
        present = torch.arange(most)[None, :] != removed[:, None]
        runs = removed < counts[sample]
        rows, out, scores = self._scores(model, batch, labels, present, runs)
        n, t = batch.targets.shape
        per_feature = scores.new_zeros((n, most, t))
        s, k = sample[rows].to(scores.device), removed[rows].to(scores.device)
        clean = k < 0
        per_feature.index_add_(0, s[clean], scores[clean].unsqueeze(1).expand(-1, most, -1))
        per_feature.index_put_((s[~clean], k[~clean]), -scores[~clean], accumulate=True)
        return Attribution(on_pixels(per_feature, labels), outputs=self._clean_outputs(batch, rows, out))


class ShapleyValueSampling(_FeaturePerturbation):
    """Shapley values estimated from ``n_samples`` random orders of the features (captum's
    ``ShapleyValueSampling`` with a ``feature_mask``).

    For each order, features are added one by one to the baseline image (every feature removed); a
    feature's marginal contribution is the score after adding it minus the score before. A feature's
    value is the mean of its contributions over the orders; its pixels, on every channel, get it.
    The values add up to ``f(x) - f(baseline)`` for every ``n_samples``.

    The expansion axis is the input (item 0, the full set), the baseline image (item 1, the empty
    set) and, for each order, its prefixes of 1 .. F-1 features. A prefix's score enters two
    contributions (+ for its last feature, − for the next one), so each item adds its own terms.
    Orders are drawn per sample from ``seed`` and the sample's key: results do not depend on
    batching, and :func:`permutations` gives them.

    ``n_samples``: orders per sample (each costs F - 1 forward passes). ``features``, ``cell``,
    ``segments``, ``compactness``, ``baseline``: as for ``feature_ablation``.
    """

    id: ClassVar[str] = "shapley_sampling"

    def __init__(
        self,
        *,
        n_samples: int = 25,
        seed: int = 0,
        features: Any = "grid",
        cell: Any = None,
        segments: Any = None,
        compactness: Any = None,
        baseline: Any = 0.0,
    ) -> None:
        super().__init__(features=features, cell=cell, segments=segments, compactness=compactness, baseline=baseline)
        self.n_samples = positive_int("n_samples", n_samples, owner=self.id)
        self.seed = check_seed(self.id, seed)

    def items(self, features: int) -> int:
        return 2 + self.n_samples * (features - 1)

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        most, labels, counts = self._layout(batch)
        item, sample = batch.item, batch.sample
        present, plus, minus, ends, runs = self._prefixes(batch, counts, most)
        rows, out, scores = self._scores(model, batch, labels, present, runs)
        n, t = batch.targets.shape
        per_feature = scores.new_zeros((n, most, t))
        dev = scores.device
        s, i = sample[rows].to(dev), item[rows].to(dev)
        prefix = i >= 2
        per_feature.index_put_((s[prefix], plus[rows].to(dev)[prefix]), scores[prefix], accumulate=True)
        per_feature.index_put_((s[prefix], minus[rows].to(dev)[prefix]), -scores[prefix], accumulate=True)
        # The full set (item 0) follows every order's last feature; the empty set (item 1) precedes its first.
        ends = ends.to(device=dev, dtype=scores.dtype)
        for which, sign in ((0, 1.0), (1, -1.0)):
            pick = i == which
            terms = ends[s[pick], which][:, :, None] * scores[pick][:, None, :]
            per_feature.index_add_(0, s[pick], sign * terms)
        return Attribution(on_pixels(per_feature, labels), outputs=self._clean_outputs(batch, rows, out))

    def _prefixes(self, batch: Batch, counts: Tensor, most: int) -> tuple[Tensor, ...]:
        """For the pass's pairs (P,): the features each copy keeps (P, F), the feature its prefix adds last
        (P,) and the one after it (P,); how often each feature ends and starts an order, per sample
        (n, 2, F); and which pairs run a forward pass (P,)."""
        keys = sample_keys(self.id, batch)
        item, sample = batch.item, batch.sample
        # Item 2 + p * (most - 1) + (k - 1): the first k features of order p.
        step = (item - 2).clamp_min(0)
        order, size = step // max(most - 1, 1), step % max(most - 1, 1) + 1
        size = torch.where(item == 0, most, torch.where(item == 1, 0, size))
        runs = (item < 2) | (size < counts[sample])
        present = torch.zeros((len(item), most), dtype=torch.bool)
        plus = torch.zeros(len(item), dtype=torch.long)
        minus = torch.zeros(len(item), dtype=torch.long)
        ends = torch.zeros((len(counts), 2, most), dtype=torch.float64)
        for s in sample.unique().tolist():
            pairs = (sample == s).nonzero().flatten()
            f = int(counts[s])
            orders = permutations(self.seed, int(keys[s]), self.n_samples, f)
            rank = orders.argsort(dim=1)  # rank[p, j]: the place of feature j in order p
            o, k = order[pairs].clamp_max(self.n_samples - 1), size[pairs].clamp_max(f)
            present[pairs, :f] = rank[o] < k[:, None]
            inside = (k >= 1) & (k < f)
            plus[pairs[inside]] = orders[o[inside], k[inside] - 1]
            minus[pairs[inside]] = orders[o[inside], k[inside]]
            ends[s, 0, :f] = torch.bincount(orders[:, -1], minlength=f).double()
            ends[s, 1, :f] = torch.bincount(orders[:, 0], minlength=f).double()
        return present, plus, minus, ends, runs

    def finish(self, inputs: Tensor, total: Attribution) -> Attribution:
        return Attribution(on_channels(total.maps / self.n_samples, inputs))


class KernelShap(_FeaturePerturbation):
    """Shapley values as the coefficients of a weighted linear regression on coalitions (Lundberg & Lee,
    2017; captum's ``KernelShap``).

    A coalition z ∈ {0, 1}^F keeps the features with z_j = 1 and sets the others to the baseline.
    Coalition sizes k are drawn from the Shapley kernel, p(k) ∝ (F - 1) / (k (F - k)) for
    k = 1 .. F-1, and a subset of that size uniformly, as captum does; each sampled coalition then
    has weight 1. The coefficients φ minimise ``Σ (f(z) - f(∅) - z·φ)²`` over the sampled coalitions
    subject to ``Σ φ = f(x) - f(∅)``: the empty and the full coalition, whose Shapley-kernel weights
    are infinite, enter as constraints (captum approximates them by weight 1e6 and an intercept),
    so the maps add up to ``f(x) - f(baseline)`` exactly. Where the coalitions do not determine
    every coefficient (fewer coalitions than features), φ is the solution of least norm.

    ``n_samples`` counts forward passes per sample as in captum: the full coalition (the input,
    item 0), the empty one (item 1) and ``n_samples - 2`` drawn ones. Each item adds its coalition's
    terms to the normal equations' sums (Z^T Z, Z^T 1, Z^T y per target, f(∅), f(x)), per sample in
    ``Attribution.sums``; :meth:`finish` solves them. Coalitions are drawn per sample from ``seed``
    and the sample's key (:func:`kernel_coalitions`). At most 2048 features.

    ``features``, ``cell``, ``segments``, ``compactness``, ``baseline``: as for ``feature_ablation``.
    """

    id: ClassVar[str] = "kernel_shap"

    def __init__(
        self,
        *,
        n_samples: int = 25,
        seed: int = 0,
        features: Any = "grid",
        cell: Any = None,
        segments: Any = None,
        compactness: Any = None,
        baseline: Any = 0.0,
    ) -> None:
        super().__init__(features=features, cell=cell, segments=segments, compactness=compactness, baseline=baseline)
        self.n_samples = positive_int("n_samples", n_samples, owner=self.id)
        if self.n_samples < 2:
            raise InvalidParameterError(
                f"{self.id}: n_samples counts the full and the empty coalition and the drawn ones; it must be at "
                f"least 2, got {self.n_samples}."
            )
        self.seed = check_seed(self.id, seed)

    def items(self, features: int) -> int:
        return self.n_samples

    def check_inputs(self, inputs: Tensor) -> None:
        super().check_inputs(inputs)
        check_regression_size(self.id, self._features.most(tuple(inputs.shape)))

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        most, labels, counts = self._layout(batch)
        keys = sample_keys(self.id, batch)
        item, sample = batch.item, batch.sample
        present = torch.zeros((len(item), most), dtype=torch.bool)
        present[item == 0] = True
        for s in sample.unique().tolist():
            f = int(counts[s])
            drawn = (sample == s) & (item >= 2)
            if drawn.any() and f >= 2:
                coalitions = kernel_coalitions(self.seed, int(keys[s]), self.n_samples - 2, f)
                present[drawn.nonzero().flatten(), :f] = coalitions[item[drawn] - 2]
        runs = (item < 2) | (counts[sample] >= 2)
        rows, out, scores = self._scores(model, batch, labels, present, runs)
        n, t = batch.targets.shape
        dev, dtype = scores.device, scores.dtype
        s, i = sample[rows].to(dev), item[rows].to(dev)
        drawn = (i >= 2).nonzero().flatten()
        z = present[rows].to(device=dev, dtype=dtype)[drawn]
        owner = F.one_hot(s[drawn], n).to(dtype).T  # (n, drawn)
        gram = torch.einsum("sr,ri,rj->sij", owner, z, z)
        counted = owner @ z
        moment = torch.einsum("sr,ri,rt->sit", owner, z, scores[drawn])
        empty = scores.new_zeros((n, t)).index_add_(0, s[i == 1], scores[i == 1])
        full = scores.new_zeros((n, t)).index_add_(0, s[i == 0], scores[i == 0])
        sums = torch.cat([gram.flatten(1), counted, moment.flatten(1), empty, full], dim=1)
        return Attribution(
            scores.new_zeros((n, t, 1, 1, 1)),
            outputs=self._clean_outputs(batch, rows, out),
            second=label_maps(batch, labels, t, dtype),
            sums=sums,
        )

    def finish(self, inputs: Tensor, total: Attribution) -> Attribution:
        labels, counts = labels_of(total)
        t = total.maps.shape[1]
        most = sums_features(self.id, total, lambda f: f * f + f + f * t + 2 * t)
        gram, counted, moment, empty, full = _split(total.sums, [(most, most), (most,), (most, t), (t,), (t,)])
        real = (torch.arange(most, device=gram.device)[None, :] < counts[:, None]).to(gram.dtype)  # (n, F)
        size = counts.clamp_min(1).to(gram.dtype)[:, None, None]
        # φ = φ0 + u: φ0 spreads f(x) - f(∅) evenly (the least-norm φ that meets the constraint), u moves
        # along the coalitions' directions that keep Σ φ (the range of P), at least norm.
        phi0 = real[:, :, None] * (full - empty)[:, None, :] / size
        projector = torch.diag_embed(real) - real[:, :, None] * real[:, None, :] / size
        residual = moment - counted[:, :, None] * empty[:, None, :] - gram @ phi0
        reduced = projector @ gram @ projector
        phi = phi0 + torch.linalg.pinv(reduced, hermitian=True, rtol=RANK_RTOL) @ (projector @ residual)
        return Attribution(on_channels(on_pixels(phi, labels), inputs))


class Lime(_FeaturePerturbation):
    """A weighted sparse linear model of the scores on random coalitions of features (Ribeiro et al.,
    2016; captum's ``Lime`` with its defaults).

    Coalitions z ∈ {0, 1}^F keep each feature with probability 1/2 and set the others to the
    baseline. Each is weighted by ``exp(-d² / (2 kernel_width²))``, d the ``distance`` between the
    perturbed image and the input, flattened: ``"cosine"`` (1 - cosine similarity) or ``"euclidean"``.
    The coefficients β of the fit ``f(z) ≈ b + z·β`` minimise, as scikit-learn's ``Lasso(alpha)``
    with sample weights (captum's default interpretable model, ``SkLearnLasso(alpha=0.01)``),

        Σ w (f(z) - b - z·β)² / (2 Σ w) + alpha · |β|₁,

    solved by cyclic coordinate descent on the weighted, centred normal equations until no
    coefficient moves by more than 1e-12 of the largest. ``alpha=0`` is weighted least squares,
    solved directly (least norm where the coalitions do not determine every coefficient). The map
    of a feature's pixels, on every channel, is its coefficient.

    The expansion axis holds ``n_samples`` coalitions; each adds its weighted terms (Σw, Σwz, Σwzzᵀ,
    Σwy, Σwzy per target) to ``Attribution.sums``, which :meth:`finish` solves. Coalitions are drawn
    per sample from ``seed`` and the sample's key (:func:`lime_coalitions`). At most 2048 features.

    ``features``, ``cell``, ``segments``, ``compactness``, ``baseline``: as for ``feature_ablation``.
    """

    id: ClassVar[str] = "lime"
    reports_outputs: ClassVar[bool] = False  # no item is the unperturbed input

    def __init__(
        self,
        *,
        n_samples: int = 25,
        alpha: float = 0.01,
        kernel_width: float = 1.0,
        distance: str = "cosine",
        seed: int = 0,
        features: Any = "grid",
        cell: Any = None,
        segments: Any = None,
        compactness: Any = None,
        baseline: Any = 0.0,
    ) -> None:
        super().__init__(features=features, cell=cell, segments=segments, compactness=compactness, baseline=baseline)
        self.n_samples = positive_int("n_samples", n_samples, owner=self.id)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0 <= alpha < math.inf):
            raise InvalidParameterError(
                f"{self.id}: alpha is the fit's L1 penalty, a finite number >= 0 (0: least squares), got {alpha!r}."
            )
        self.alpha = float(alpha)
        if (
            isinstance(kernel_width, bool)
            or not isinstance(kernel_width, (int, float))
            or not (0 < kernel_width < math.inf)
        ):
            raise InvalidParameterError(f"{self.id}: kernel_width must be a finite number > 0, got {kernel_width!r}.")
        self.kernel_width = float(kernel_width)
        if distance not in DISTANCES:
            raise InvalidParameterError(
                f"{self.id}: distance must be one of {', '.join(map(repr, DISTANCES))}, got {distance!r}."
            )
        self.distance = distance
        self.seed = check_seed(self.id, seed)

    def items(self, features: int) -> int:
        return self.n_samples

    def check_inputs(self, inputs: Tensor) -> None:
        super().check_inputs(inputs)
        check_regression_size(self.id, self._features.most(tuple(inputs.shape)))

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        most, labels, counts = self._layout(batch)
        keys = sample_keys(self.id, batch)
        item, sample = batch.item, batch.sample
        present = torch.zeros((len(item), most), dtype=torch.bool)
        for s in sample.unique().tolist():
            f = int(counts[s])
            pairs = (sample == s).nonzero().flatten()
            present[pairs, :f] = lime_coalitions(self.seed, int(keys[s]), self.n_samples, f)[item[pairs]]
        rows, _, scores = self._scores(model, batch, labels, present, torch.ones(len(item), dtype=torch.bool))
        n, t = batch.targets.shape
        dev, dtype = scores.device, scores.dtype
        s = sample[rows].to(dev)
        z = present[rows].to(device=dev, dtype=dtype)
        weight = self._weights(batch, labels, present[rows], s)
        owner = F.one_hot(s, n).to(dtype).T * weight[None, :]  # (n, R): each row's weight, in its sample's row
        sums = torch.cat(
            [
                owner.sum(1, keepdim=True),
                owner @ z,
                torch.einsum("sr,ri,rj->sij", owner, z, z).flatten(1),
                owner @ scores,
                torch.einsum("sr,ri,rt->sit", owner, z, scores).flatten(1),
            ],
            dim=1,
        )
        return Attribution(scores.new_zeros((n, t, 1, 1, 1)), second=label_maps(batch, labels, t, dtype), sums=sums)

    def _weights(self, batch: Batch, labels: Tensor, present: Tensor, sample: Tensor) -> Tensor:
        """The kernel weight (R,) of each coalition: its image's distance to the input, through the kernel."""
        dtype = accumulator_dtype(batch.inputs)
        clean = batch.inputs[sample].to(dtype)
        image = self._copies(batch, labels, present, sample, dtype)
        if self.distance == "cosine":
            distance = 1 - F.cosine_similarity(clean.flatten(1), image.flatten(1), dim=1)
        else:
            distance = (clean - image).flatten(1).norm(dim=1)
        weight = torch.exp(-(distance**2) / (2 * self.kernel_width**2))
        if len(weight) and not bool((weight > 0).any()):
            # Every coalition weighs nothing: the fit would have no data and give zero maps without a word.
            warn(
                f"lime: every coalition's kernel weight is 0 (distances {float(distance.min()):.3g} to "
                f"{float(distance.max()):.3g} with kernel_width={self.kernel_width}), so its maps are zero; use a "
                "kernel_width near those distances, or distance='cosine'."
            )
        return weight

    def finish(self, inputs: Tensor, total: Attribution) -> Attribution:
        labels, _ = labels_of(total)
        t = total.maps.shape[1]
        most = sums_features(self.id, total, lambda f: 1 + f + f * f + t + f * t)
        weight, wz, wzz, wy, wzy = _split(total.sums, [(1,), (most,), (most, most), (t,), (most, t)])
        weight = torch.where(weight > 0, weight, torch.ones_like(weight))  # samples without pairs: zeros
        mean_z, mean_y = wz / weight, wy / weight
        gram = wzz / weight[:, :, None] - mean_z[:, :, None] * mean_z[:, None, :]
        covariance = wzy / weight[:, :, None] - mean_z[:, :, None] * mean_y[:, None, :]
        if self.alpha == 0:
            beta = torch.linalg.pinv(gram, hermitian=True, rtol=RANK_RTOL) @ covariance
        else:
            beta = lasso(gram, covariance, self.alpha)
        return Attribution(
            on_pixels(beta, labels).to(inputs.dtype).expand(-1, -1, inputs.shape[1], -1, -1).contiguous()
        )


DISTANCES = ("cosine", "euclidean")

#: the classes this module registers as built-ins
PERTURBATION_METHODS: tuple[type[Attributor], ...] = (FeatureAblation, ShapleyValueSampling, KernelShap, Lime)


def check_seed(method: str, seed: Any) -> int:
    """Accept an int seed."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidParameterError(f"{method}: seed must be an int, got {seed!r}.")
    return int(seed)


def check_regression_size(method: str, features: int) -> None:
    """Refuse more features than the per-sample (features × features) sums of a regression can hold."""
    if features > MAX_REGRESSION_FEATURES:
        raise InvalidParameterError(
            f"{method}: {features} features, but its regression keeps (features × features) sums per sample and "
            f"takes at most {MAX_REGRESSION_FEATURES}; use larger grid cells or fewer segments."
        )


def sample_keys(method: str, batch: Batch) -> Tensor:
    """The pass's sample keys (n,), which seed the draws; refuse a batch without them."""
    if batch.key is None:
        raise PluginError(f"{method}: the random draws need each sample's key in the Batch (Batch.key).")
    return batch.key.cpu()


def accumulator_dtype(x: Tensor) -> torch.dtype:
    """float64 for the scores' sums, where the device has it (Apple's MPS has none)."""
    return torch.float32 if x.device.type == "mps" else torch.float64


def _generator(seed: int, key: int, method: str) -> torch.Generator:
    digest = hashlib.blake2b(f"{seed}:{key}:{method}".encode(), digest_size=8, person=b"xai-bench-feat")
    return torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") >> 1)


@functools.lru_cache(maxsize=32)
def permutations(seed: int, key: int, n_samples: int, features: int) -> Tensor:
    """The ``n_samples`` orders (n_samples, features) int64 of ``shapley_sampling`` for the sample with ``key``."""
    generator = _generator(seed, key, ShapleyValueSampling.id)
    return torch.rand((n_samples, features), generator=generator, dtype=torch.float64).argsort(dim=1)


@functools.lru_cache(maxsize=32)
def kernel_coalitions(seed: int, key: int, count: int, features: int) -> Tensor:
    """``count`` coalitions (count, features) bool of ``kernel_shap`` for the sample with ``key``: sizes
    from the Shapley kernel, p(k) ∝ 1 / (k (features - k)), then a uniform subset of each size."""
    if features < 2:
        return torch.zeros((count, features), dtype=torch.bool)
    generator = _generator(seed, key, KernelShap.id)
    k = torch.arange(1, features, dtype=torch.float64)
    sizes = torch.multinomial(1 / (k * (features - k)), count, replacement=True, generator=generator) + 1
    ranks = torch.rand((count, features), generator=generator, dtype=torch.float64).argsort(dim=1).argsort(dim=1)
    return ranks < sizes[:, None]


@functools.lru_cache(maxsize=32)
def lime_coalitions(seed: int, key: int, count: int, features: int) -> Tensor:
    """``count`` coalitions (count, features) bool of ``lime`` for the sample with ``key``: each feature kept
    with probability 1/2."""
    generator = _generator(seed, key, Lime.id)
    return torch.rand((count, features), generator=generator, dtype=torch.float64) < 0.5


def label_maps(batch: Batch, labels: Tensor, t: int, dtype: torch.dtype) -> Tensor:
    """Each sample's labels (n, T, 1, H, W) from the pass that holds its item 0, zeros elsewhere.

    Added up over passes like the maps, they reach :meth:`Attributor.finish` once per sample, which
    needs them to put each feature's coefficient on its pixels (``finish`` sees no sample positions).
    """
    n = batch.inputs.shape[0]
    first = torch.zeros(n, dtype=torch.bool, device=labels.device)
    first[batch.sample[batch.item == 0].to(labels.device)] = True
    values = torch.where(first[:, None, None], labels, 0).to(dtype)
    return values[:, None, None].expand(n, t, 1, *labels.shape[-2:])


def labels_of(total: Attribution) -> tuple[Tensor, Tensor]:
    """The labels (N, H, W) int64 that :func:`label_maps` passed on, and each sample's count (N,)."""
    if total.second is None:
        raise PluginError("the passes' feature labels did not reach finish() (Attribution.second).")
    labels = total.second[:, 0, 0].round().long()
    return labels, labels.flatten(1).amax(1) + 1


def sums_features(method: str, total: Attribution, length: Any) -> int:
    """The feature count F that the sums (N, length(F)) were laid out for."""
    if total.sums is None:
        raise PluginError(f"{method}: the regression's sums did not reach finish() (Attribution.sums).")
    size = total.sums.shape[1]
    for f in range(1, MAX_REGRESSION_FEATURES + 1):
        if length(f) == size:
            return f
    raise PluginError(f"{method}: sums of {size} values per sample fit no feature count.")


def _split(sums: Tensor, shapes: list[tuple[int, ...]]) -> list[Tensor]:
    """The parts (N, *shape) of the flat per-sample ``sums`` (N, L), in order."""
    sizes = [math.prod(shape) for shape in shapes]
    parts = torch.split(sums, sizes, dim=1)
    return [part.reshape(len(sums), *shape) for part, shape in zip(parts, shapes, strict=True)]


def lasso(gram: Tensor, covariance: Tensor, alpha: float) -> Tensor:
    """Coefficients (N, F, T) minimising ``½ βᵀ G β - cᵀ β + alpha |β|₁`` for each sample's centred Gram
    matrix G (N, F, F) and each target's c (N, F, T), by cyclic coordinate descent (scikit-learn's
    ``Lasso`` solves the same problem from the data). A feature without variance gets 0.

    The sweeps run in NumPy, float64, on the CPU: each updates one coefficient at a time, and a small
    NumPy operation costs a fraction of a torch one (on ResNet18's 196 grid features, the fit took a
    tenth of LIME's call in torch)."""
    f = covariance.shape[1]
    if covariance.numel() == 0:
        return torch.zeros_like(covariance)
    grams = gram.detach().cpu().double().numpy()
    gradient = covariance.detach().cpu().double().numpy().copy()  # c - G β
    beta = np.zeros_like(gradient)
    diagonal = np.diagonal(grams, axis1=1, axis2=2)  # (N, F)
    safe = np.where(diagonal > 0, diagonal, 1.0)
    for _ in range(LASSO_SWEEPS):
        moved = 0.0
        for j in range(f):
            g = diagonal[:, j, None]
            rho = gradient[:, j] + g * beta[:, j]
            new = np.where(g > 0, np.sign(rho) * np.maximum(np.abs(rho) - alpha, 0.0) / safe[:, j, None], 0.0)
            step = new - beta[:, j]
            if not step.any():
                continue
            gradient -= grams[:, :, j, None] * step[:, None, :]
            beta[:, j] = new
            moved = max(moved, float(np.abs(step).max()))
        if moved <= LASSO_TOL * max(float(np.abs(beta).max()), np.finfo(np.float64).tiny):
            return torch.from_numpy(beta).to(covariance.device, covariance.dtype)
    warn(f"lime: coordinate descent stopped after {LASSO_SWEEPS} sweeps before it converged.")
    return torch.from_numpy(beta).to(covariance.device, covariance.dtype)
