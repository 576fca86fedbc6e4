"""Attribution to a layer's activations: internal influence, layer conductance, and the shared layer hooks.

**The layer.** ``layer=`` names a module of the model (``model.named_modules()``; with ``output="sigmoid"``
or ``"softmax"`` the model runs under a probability head and keeps its names). Before any pass a probe
forward pass (the first input, twice) checks that the module runs exactly once and returns one tensor
with the batch first, and records its output's shape per sample: the shape of the maps. A name the model
lacks is refused with close matches; a module called more than once in a forward pass (one ReLU module
at two call sites) is refused by name, since its activation is not one tensor. The probe also finds
whether every path from the input to the output runs through the layer (a *cut*); only then can maps at
the layer sum to ``f(x) - f(baseline)``: a skip connection around it carries the rest.

**Activations and gradients.** A forward hook copies the layer's output as the layer returned it and hands
the rest of the network a copy of that, which autograd treats as a leaf: an in-place operation after the
layer (torchvision's ``ReLU(inplace=True)`` after each batch norm) rewrites the copy, never the activation
the gradients are taken against. The layers before it run without autograd, and each target column
costs one ``torch.autograd.grad`` through the layers after it. Passes that need only the activations end
at the layer.

**Rewritten views.** Rule-based methods (DeepLIFT, guided backprop, deconvolution) run on a view traced by
torch.fx, in which a layer that holds other modules is no module at all (its calls are inlined); there
the layer's output is the one node of its calls that the rest of the graph uses, and a tap module is put
after it for the hooks.

**Path methods.** The quadrature rules of integrated gradients (captum's, with the trapezoid's weights
adding up to one) serve internal influence and layer conductance too.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import Tensor, fx, nn

from ..core.cache import cache_of
from ..core.checks import json_safe, positive_int
from ..core.errors import InvalidParameterError, PluginError, did_you_mean
from ..core.provenance import module_state
from .arguments import (
    check_baseline,
    check_baseline_set,
    check_sample_baselines,
    check_sample_baselines_fit,
    reference_set,
)
from .base import UNUSED_IS_ZERO, Attribution, Attributor, Batch, Cost, Prepared, zero_maps

#: captum's quadrature rules, by the names its ``method=`` takes
QUADRATURE_RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")
#: the name of the module put after the layer's output in a rewritten view
TAP = "xai_bench_layer_tap"
#: heads ``output=`` puts after the user's model, which keep the model's names under a prefix
_HEADS = (nn.Sigmoid, nn.Softmax)


def quadrature(method: str, n: int) -> tuple[list[float], list[float]]:
    """The rule's weights and its ``n`` points on [0, 1], in float64.

    Gauss-Legendre's come from captum (numpy's float64). captum builds the Riemann points with
    float32 ``torch.linspace``, 5e-8 off in a float64 run, so they are made here in float64, at the
    same places; and captum weighs the trapezoid's n points, 1/(n-1) apart, by 1/n, so its weights
    add up to (n-1)/n and even a linear model misses completeness by 1/n: here they are the
    trapezoid rule's, 1/(n-1) (halved at the ends).
    """
    if method == "gausslegendre":
        step_sizes, alphas = (f(n) for f in approximation_parameters(method))
        return list(step_sizes), list(alphas)
    first, last = {
        "riemann_trapezoid": (0.0, 1.0),
        "riemann_left": (0.0, 1 - 1 / n),
        "riemann_middle": (1 / (2 * n), 1 - 1 / (2 * n)),
        "riemann_right": (1 / n, 1.0),
    }[method]
    alphas = torch.linspace(first, last, n, dtype=torch.float64).tolist()
    if method != "riemann_trapezoid":
        return [1 / n] * n, alphas
    step_sizes = [1 / (n - 1)] * n
    step_sizes[0] = step_sizes[-1] = 0.5 / (n - 1)
    return step_sizes, alphas


def path_params(method: Any) -> dict[str, Any]:
    """The parameters of a method integrated along the path from its references (its quadrature and
    references), JSON-safe, for provenance."""
    return {
        "n_steps": method.n_steps,
        "method": method.method,
        "baseline": json_safe(method.baseline),
        "baselines": json_safe(method.baselines),
        "sample_baselines": json_safe(method.sample_baselines),
    }


def check_quadrature(owner: str, method: Any, n_steps: int, *, points: int | None = None) -> str:
    """``method`` if it names a quadrature rule that works with ``points`` (default ``n_steps``) points, else raise."""
    if method not in QUADRATURE_RULES:
        raise InvalidParameterError(
            f"{owner}: method must be one of {', '.join(map(repr, QUADRATURE_RULES))}, got {method!r}."
        )
    if method.startswith("riemann") and (points if points is not None else n_steps) < 2:
        raise InvalidParameterError(
            f"{owner}: method {method!r} needs n_steps >= 2, got {n_steps}; "
            "use more steps, or method='gausslegendre', which works from one."
        )
    return method


def check_layer(method: str, layer: Any, *, required: bool = False) -> str | None:
    """``layer`` if it can name a module (a non-empty string), or None where attribution to the input is allowed."""
    if layer is None and not required:
        return None
    if not isinstance(layer, str) or not layer:
        other = "" if required else ", or None to attribute to the input"
        raise InvalidParameterError(
            f"{method}: layer must be a module name such as 'layer4' (see model.named_modules()){other}; got {layer!r}."
        )
    return layer


@dataclass(frozen=True)
class LayerSpec:
    """The layer maps attribute to: its name as the user gives it, its path in the model the passes run on,
    its output's shape per sample, and whether every path from the input to the output runs through it."""

    name: str
    path: str
    shape: tuple[int, ...]
    cut: bool

    def describe(self) -> str:
        around = "" if self.cut else "; the input also reaches the output around it"
        return f"layer {self.name!r} (output {' x '.join(map(str, self.shape))} per sample{around})"


