"""Rewrite a traced view of a model so every non-linearity call site is its own rule module.

The rewritten ``GraphModule`` shares parameters and buffers with the user's model, so it stays in
step with training, and only ever *adds* modules: the user's modules, flags and hooks are untouched.
"""

from __future__ import annotations

import copy
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from ..core.cache import cache_of
from ..core.cache import forget as forget_cached
from ..core.errors import SurgeryError
from ..core.locks import tracing
from . import sites as S
from .rules import Pointwise, Pool


@dataclass(frozen=True)
class RuleSet:
    """Which module replaces each kind of non-linearity call site; ``None`` keeps the call as it is."""

    name: str
    relu: Callable[[S.Site], nn.Module]
    pointwise: Callable[[S.Site], nn.Module | None] = lambda site: None
    max_pool: Callable[[S.Site], nn.Module | None] = lambda site: None
    # A product of two activations, and layer norm / softmax / attention / a quotient of activations.
    product: Callable[[S.Site], nn.Module | None] = lambda site: None
    composite: Callable[[S.Site], nn.Module | None] = lambda site: None
    # Refuse graphs with operations whose attribution rule is unknown (products, norms, ...).
    strict: bool = True


PLAIN = RuleSet(
    name="plain",
    relu=lambda site: nn.ReLU(),
    pointwise=lambda site: Pointwise(site.fn),
    max_pool=lambda site: Pool(site.fn),
)


@dataclass(frozen=True)
class SurgeryReport:
    """What a rewrite did, for provenance."""

    rules: str
    counts: dict[str, int] = field(default_factory=dict)
    #: a composite (layer norm, softmax, attention, a quotient) was replaced by its exact steps, which
    #: round differently from the fused kernel
    decomposed: bool = False

    def summary(self) -> list[str]:
        """One line per kind of rewrite with its count, for a map's ``surgery`` attribute."""
        return [f"{what}: {n}" for what, n in sorted(self.counts.items()) if n]


def _signature(model: nn.Module) -> tuple[tuple[int, ...], ...]:
    # Rebuild when the module tree changes (a layer swapped in after the first call) or a forward hook is
    # added or removed anywhere: tracing bakes the hooks of the root and of every module it enters into
    # the graph. Hook handles are numbered afresh by torch, so their keys never repeat within a process.
    return tuple((id(m), *m._forward_pre_hooks.keys(), -1, *m._forward_hooks.keys()) for m in model.modules())


