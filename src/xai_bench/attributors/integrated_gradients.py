"""Integrated gradients (Sundararajan et al., 2017), with captum's quadrature rules."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..core.checks import positive_int
from .arguments import (
    baseline_like,
    check_baseline,
    check_baseline_set,
    check_sample_baselines,
    check_sample_baselines_fit,
    reference_set,
)
from .base import UNUSED_IS_ZERO, Attribution, Attributor, Batch, Cost, Prepared, zero_maps
from .layer import (
    AtLayer,
    LayerSpec,
    check_quadrature,
    layer_output,
    layer_pass,
    path_ends,
    path_params,
    quadrature,
    reference_activations,
)


class IntegratedGradients(AtLayer, Attributor):
    """Path integral of gradients from a baseline to the input; ``n_steps`` points on the path.

    ``method`` is captum's quadrature rule; every rule's weights add up to one (captum's
    ``riemann_trapezoid`` weights add up to (n-1)/n: here they are the trapezoid rule's).

    The expansion axis holds the ``n_steps`` path points and then the input and the baseline
    themselves, whose forward passes give the completeness delta and the model's scores. With
    ``baselines`` (B, C, H, W), a set of reference images, the maps are the mean of the B
    single-baseline maps and the axis holds B such paths. ``sample_baselines`` (N, C, H, W) gives
    each input sample its own reference instead (explain() only: run() works in blocks).

    With ``layer`` (a module name), the integral runs in the layer's activation space, from its
    activation for the baseline to its activation for the input, while the rest of the network
    sees the input, as captum's ``LayerIntegratedGradients`` does: maps have the layer's output
    shape per sample and sum to f(x) - f(baseline) up to the quadrature's error where every path
    from the input to the output runs through the layer (``<method>_delta`` says by how much). Each
    pass also runs its samples and their references up to the layer, for the path's two ends.
    """

    id: ClassVar[str] = "integrated_gradients"
    needs_baseline: ClassVar[bool] = True
    multiplies_by_inputs: ClassVar[bool] = True
    has_delta: ClassVar[bool] = True
    reports_outputs: ClassVar[bool] = True

    def __init__(
        self,
        *,
        n_steps: int = 50,
        method: str = "gausslegendre",
        baseline: Any = 0.0,
        baselines: Tensor | None = None,
        sample_baselines: Tensor | None = None,
        layer: str | None = None,
    ) -> None:
        self.n_steps = positive_int("n_steps", n_steps, owner=self.id)
        self.method = check_quadrature(self.id, method, self.n_steps)
        self.baseline = check_baseline(self.id, baseline)
        self.baselines = check_baseline_set(self.id, baselines, baseline)
        self.sample_baselines = check_sample_baselines(self.id, sample_baselines, baseline, baselines)
        self._init_layer(layer)
        # With more than one reference, each pair's contribution carries its own (x - reference); at a layer,
        # its own (a(x) - a(reference)), known only in the pass.
        self._difference_in_pass = self.baselines is not None or self.sample_baselines is not None or layer is not None
        step_sizes, alphas = quadrature(self.method, self.n_steps)
        # Items n_steps and n_steps + 1 are the input (alpha 1) and the baseline (alpha 0), weight 0.
        self._alpha = torch.tensor([*alphas, 1.0, 0.0], dtype=torch.float64)
        self._weight = torch.tensor([*step_sizes, 0.0, 0.0], dtype=torch.float64)

    def params(self) -> dict[str, Any]:
        return self._layer_params(path_params(self))

    def prepare(self, model: nn.Module, example: Tensor) -> Prepared:
        return self._at_layer(model, example, Prepared(model))

    def check_inputs(self, inputs: Tensor) -> None:
        check_sample_baselines_fit(self.id, self.sample_baselines, inputs)

    def works_in_blocks(self) -> str | None:
        return None if self.sample_baselines is None else "sample_baselines are rows of one explain() call"

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        paths = 1 if self.baselines is None else len(self.baselines)
        return Cost(items=paths * (self.n_steps + 2))

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        x, targets, mask = batch.inputs, batch.targets, batch.mask
        n, t = targets.shape
        refs = reference_set(
            self.id, self.baseline, self.baselines, x, sample_baselines=self.sample_baselines, position=batch.position
        )  # (B, n, C, H, W)
        paths = refs.shape[0]
        # Item i is point i % (n_steps + 2) of the path from reference i // (n_steps + 2).
        path_of = batch.item.to(x.device) // (self.n_steps + 2)
        item = batch.item.to(x.device) % (self.n_steps + 2)
        sample = batch.sample.to(x.device)
        ref = refs[path_of, sample]  # one row per pair of the pass
        diff = x[sample] - ref
        alpha = self._alpha.to(device=x.device, dtype=x.dtype)[item]
        weight = self._weight.to(device=x.device, dtype=x.dtype)[item]
        if self.baselines is not None:
            # A set: each path's share of the mean, times its own (x - reference), now.
            weight = weight / paths
        shape = (-1,) + (1,) * (x.dim() - 1)
        where, spec = self._site(model, x) if self.layer is not None else (None, None)
        total = zero_maps(x, t, spec.shape if spec is not None else None)
        delta = x.new_zeros((n, t))
        outputs = None
        path = (item < self.n_steps).nonzero().flatten()
        if len(path):
            p, s = path, sample[path]
            if spec is None:
                points = ref[p] + alpha[p].view(shape) * diff[p]
                out = self._along_input(model, points, s, weight[p], targets, mask, diff[p], total)
            else:
                start = reference_activations(model, where, spec, refs, path_of[p], s, self.id)
                out = self._along_layer(model, where, spec, x, start, s, alpha[p], weight[p], targets, mask, total)
            outputs = x.new_full((n, out.shape[1]), float("nan"))  # the inputs' logits come from the ends
        # The input once (with the first path), every reference.
        ends = ((item == self.n_steps) & (path_of == 0) | (item == self.n_steps + 1)).nonzero().flatten()
        if len(ends):
            is_input = item[ends] == self.n_steps
            images = ref[ends] + alpha[ends].view(shape) * diff[ends]
            outputs = path_ends(model, images, is_input, sample[ends], targets, paths, delta, n)
        return Attribution(total, delta=delta, outputs=outputs)

    def _along_input(
        self, model: nn.Module, points: Tensor, s: Tensor, w: Tensor, targets: Tensor, mask: Tensor, diff: Tensor,
        total: Tensor,
    ) -> Tensor:  # fmt: skip
        """Add the weighted gradients at the path ``points`` (P, C, H, W) of samples ``s`` (P,) to ``total``
        (times their (x - reference) ``diff`` where that is known only here); return the points' logits."""
        shape = (-1,) + (1,) * (points.dim() - 1)
        wanted = mask[s]  # (pairs, T): which targets each path point serves
        with torch.enable_grad():
            points = points.requires_grad_(True)
            out = model(points)
            columns = [c for c in range(wanted.shape[1]) if wanted[:, c].any()]
            # The targets share the pass's forward: one backward each.
            for i, c in enumerate(columns):
                rows = wanted[:, c].nonzero().flatten()
                score = out[rows, targets[s[rows], c]].sum()
                (grad,) = torch.autograd.grad(score, points, retain_graph=i < len(columns) - 1, **UNUSED_IS_ZERO)
                contribution = grad[rows] * w[rows].view(shape)
                if self._difference_in_pass:
                    contribution = contribution * diff[rows]
                total[:, c].index_add_(0, s[rows], contribution)
        return out

    def _along_layer(
        self, model: nn.Module, where: nn.Module, spec: LayerSpec, x: Tensor, start: Tensor, s: Tensor, alpha: Tensor,
        w: Tensor, targets: Tensor, mask: Tensor, total: Tensor,
    ) -> Tensor:  # fmt: skip
        """Add the weighted gradients at points of the path in the layer's activation space, from ``start`` (P,
        *shape) (the references' activations) to the activations of the inputs ``x[s]``, times their change, to
        ``total``; the rest of the network sees the inputs. Return the points' logits."""
        change = layer_output(model, where, spec, x, self.id)[s] - start
        shape = (-1,) + (1,) * len(spec.shape)
        run = layer_pass(model, where, spec, x[s], self.id, activation=start + alpha.view(shape) * change)
        for c, rows, grad in run.gradients(targets[s], mask[s]):
            total[:, c].index_add_(0, s[rows], grad * w[rows].view(shape) * change[rows])
        return run.outputs

    def finish(self, inputs: Tensor, total: Attribution) -> Attribution:
        if not self._difference_in_pass:
            maps = total.maps * (inputs - baseline_like(self.id, self.baseline, inputs)).unsqueeze(1)
        else:  # each pair's contributions carry their own difference already
            maps = total.maps
        return Attribution(maps, delta=maps.flatten(2).sum(2) + total.delta)