def layer_paths(model: nn.Module) -> tuple[dict[str, str], str]:
    """Map each name a user may give to a module's path in ``model``, and the prefix of the wrapped model.

    Under a probability head (``nn.Sequential(model, nn.Sigmoid())``, or what ``output=`` runs), the
    wrapped model's own names also work; a path of ``model`` itself wins where the two collide.
    """
    paths = {name: name for name, _ in model.named_modules() if name}
    children = list(model.named_children())
    if len(children) != 2 or not isinstance(children[1][1], _HEADS):
        return paths, ""
    prefix = children[0][0] + "."
    for path in list(paths):
        if path.startswith(prefix):
            paths.setdefault(path[len(prefix) :], path)
    return paths, prefix


def find_layer(model: nn.Module, example: Tensor, layer: str, method: str) -> LayerSpec:
    """The layer ``layer`` names in ``model``, checked by a probe forward pass of ``example[:1]`` (twice, as a
    batch of two); remembered per model state, input shape, dtype and device."""
    key = ("layer", layer, module_state(model), tuple(example.shape[1:]), example.dtype, str(example.device))
    known = cache_of(model, "probes")
    if key not in known:
        known[key] = _probe(model, example[:1], layer, method)
    return known[key]


def _probe(model: nn.Module, example: Tensor, layer: str, method: str) -> LayerSpec:
    paths, prefix = layer_paths(model)
    if layer not in paths:
        shown = [p[len(prefix) :] if prefix and p.startswith(prefix) else p for p in paths.values()]
        raise InvalidParameterError(f"{method}: the model has no layer {layer!r}.{did_you_mean(layer, shown)}")
    path = paths[layer]
    seen: list[Any] = []

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        seen.append(tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__)
        # The rest of the network gets a constant: if the output still depends on the input, a path goes around.
        return output.detach().clone() if isinstance(output, Tensor) else None

    leaf = torch.cat([example, example]).detach().requires_grad_(True)
    handle = model.get_submodule(path).register_forward_hook(hook)
    try:
        with torch.enable_grad():
            out = model(leaf.clone())  # a model that changes its input in place must not touch the leaf
    finally:
        handle.remove()
    refusal = _calls_refusal(method, layer, len(seen)) or _output_refusal(method, layer, seen[0], batch=2)
    if refusal:
        raise InvalidParameterError(refusal)
    around = isinstance(out, Tensor) and out.requires_grad
    if around:
        (grad,) = torch.autograd.grad(out.sum(), leaf, allow_unused=True)
        around = grad is not None
    return LayerSpec(layer, path, seen[0][1:], cut=not around)