class _Called(nn.Module):
    """Calls the model as the user does, so that tracing runs through the root's own forward hooks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training  # copied by the graph module; set here, so the model is left alone

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)


_Signature = tuple[tuple[int, ...], ...]


def forget(model: nn.Module) -> None:
    """Drop the traced graph and rewritten views of ``model``, so the next use traces it again."""
    forget_cached(model, "trace", "rewrites")


def _untraceable(model: nn.Module, exc: Exception, example: torch.Tensor | None) -> SurgeryError:
    found = dry_run_sites(model, example) if example is not None else []
    listing = "".join(f"\n  - {s}" for s in found[:10])
    more = f"\n  ... and {len(found) - 10} more" if len(found) > 10 else ""
    sites = f"\nA dry run found these call sites that need a rewrite:{listing}{more}" if found else ""
    return SurgeryError(
        f"Cannot rewrite {type(model).__name__} for a rule-based method: torch.fx could not trace "
        f"it ({type(exc).__name__}: {exc}).{sites}\nMake the forward traceable (no Python control "
        "flow on tensor values), or use a gradient method (saliency, input_x_gradient, "
        "integrated_gradients) or occlusion, which need no rewrite."
    )


def trace(model: nn.Module, example: torch.Tensor | None = None) -> fx.GraphModule:
    """Trace ``model`` (which must be in eval mode) with torch.fx, once per module tree and forward hooks."""
    sig = _signature(model)
    cached = cache_of(model, "trace").get("graph")
    if cached is not None and cached[0] == sig:
        return cached[1]
    if model.training:
        raise SurgeryError("trace() needs the model in eval mode; the graph would bake in training branches.")
    # symbolic_trace runs the root's forward, not its __call__: a hook on the root would be left out.
    hooked = bool(model._forward_pre_hooks or model._forward_hooks)
    try:
        with tracing():  # fx patches torch.nn.Module process-wide while it traces
            gm = fx.symbolic_trace(_Called(model) if hooked else model)
    except Exception as exc:  # fx raises many kinds (TraceError, TypeError, RuntimeError...)
        raise _untraceable(model, exc, example) from exc
    cache_of(model, "trace")["graph"] = (sig, gm)
    return gm


def rewrite(
    model: nn.Module, rules: RuleSet, example: torch.Tensor | None = None
) -> tuple[fx.GraphModule, SurgeryReport]:
    """Return a graph of ``model`` with every non-linearity replaced per ``rules``, and a report."""
    sig = _signature(model)
    per_model = cache_of(model, "rewrites")
    cached = per_model.get(rules.name)
    if cached is not None and cached[0] == sig:
        return cached[1], cached[2]
    traced = trace(model, example)
    graph = copy.deepcopy(traced.graph)
    gm = fx.GraphModule(traced, graph, class_name=f"{type(model).__name__}Rewritten")
    report = _apply(gm, rules, type(model).__name__)
    per_model[rules.name] = (sig, gm, report)
    return gm, report


def _apply(gm: fx.GraphModule, rules: RuleSet, model_name: str) -> SurgeryReport:
    graph = gm.graph
    tensors = S.tensor_valued(graph)
    counts: Counter[str] = Counter()
    unknown: list[S.Site] = []
    module_calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    serial, decomposed = 0, False
    for node in list(graph.nodes):
        _make_out_of_place(node, counts)
        site = S.classify(node, gm, tensors)
        if site is None or site.kind == S.LINEAR:
            continue
        if site.kind == S.UNKNOWN:
            unknown.append(site)
            continue
        factory = {S.RELU: rules.relu, S.POINTWISE: rules.pointwise, S.MAX_POOL: rules.max_pool,
                   S.PRODUCT: rules.product, S.COMPOSITE: rules.composite}[site.kind]  # fmt: skip
        replacement = factory(site)
        if replacement is None:
            if site.kind in (S.POINTWISE, S.PRODUCT, S.COMPOSITE):
                counts[f"{site.composite or site.kind} calls with their plain gradient"] += 1
            continue
        _count(node, gm, site, module_calls, counts)
        decomposed = decomposed or bool(site.composite)
        serial += 1
        name = f"xai_bench_{site.composite or site.kind}_{serial}"
        gm.add_submodule(name, replacement)
        inputs = site.args if site.args is not None else (node.args[0] if node.args else node.kwargs["input"],)
        with graph.inserting_before(node):
            new = graph.call_module(name, inputs, site.kwargs or {})
        new.meta = dict(node.meta)
        tensors[new] = True
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    if unknown and rules.strict:
        listing = "".join(f"\n  - {s.where}" for s in unknown[:10])
        more = f"\n  ... and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise SurgeryError(
            f"Cannot apply {rules.name!r} rules to {model_name}: no exact rule is known for "
            f"{len(unknown)} operation(s):{listing}{more}\nThese are non-linear (or unknown) "
            "operations the method would treat as linear, giving a silently wrong map. Use a "
            "gradient method or occlusion for this model, or register a rule for the operation."
        )
    graph.lint()
    gm.recompile()
    return SurgeryReport(rules.name, dict(counts), decomposed)


def _make_out_of_place(node: fx.Node, counts: Counter[str]) -> None:
    if node.op == "call_function" and node.target in S.OUT_OF_PLACE_FUNCTIONS and node.target not in S.RELU_FUNCTIONS:
        node.target = S.OUT_OF_PLACE_FUNCTIONS[node.target]
        counts["in-place operations made out-of-place"] += 1
    elif node.op == "call_method" and node.target in S.OUT_OF_PLACE_METHODS and node.target != "relu_":
        node.target = S.OUT_OF_PLACE_METHODS[node.target]
        counts["in-place operations made out-of-place"] += 1
    if node.kwargs.get("inplace") is True and node.op == "call_function":
        node.kwargs = {**node.kwargs, "inplace": False}
        counts["in-place operations made out-of-place"] += 1


def _count(node: fx.Node, gm: fx.GraphModule, site: S.Site, module_calls: Counter[Any], counts: Counter[str]) -> None:
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        counts[f"{site.composite or site.kind} modules replaced"] += 1
        if module_calls[node.target] > 1:
            counts[f"{site.kind} call sites of re-used modules unshared"] += 1
        if getattr(mod, "inplace", False):
            counts[f"in-place {site.kind} modules replaced out-of-place"] += 1
    else:
        counts[f"functional {site.composite or site.kind} calls lifted to modules"] += 1


def dry_run_sites(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Run ``model`` once and list functional non-linearity calls and re-used ReLU modules, with source lines."""
    found: list[str] = []
    functions = S.RELU_FUNCTIONS | S.POINTWISE_FUNCTIONS | set(S.MAX_POOL_FUNCTIONS)
    methods = {getattr(torch.Tensor, m) for m in S.RELU_METHODS | S.POINTWISE_METHODS}

    class Recorder(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in functions or func in methods:
                frame = _user_frame()
                found.append(f"{S.qualified_name(func)}() at {frame}")
            return func(*args, **(kwargs or {}))

    calls: Counter[str] = Counter()
    handles = [
        m.register_forward_hook(lambda mod, i, o, name=name: calls.update([name]))
        for name, m in model.named_modules()
        if type(m) is nn.ReLU
    ]
    try:
        with torch.no_grad(), Recorder():
            model(example)
    except Exception:
        pass
    finally:
        for h in handles:
            h.remove()
    found += [f"module '{name}' (ReLU) called {n} times" for name, n in calls.items() if n > 1]
    return found


def _user_frame() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/torch/" not in frame.filename and "/xai_bench/" not in frame.filename:
            return f"{frame.filename}:{frame.lineno} ({frame.line})"
    return "<unknown>"
