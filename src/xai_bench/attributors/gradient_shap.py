"""GradientSHAP: expected gradients times (input - reference) over random references and path points."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..core.checks import json_safe, positive_int
from ..core.errors import InvalidParameterError, PluginError
from .arguments import check_baseline, check_baseline_set, reference_set
from .base import UNUSED_IS_ZERO, Attribution, Attributor, Batch, Cost, zero_maps


@dataclass(frozen=True)
class Draw:
    """One random draw of a sample: a reference from the set, a point on the path, input noise (C, H, W)."""

    reference: int
    alpha: float
    noise: Tensor | None


def draw(
    seed: int, key: int, index: int, references: int, stdev: float, shape: tuple[int, ...], dtype: torch.dtype
) -> Draw:
    """Draw ``index`` for the sample with ``key``, from a generator seeded by ``seed``, ``key`` and ``index``
    alone (so a map does not depend on batching, blocks, resume or device), on the CPU."""
    digest = hashlib.blake2b(f"{seed}:{key}:{index}".encode(), digest_size=8, person=b"xai-bench-gshap")
    generator = torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") >> 1)
    draw_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    alpha = float(torch.rand((), generator=generator, dtype=torch.float64))
    reference = int(torch.randint(references, (), generator=generator))
    noise = None
    if stdev > 0:
        noise = (torch.randn(shape, generator=generator, dtype=draw_dtype) * stdev).to(dtype)
    return Draw(reference, alpha, noise)


class GradientShap(Attributor):
    """The mean over ``n_samples`` draws of ∇f(r + α (x̃ - r)) ⊙ (x̃ - r), as captum's ``GradientShap``.

    Each draw picks a reference ``r`` uniformly from ``baselines`` (B, C, H, W) (or takes the one
    ``baseline``), a point ``α`` uniform on [0, 1] and, with ``stdevs`` > 0, Gaussian noise added to
    the input (x̃ = x + noise). In expectation this is SHAP's value for a model that is linear
    between the input and the references. Draws are seeded per sample (``seed``, the sample's key,
    the draw's index), never from the global random state. The expansion axis holds the draws.
    """

    id: ClassVar[str] = "gradient_shap"
    needs_baseline: ClassVar[bool] = True
    multiplies_by_inputs: ClassVar[bool] = True

    def __init__(
        self,
        *,
        n_samples: int = 50,
        stdevs: float = 0.0,
        baseline: Any = 0.0,
        baselines: Tensor | None = None,
        seed: int = 0,
    ) -> None:
        self.n_samples = positive_int("n_samples", n_samples, owner=self.id)
        if isinstance(stdevs, bool) or not isinstance(stdevs, (int, float)) or not math.isfinite(stdevs) or stdevs < 0:
            raise InvalidParameterError(f"gradient_shap: stdevs must be a finite number >= 0, got {stdevs!r}.")
        self.stdevs = float(stdevs)
        self.baseline = check_baseline(self.id, baseline)
        self.baselines = check_baseline_set(self.id, baselines, baseline)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidParameterError(f"gradient_shap: seed must be an int, got {seed!r}.")
        self.seed = seed

    def params(self) -> dict[str, Any]:
        return {
            "n_samples": self.n_samples,
            "stdevs": self.stdevs,
            "baseline": json_safe(self.baseline),
            "baselines": json_safe(self.baselines),
            "seed": self.seed,
        }

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        return Cost(items=self.n_samples)

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        if batch.key is None:
            raise PluginError("gradient_shap needs each sample's key in the Batch to seed its draws.")
        x, targets, mask = batch.inputs, batch.targets, batch.mask
        refs = reference_set(self.id, self.baseline, self.baselines, x)  # (B, n, C, H, W)
        sample = batch.sample.to(x.device)
        draws = [
            draw(self.seed, int(batch.key[s]), d, refs.shape[0], self.stdevs, tuple(x.shape[1:]), x.dtype)
            for s, d in zip(batch.sample.tolist(), batch.item.tolist(), strict=True)
        ]
        ref = refs[torch.tensor([d.reference for d in draws], device=x.device), sample]
        noisy = x[sample]
        if self.stdevs > 0:
            noisy = noisy + torch.stack([d.noise for d in draws]).to(x.device)
        alpha = torch.tensor([d.alpha for d in draws], dtype=x.dtype, device=x.device).view(-1, *[1] * (x.dim() - 1))
        diff = noisy - ref
        total = zero_maps(x, targets.shape[1])
        wanted = mask[sample]  # (pairs, T)
        columns = [c for c in range(targets.shape[1]) if wanted[:, c].any()]
        with torch.enable_grad():
            points = (ref + alpha * diff).requires_grad_(True)
            out = model(points)
            # The targets share the pass's forward: one backward each.
            for i, c in enumerate(columns):
                rows = wanted[:, c].nonzero().flatten()
                score = out[rows, targets[sample[rows], c]].sum()
                (grad,) = torch.autograd.grad(score, points, retain_graph=i < len(columns) - 1, **UNUSED_IS_ZERO)
                total[:, c].index_add_(0, sample[rows], grad[rows] * diff[rows] / self.n_samples)
        return Attribution(total)