def _calls_refusal(method: str, name: str, calls: int) -> str | None:
    """Why the layer ``name`` cannot be attributed to, run ``calls`` times in one forward pass; None if it can."""
    if calls == 0:
        return f"{method}: layer {name!r} does not run in the model's forward pass; name one that does."
    if calls > 1:
        return (
            f"{method}: layer {name!r} runs {calls} times in one forward pass, so its activation is not one "
            "tensor; name a module that runs once (give each call site a module of its own)."
        )
    return None


def _output_refusal(method: str, name: str, got: Any, *, batch: int) -> str | None:
    """Why the layer ``name`` cannot be attributed to, returning ``got`` (a shape, or a type's name) for a batch
    of ``batch``; None if it can."""
    if not isinstance(got, tuple):
        return f"{method}: layer {name!r} returns a {got}, not one tensor; name a module whose output is a tensor."
    if len(got) < 2 or got[0] != batch:
        return (
            f"{method}: layer {name!r} returns a tensor of shape {got} for a batch of {batch}; its output must have "
            "the batch first and at least one more dimension. Name another module."
        )
    return None


class LayerTap(nn.Module):
    """Passes a layer's output on unchanged: in a rewritten view, the hooks of a pass attach here."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, x: Tensor) -> Tensor:
        return x


def tapped_view(view: fx.GraphModule, spec: LayerSpec, method: str) -> fx.GraphModule:
    """``view`` (a rewritten model traced by torch.fx) with a :class:`LayerTap` after the layer's output;
    remembered per view and layer."""
    known = cache_of(view, "rewrites")
    key = ("layer tap", spec)
    if key not in known:
        graph = copy.deepcopy(view.graph)
        node = _output_node(graph, spec, method)
        tapped = fx.GraphModule(view, graph, class_name=f"{type(view).__name__}Tapped")
        tapped.add_submodule(TAP, LayerTap(spec))
        with graph.inserting_after(node):
            tap = graph.call_module(TAP, (node,))
        node.replace_all_uses_with(tap, delete_user_cb=lambda user: user is not tap)
        graph.lint()
        tapped.recompile()
        known[key] = tapped
    return known[key]


def _output_node(graph: fx.Graph, spec: LayerSpec, method: str) -> fx.Node:
    """The node of the layer's calls that the rest of the graph uses: its output.

    torch.fx records, per node, the modules whose calls made it (``nn_module_stack``); a view traced
    through a wrapper that keeps the root's hooks (``model.``) has the paths under a prefix.
    """
    for path in (spec.path, f"model.{spec.path}"):
        inside = [n for n in graph.nodes if any(q == path for q, _ in n.meta.get("nn_module_stack", {}).values())]
        if inside:
            break
    members = set(inside)
    leaving = [n for n in inside if any(user not in members for user in n.users)]
    if len(leaving) != 1:
        raise InvalidParameterError(
            f"{method}: the traced model has {len(leaving)} outputs of layer {spec.name!r} (one tensor expected); "
            "name a module whose output is computed by its own operations."
        )
    return leaving[0]


class _Reached(Exception):
    """Ends a forward pass at the layer: what comes after it is not needed."""


@contextlib.contextmanager
def _hooked(
    module: nn.Module, spec: LayerSpec, batch: int, method: str, on_output: Callable[[Tensor], Tensor]
) -> Iterator[None]:
    """Hook ``on_output`` (which returns the tensor the rest of the network gets) on the layer for one forward
    pass of ``batch`` images; refuse a second call, and an output unlike the probe's."""
    calls = [0]

    def hook(hooked: nn.Module, args: Any, output: Any) -> Tensor:
        calls[0] += 1
        got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        refusal = _calls_refusal(method, spec.name, calls[0]) or _output_refusal(method, spec.name, got, batch=batch)
        if refusal is None and got[1:] != spec.shape:
            refusal = f"{method}: layer {spec.name!r} returned {got}; the probe found {spec.shape} per sample."
        if refusal:
            raise InvalidParameterError(refusal)
        return on_output(output)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def layer_output(model: nn.Module, where: nn.Module, spec: LayerSpec, images: Tensor, method: str) -> Tensor:
    """The layer's output (P, *shape) for ``images`` (P, C, H, W), without autograd; the pass ends at the layer."""
    found: dict[str, Tensor] = {}

    def keep(output: Tensor) -> Tensor:
        found["a"] = output.detach().clone()  # a later in-place operation would rewrite the output itself
        raise _Reached

    with contextlib.suppress(_Reached), _hooked(where, spec, len(images), method, keep), torch.no_grad():
        model(images)
    if "a" not in found:
        raise InvalidParameterError(f"{method}: layer {spec.name!r} did not run in the forward pass.")
    return found["a"]


@dataclass(frozen=True)
class LayerPass:
    """One forward pass with the layer's output as a leaf: ``activations`` (P, *shape), ``outputs`` (P, K)."""

    activations: Tensor
    outputs: Tensor

    def gradients(self, pick: Tensor, wanted: Tensor) -> Iterator[tuple[int, Tensor, Tensor]]:
        """(column, rows, gradient (rows, *shape)) of the scores of classes ``pick`` (P, T) where ``wanted``
        (P, T), with respect to the activations: one backward per target column, sharing the forward."""
        columns = [c for c in range(wanted.shape[1]) if wanted[:, c].any()]
        for i, c in enumerate(columns):
            rows = wanted[:, c].nonzero().flatten()
            score = self.outputs[rows, pick[rows, c]].sum()
            yield c, rows, gradient_or_zero(score, self.activations, retain_graph=i < len(columns) - 1)[rows]


def gradient_or_zero(score: Tensor, against: Tensor, *, retain_graph: bool) -> Tensor:
    """The gradient of ``score`` with respect to ``against``; zero where the score does not depend on it."""
    if not score.requires_grad:  # nothing after the layer that the score depends on has autograd
        return torch.zeros_like(against)
    (grad,) = torch.autograd.grad(score, against, retain_graph=retain_graph, **UNUSED_IS_ZERO)
    return grad


def layer_pass(
    model: nn.Module,
    where: nn.Module,
    spec: LayerSpec,
    images: Tensor,
    method: str,
    *,
    activation: Tensor | None = None,
) -> LayerPass:
    """Run ``images`` (P, C, H, W) through ``model`` with the layer's output, or ``activation`` (P, *shape) put
    in its place, as a leaf of autograd; the layers before it run without autograd."""
    leaf: dict[str, Tensor] = {}

    def substitute(output: Tensor) -> Tensor:
        value = output if activation is None else activation
        if value.shape != output.shape:
            raise PluginError(f"{method}: an activation of shape {tuple(value.shape)} for {tuple(output.shape)}.")
        leaf["a"] = value.detach().clone().requires_grad_(True)
        # The layers after it build the graph the gradients need (the no_grad below ends with the pass).
        torch.set_grad_enabled(True)
        return leaf["a"].clone()  # an in-place operation after the layer must not touch the leaf

    with _hooked(where, spec, len(images), method, substitute), torch.no_grad():
        out = model(images)
    if "a" not in leaf:
        raise InvalidParameterError(f"{method}: layer {spec.name!r} did not run in the forward pass.")
    return LayerPass(leaf["a"], out)


def layer_gradients(
    model: nn.Module, where: nn.Module, spec: LayerSpec, batch: Batch, method: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (n, T, *shape) of every masked (sample, target) score of ``batch`` with respect to the layer's
    output, from one forward pass; the activations (n, *shape) and the outputs (n, K)."""
    run = layer_pass(model, where, spec, batch.inputs, method)
    grads = zero_maps(batch.inputs, batch.targets.shape[1], spec.shape)
    for column, rows, grad in run.gradients(batch.targets, batch.mask):
        grads[rows, column] = grad
    return grads, run.activations.detach(), run.outputs.detach()


def reference_activations(
    model: nn.Module, where: nn.Module, spec: LayerSpec, refs: Tensor, path: Tensor, sample: Tensor, method: str
) -> Tensor:
    """The layer's output (P, *shape) for each pair's reference ``refs[path, sample]`` ((B, n, C, H, W)
    references), each distinct reference through the model once."""
    combined = path * refs.shape[1] + sample
    distinct, inverse = torch.unique(combined, return_inverse=True)
    images = refs[distinct // refs.shape[1], distinct % refs.shape[1]]
    return layer_output(model, where, spec, images, method)[inverse]


def path_ends(
    model: nn.Module,
    images: Tensor,
    is_input: Tensor,
    sample: Tensor,
    targets: Tensor,
    paths: int,
    delta: Tensor,
    n: int,
) -> Tensor:
    """Run a path method's ends, ``images`` (E, C, H, W): inputs (``is_input``) and references of the samples
    ``sample`` (E,); add -f(x) and f(reference) / ``paths`` to ``delta`` (n, T) (completeness: delta =
    sum(maps) - (f(x) - mean f(reference)), the sum added in ``finish``) and return the inputs' logits
    (n, K), NaN rows for samples whose input is not among them."""
    with torch.no_grad():
        out = model(images)
    # (Built in the outputs' dtype: torch.where on two Python floats would round 1/B to float32.)
    sign = out.new_full((len(images), 1), 1.0 / paths)
    sign[is_input] = -1.0
    delta.index_add_(0, sample, sign * out.gather(1, targets[sample]))
    outputs = images.new_full((n, out.shape[1]), float("nan"))
    outputs[sample[is_input]] = out[is_input]
    return outputs


class AtLayer:
    """What methods with ``layer=`` share: the layer, found and checked before any pass, the model to run on
    (a rewritten view gets a tap after the layer), and the module each pass hooks.

    Subclasses call :meth:`_init_layer` in ``__init__``, :meth:`_layer_params` in ``params`` and
    :meth:`_at_layer` in ``prepare``; a pass finds its layer with :meth:`_site`.
    """

    id: ClassVar[str]

    def _init_layer(self, layer: Any, *, required: bool = False) -> None:
        self._layer = check_layer(self.id, layer, required=required)
        # The layer found for the model last prepared, and that model (weakly: the instance must not keep it alive).
        self._found: tuple[weakref.ref[nn.Module], tuple[int, ...], LayerSpec] | None = None

    @property
    def layer(self) -> str | None:
        """The module the maps attribute to, by name; None: the input."""
        return self._layer

    def _layer_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with the layer where there is one (maps of the input keep the parameters they always had)."""
        return {**params, "layer": self._layer} if self._layer is not None else params

    def _at_layer(self, model: nn.Module, example: Tensor, prepared: Prepared) -> Prepared:
        """``prepared`` with the layer found on ``model``: the maps' shape, and a tap in a rewritten view."""
        if self._layer is None:
            return prepared
        spec = find_layer(model, example, self._layer, self.id)
        run_on = prepared.model if prepared.model is model else tapped_view(prepared.model, spec, self.id)
        self._found = (weakref.ref(run_on), tuple(example.shape[1:]), spec)
        return replace(prepared, model=run_on, layer=spec.name, map_shape=spec.shape)

    def _site(self, model: nn.Module, inputs: Tensor) -> tuple[nn.Module, LayerSpec]:
        """The module to hook in ``model`` (the prepared one) for inputs like ``inputs``, and the layer."""
        tap = getattr(model, TAP, None)
        if isinstance(tap, LayerTap):
            return tap, tap.spec
        found = self._found
        if found is not None and found[0]() is model and found[1] == tuple(inputs.shape[1:]):
            spec = found[2]
        else:
            spec = find_layer(model, inputs[:1], str(self._layer), self.id)
        return model.get_submodule(spec.path), spec

    def __getstate__(self) -> dict[str, Any]:
        # A weak reference cannot be pickled (a run's job goes to dask workers); a worker prepares its own.
        return {**self.__dict__, "_found": None}


class _AlongInputPath(AtLayer, Attributor):
    """Gradients at a layer along the straight path in input space from each reference to the input.

    ``baseline`` (a number or a (C, H, W) image), ``baselines`` (B, C, H, W) (the mean over the B
    references' maps) and ``sample_baselines`` (N, C, H, W) (one per input sample, explain() only)
    are integrated gradients' references; ``n_steps`` and ``method`` its quadrature.
    """

    needs_baseline: ClassVar[bool] = True

    def __init__(
        self,
        *,
        layer: str,
        n_steps: int = 50,
        method: str = "gausslegendre",
        baseline: Any = 0.0,
        baselines: Tensor | None = None,
        sample_baselines: Tensor | None = None,
    ) -> None:
        self._init_layer(layer, required=True)
        self.n_steps = positive_int("n_steps", n_steps, owner=self.id)
        self.method = check_quadrature(self.id, method, self.n_steps, points=self._points())
        self.baseline = check_baseline(self.id, baseline)
        self.baselines = check_baseline_set(self.id, baselines, baseline)
        self.sample_baselines = check_sample_baselines(self.id, sample_baselines, baseline, baselines)

    def _points(self) -> int:
        """Points on the path per reference."""
        return self.n_steps

    def params(self) -> dict[str, Any]:
        return self._layer_params(path_params(self))

    def check_inputs(self, inputs: Tensor) -> None:
        check_sample_baselines_fit(self.id, self.sample_baselines, inputs)

    def works_in_blocks(self) -> str | None:
        return None if self.sample_baselines is None else "sample_baselines are rows of one explain() call"

    def prepare(self, model: nn.Module, example: Tensor) -> Prepared:
        return self._at_layer(model, example, Prepared(model))

    def _references(self, batch: Batch) -> Tensor:
        """The references (B, n, C, H, W) of the pass's samples."""
        return reference_set(
            self.id, self.baseline, self.baselines, batch.inputs, sample_baselines=self.sample_baselines,
            position=batch.position,
        )  # fmt: skip


class InternalInfluence(_AlongInputPath):
    """The gradient of the target score at a layer, integrated along the input path from a baseline to the input
    (Leino et al., 2018).

    ``sum_k w_k dF/da(x_k)`` with ``x_k = b + alpha_k (x - b)``, the ``n_steps`` points and weights of the
    quadrature rule ``method`` (captum's ``InternalInfluence``; its trapezoid weights add up to (n-1)/n,
    here to one, as for :class:`~xai_bench.attributors.integrated_gradients.IntegratedGradients`).
    ``layer`` names the module (required); maps have its output's shape per sample. Nothing is
    multiplied by a difference, so the maps do not sum to a difference of outputs. Parameters
    otherwise as integrated gradients. The expansion axis holds the ``n_steps`` points per reference.
    """

    id: ClassVar[str] = "internal_influence"

    def __init__(
        self,
        *,
        layer: str,
        n_steps: int = 50,
        method: str = "gausslegendre",
        baseline: Any = 0.0,
        baselines: Tensor | None = None,
        sample_baselines: Tensor | None = None,
    ) -> None:
        super().__init__(
            layer=layer, n_steps=n_steps, method=method, baseline=baseline, baselines=baselines,
            sample_baselines=sample_baselines,
        )  # fmt: skip
        step_sizes, alphas = quadrature(self.method, self.n_steps)
        self._alpha = torch.tensor(alphas, dtype=torch.float64)
        self._weight = torch.tensor(step_sizes, dtype=torch.float64)

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        paths = 1 if self.baselines is None else len(self.baselines)
        return Cost(items=paths * self.n_steps)

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        x, targets, mask = batch.inputs, batch.targets, batch.mask
        where, spec = self._site(model, x)
        refs = self._references(batch)
        sample = batch.sample.to(x.device)
        path, step = batch.item.to(x.device) // self.n_steps, batch.item.to(x.device) % self.n_steps
        ref = refs[path, sample]
        alpha = self._alpha.to(device=x.device, dtype=x.dtype)[step].view(-1, *[1] * (x.dim() - 1))
        weight = self._weight.to(device=x.device, dtype=x.dtype)[step] / refs.shape[0]
        run = layer_pass(model, where, spec, ref + alpha * (x[sample] - ref), self.id)
        total = zero_maps(x, targets.shape[1], spec.shape)
        shape = (-1,) + (1,) * len(spec.shape)
        for c, rows, grad in run.gradients(targets[sample], mask[sample]):
            total[:, c].index_add_(0, sample[rows], grad * weight[rows].view(shape))
        return Attribution(total)


class LayerConductance(_AlongInputPath):
    """Conductance of a layer's units: the target score's gradient at the layer times the layer's change along
    the input path from a baseline to the input (Dhamdhere et al., 2018).

    ``sum_k dF/da(x_k) (a(x_{k+1}) - a(x_k))`` over ``n_steps + 1`` points ``x_k = b + alpha_k (x - b)``
    of the quadrature rule ``method``, as captum's ``LayerConductance`` computes it. With
    ``"riemann_trapezoid"`` the points run from the baseline to the input, so the maps sum to
    f(x) - f(b) up to the path's discretisation where the layer is a cut; Gauss-Legendre's (captum's
    default, kept) stop short of both ends. ``layer`` names the module (required); maps have its
    output's shape per sample; ``<method>_delta`` is sum(maps) - (f(x) - mean f(baseline)).
    Parameters otherwise as integrated gradients. The expansion axis holds the ``n_steps``
    segments per reference (each runs its two ends: the second only up to the layer), then the
    input and the reference themselves.
    """

    id: ClassVar[str] = "layer_conductance"
    multiplies_by_inputs: ClassVar[bool] = True
    has_delta: ClassVar[bool] = True
    reports_outputs: ClassVar[bool] = True

    def __init__(
        self,
        *,
        layer: str,
        n_steps: int = 50,
        method: str = "gausslegendre",
        baseline: Any = 0.0,
        baselines: Tensor | None = None,
        sample_baselines: Tensor | None = None,
    ) -> None:
        super().__init__(
            layer=layer, n_steps=n_steps, method=method, baseline=baseline, baselines=baselines,
            sample_baselines=sample_baselines,
        )  # fmt: skip
        _, alphas = quadrature(self.method, self.n_steps + 1)
        self._alpha = torch.tensor(alphas, dtype=torch.float64)

    def _points(self) -> int:
        return self.n_steps + 1

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        paths = 1 if self.baselines is None else len(self.baselines)
        return Cost(items=paths * (self.n_steps + 2), images=2)

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        x, targets, mask = batch.inputs, batch.targets, batch.mask
        n, t = targets.shape
        where, spec = self._site(model, x)
        refs = self._references(batch)
        paths = refs.shape[0]
        # Item i is segment (or end) i % (n_steps + 2) of the path from reference i // (n_steps + 2).
        sample = batch.sample.to(x.device)
        path, item = batch.item.to(x.device) // (self.n_steps + 2), batch.item.to(x.device) % (self.n_steps + 2)
        ref = refs[path, sample]
        diff = x[sample] - ref
        alphas = self._alpha.to(device=x.device, dtype=x.dtype)
        shape = (-1,) + (1,) * (x.dim() - 1)
        total = zero_maps(x, t, spec.shape)
        delta = x.new_zeros((n, t))
        outputs = None
        segments = (item < self.n_steps).nonzero().flatten()
        if len(segments):
            p, s, k = segments, sample[segments], item[segments]
            after = layer_output(model, where, spec, ref[p] + alphas[k + 1].view(shape) * diff[p], self.id)
            run = layer_pass(model, where, spec, ref[p] + alphas[k].view(shape) * diff[p], self.id)
            change = (after - run.activations.detach()) / paths
            for c, rows, grad in run.gradients(targets[s], mask[s]):
                total[:, c].index_add_(0, s[rows], grad * change[rows])
            outputs = x.new_full((n, run.outputs.shape[1]), float("nan"))
        # The input once (with the first path), every reference.
        ends = ((item == self.n_steps) & (path == 0) | (item == self.n_steps + 1)).nonzero().flatten()
        if len(ends):
            is_input = item[ends] == self.n_steps
            images = torch.where(is_input.view(shape), x[sample[ends]], ref[ends])
            outputs = path_ends(model, images, is_input, sample[ends], targets, paths, delta, n)
        return Attribution(total, delta=delta, outputs=outputs)

    def finish(self, inputs: Tensor, total: Attribution) -> Attribution:
        return Attribution(total.maps, delta=total.maps.flatten(2).sum(2) + total.delta)


#: the classes this module registers as built-ins
LAYER_METHODS: tuple[type[Attributor], ...] = (InternalInfluence, LayerConductance)
