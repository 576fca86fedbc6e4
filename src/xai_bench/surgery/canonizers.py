"""The view of a model that layer-wise relevance propagation runs on, each call site carrying its rule.

The model is traced with torch.fx (:func:`~xai_bench.surgery.rewrite.trace`) and a copy of the graph
is rewritten; the user's modules are shared, never changed. As zennit's canonizers do for the models
they know, and from the graph for any model:

- every Conv and Linear call site becomes an :class:`~.lrp_rules.LrpLayer` with its rule, the batch
  norm right after it (its only user) merged into it on copies of the weights (zennit's
  ``MergeBatchNorm``); a batch norm with no such layer before it (after a concatenation, say) is its
  own affine layer, with the epsilon rule by default;
- every sum of two branches (``a + b``, ``a - b``) and every average pooling (modules, functional
  calls, ``mean``/``sum`` over dimensions) gets the norm rule;
- activations and element-wise scalings by constants pass relevance unchanged; max pooling,
  concatenations and reshapes pass the gradient (max pooling: all to the winner).

Products of two activations, layer norm, softmax, attention and functional linear layers have no
rule here and are refused, naming their call sites.
"""

from __future__ import annotations

import copy
import fnmatch
import operator
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..core.cache import cache_of
from ..core.errors import InvalidParameterError, SurgeryError, did_you_mean
from . import sites as S
from .lrp_rules import (
    ACTIVATION,
    LAYER,
    MAX_POOL,
    SCALING,
    SITE_WORDS,
    SUM,
    BatchNormParams,
    Composite,
    Gradient,
    LrpLayer,
    NormRule,
    Pass,
    PassRule,
    Rule,
)
from .rewrite import SurgeryReport, _make_out_of_place, _signature, trace
from .rules import Pointwise

#: a user's rule map entry: a module name (``fnmatch`` pattern) or a module type, and its rule
Key = str | type


@dataclass(frozen=True, eq=False)
class RulePlan:
    """The rules for a view: the composite's defaults, overridden where an entry of ``user`` matches.

    ``user`` is tried in order (names before types): the first entry that matches a module and whose
    rule fits its call site wins. ``key`` names the plan in caches.
    """

    composite: Composite
    user: tuple[tuple[Key, Rule], ...]
    key: str


LAYER_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                 nn.Linear)  # fmt: skip
AVERAGE_POOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                        nn.AdaptiveAvgPool3d)  # fmt: skip
AVERAGE_FUNCTIONS = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                     F.adaptive_avg_pool3d, torch.mean, torch.sum}  # fmt: skip
AVERAGE_METHODS = {"mean", "sum"}
SUM_FUNCTIONS = {operator.add, operator.sub, torch.add, torch.sub}  # in-place forms were made out-of-place
SUM_METHODS = {"add", "sub"}
SCALING_FUNCTIONS = {operator.mul, operator.truediv, torch.mul, torch.div, operator.neg, operator.pos, torch.neg}
SCALING_METHODS = {"mul", "div", "neg"}
# Linear maps with no module to carry a rule: refused rather than treated as routing.
FUNCTIONAL_LAYERS = {F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                     F.conv_transpose3d, F.bilinear, *S.BILINEAR_FUNCTIONS}  # fmt: skip
FUNCTIONAL_LAYER_METHODS = set(S.BILINEAR_METHODS)
CONCATENATIONS = {torch.cat, torch.concat, torch.stack}
_BATCH_NORM_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")

_REFUSED = {
    S.PRODUCT: "a product of two activations",
    S.COMPOSITE: "{composite}",
    S.UNKNOWN: "an operation without an LRP rule",
}


def lrp_view(
    model: nn.Module, plan: RulePlan, example: torch.Tensor | None = None
) -> tuple[fx.GraphModule, SurgeryReport]:
    """Return the view of ``model`` with every call site carrying its rule under ``plan``, and a report.

    Cached with the other rewritten views of the model (``xai_bench.forget`` drops it), per plan.
    """
    sig = _signature(model)
    per_model = cache_of(model, "rewrites")
    cached = per_model.get(("lrp", plan.key))
    if cached is not None and cached[0] == sig:
        return cached[1], cached[2]
    traced = trace(model, example)
    gm = fx.GraphModule(traced, copy.deepcopy(traced.graph), class_name=f"{type(model).__name__}LRP")
    report = _Builder(gm, plan, model).apply()
    per_model[("lrp", plan.key)] = (sig, gm, report)
    return gm, report


def _candidate_names(model: nn.Module) -> dict[int, list[str]]:
    """Each module's names a user's key may give: its name in ``model`` and, where ``model`` is the
    output head ``explain`` wraps around the user's model (children ``model`` and ``head``), the
    name in the user's model."""
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module) and {n for n, _ in model.named_children()} == {"model", "head"}:
        for name, module in inner.named_modules(remove_duplicate=False):
            names.setdefault(id(module), []).append(name)
    return names


def _owners(model: nn.Module) -> dict[int, nn.Module]:
    """The module that holds each parameter and buffer of ``model``, by the tensor's id."""
    owners: dict[int, nn.Module] = {}
    for module in model.modules():
        for tensor in [*module._parameters.values(), *module._buffers.values()]:
            if tensor is not None:
                owners.setdefault(id(tensor), module)
    return owners


def _fetch(gm: fx.GraphModule, target: str) -> Any:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _call_of(node: fx.Node, gm: fx.GraphModule) -> Callable[..., Any]:
    """``node``'s operation as a function of its arguments."""
    if node.op == "call_module":
        return gm.get_submodule(node.target).forward  # the module's own forward, as the other rules call it
    if node.op == "call_method":
        name = node.target
        return lambda first, *rest, **kwargs: getattr(first, name)(*rest, **kwargs)
    return node.target


class _Builder:
    """One pass over the graph: each call site is given its rule, or refused."""

    def __init__(self, gm: fx.GraphModule, plan: RulePlan, model: nn.Module) -> None:
        self.gm, self.graph, self.plan, self.model = gm, gm.graph, plan, model
        self.tensors = S.tensor_valued(self.graph)
        self.names = _candidate_names(model)
        self.owners = _owners(model)
        self.layers: dict[fx.Node, LrpLayer] = {}
        self.counts: Counter[str] = Counter()
        self.refused: list[str] = []
        self.first_seen = False
        self.serial = 0
        self.matched: set[int] = set()  # user entries that matched a call site's module
        self.used: set[int] = set()  # user entries whose rule a call site took

    def apply(self) -> SurgeryReport:
        self._check_names()
        for node in list(self.graph.nodes):
            _make_out_of_place(node, self.counts)
            site = S.classify(node, self.gm, self.tensors)
            if site is None:
                continue
            if site.kind in (S.RELU, S.POINTWISE):
                self._activation(node, site)
            elif site.kind == S.MAX_POOL:
                self._max_pool(node, site)
            elif site.kind == S.LINEAR:
                self._linear(node, site)
            else:
                self._refuse(site.where, _REFUSED[site.kind].format(composite=site.composite.replace("_", " ")))
        if self.refused:
            listing = "".join(f"\n  - {r}" for r in self.refused[:10])
            more = f"\n  ... and {len(self.refused) - 10} more" if len(self.refused) > 10 else ""
            raise SurgeryError(
                f"Cannot apply LRP to {type(self.model).__name__}: no LRP rule is known for {len(self.refused)} "
                f"operation(s):{listing}{more}\nLRP's rules cover Conv, Linear and BatchNorm modules, activations, "
                "sums of branches, concatenations, pooling and scalings by constants; any other operation would be "
                "given the plain gradient, a silently wrong map. Use a gradient method or occlusion for this model."
            )
        self._check_user_rules()
        self.graph.lint()
        self.gm.recompile()
        return SurgeryReport(f"lrp({self.plan.composite.name})", dict(self.counts))

    # -- choosing rules

    def _module(self, node: fx.Node) -> nn.Module | None:
        return self.gm.get_submodule(node.target) if node.op == "call_module" else None

    def _matches(self, key: Key, module: nn.Module) -> bool:
        if isinstance(key, str):
            return any(fnmatch.fnmatchcase(name, key) for name in self.names.get(id(module), ()))
        return isinstance(module, key)

    def _choose(self, kind: str, module: nn.Module | None, default: Rule) -> Rule:
        """The first user entry that matches ``module`` and fits ``kind``, else ``default``."""
        if module is not None:
            for i, (key, rule) in enumerate(self.plan.user):
                if self._matches(key, module):
                    self.matched.add(i)
                    if kind in rule.fits:
                        self.used.add(i)
                        return rule
        return default

    def _check_names(self) -> None:
        """Refuse name keys that name no module of the model (a typo would otherwise change nothing)."""
        every = sorted({n for names in self.names.values() for n in names if n})
        for key, _ in self.plan.user:
            if isinstance(key, str) and not any(fnmatch.fnmatchcase(n, key) for n in every):
                raise InvalidParameterError(
                    f"lrp: rules names {key!r}, which matches no module of {type(self.model).__name__}."
                    f"{did_you_mean(key, every)} Give module names as model.named_modules() lists them "
                    "('features.0', 'layer1.*')."
                )

    def _check_user_rules(self) -> None:
        for i, (key, rule) in enumerate(self.plan.user):
            shown = key if isinstance(key, str) else f"{key.__module__}.{key.__qualname__}"
            fits = " or ".join(SITE_WORDS[k] for k in sorted(rule.fits))
            if i in self.matched and i not in self.used:
                raise InvalidParameterError(
                    f"lrp: rules[{shown!r}] is {rule.name!r}, which fits none of the call sites it matches; "
                    f"{rule.name!r} is a rule for {fits}. Name the modules it is meant for."
                )
            if isinstance(key, str) and i not in self.matched:
                raise InvalidParameterError(
                    f"lrp: rules[{shown!r}] matches only modules that carry no rule of their own: containers, "
                    "dropout, flatten, or batch norms merged into the Conv or Linear layer before them (give the "
                    "rule to that layer); name the layers, e.g. 'features.*'."
                )

    # -- the kinds of call sites

    def _replace(self, node: fx.Node, module: nn.Module, kind: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any] | None = None) -> fx.Node:  # fmt: skip
        self.serial += 1
        name = f"xai_bench_lrp_{kind}_{self.serial}"
        self.gm.add_submodule(name, module)
        with self.graph.inserting_before(node):
            new = self.graph.call_module(name, args, kwargs or {})
        new.meta = dict(node.meta)
        self.tensors[new] = True
        node.replace_all_uses_with(new)
        self.graph.erase_node(node)
        return new

    def _refuse(self, where: str, why: str) -> None:
        self.refused.append(f"{where}: {why}")

    def _positions(self, node: fx.Node) -> tuple[int, ...] | None:
        """Positions of the arguments carrying activations, or None when one is passed by keyword or in a list."""
        positions = tuple(i for i, a in enumerate(node.args) if isinstance(a, fx.Node) and self.tensors.get(a))
        nested: list[bool] = []
        for i, value in [*enumerate(node.args), *node.kwargs.items()]:
            if i in positions:
                continue
            fx.node.map_arg(value, lambda n: nested.append(bool(self.tensors.get(n))) or n)
        return None if any(nested) else positions

    def _activation(self, node: fx.Node, site: S.Site) -> None:
        rule = self._choose(ACTIVATION, self._module(node), self.plan.composite.activation)
        fn = torch.relu if site.kind == S.RELU else site.fn
        inputs = site.args if site.args is not None else (node.args[0] if node.args else node.kwargs["input"],)
        if isinstance(rule, Pass):
            self._replace(node, PassRule(fn, 0, site.where), "pass", inputs)
        else:  # the plain gradient, out of place (the rules above keep their inputs for backward)
            self._replace(node, Pointwise(fn), "activation", inputs)
        self.counts[f"activations with {rule.describe()}"] += 1

    def _max_pool(self, node: fx.Node, site: S.Site) -> None:
        rule = self._choose(MAX_POOL, self._module(node), self.plan.composite.max_pool)
        self.counts[f"max poolings with {rule.describe()} (all to each window's winner)"] += 1

    def _linear(self, node: fx.Node, site: S.Site) -> None:
        module = self._module(node)
        if module is not None:
            if isinstance(module, LAYER_MODULES):
                self._layer(node, module, site)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                if module.running_mean is None or module.running_var is None:
                    self._refuse(site.where, "a batch norm without running statistics (it normalises by the batch's)")
                else:
                    self._batch_norm(node, node.args[0], BatchNormParams.of(module), module, site.where)
            elif isinstance(module, AVERAGE_POOL_MODULES):
                self._norm(node, site, module, "average poolings")
            return
        target, function = node.target, node.op == "call_function"
        if function and target is F.batch_norm:
            self._functional_batch_norm(node, site)
        elif (function and target in FUNCTIONAL_LAYERS) or (not function and target in FUNCTIONAL_LAYER_METHODS):
            self._refuse(site.where, "a functional linear layer (LRP's rules attach to Conv, Linear and BatchNorm "
                                     "modules)")  # fmt: skip
        elif (function and target in AVERAGE_FUNCTIONS) or (not function and target in AVERAGE_METHODS):
            self._norm(node, site, None, "average poolings and sums over dimensions")
        elif (function and target in SUM_FUNCTIONS) or (not function and target in SUM_METHODS):
            positions = self._positions(node)
            if positions is not None and len(positions) == 2:
                self._norm(node, site, None, "sums of branches")
            elif positions == (1,):  # a constant minus an activation: relevance passes, its sign kept
                self._scaling(node, site)
            # An activation plus or minus a constant (a bias) passes its gradient, the relevance unchanged.
        elif (function and target in SCALING_FUNCTIONS) or (not function and target in SCALING_METHODS):
            self._scaling(node, site)
        elif function and target in CONCATENATIONS:
            self.counts["concatenations, relevance split by position"] += 1

    def _norm(self, node: fx.Node, site: S.Site, module: nn.Module | None, what: str) -> None:
        positions = self._positions(node)
        if not positions:
            self._refuse(site.where, "activations passed by keyword or in a list")
            return
        rule = self._choose(SUM, module, self.plan.composite.norm)
        self.counts[f"{what} with {rule.describe()}"] += 1
        if isinstance(rule, Gradient):
            return
        norm = NormRule(_call_of(node, self.gm), positions, rule.stabilizer, site.where)
        self._replace(node, norm, "norm", tuple(node.args), dict(node.kwargs))

    def _scaling(self, node: fx.Node, site: S.Site) -> None:
        positions = self._positions(node)
        if positions is None or len(positions) != 1:
            self._refuse(site.where, "a scaling whose activation is passed by keyword or in a list")
            return
        rule = self._choose(SCALING, None, self.plan.composite.scaling)
        self.counts[f"element-wise scalings with {rule.describe()}"] += 1
        if isinstance(rule, Pass):
            self._replace(node, PassRule(_call_of(node, self.gm), positions[0], site.where), "pass", tuple(node.args),
                          dict(node.kwargs))  # fmt: skip

    def _layer(self, node: fx.Node, module: nn.Module, site: S.Site) -> None:
        if len(node.args) != 1 or node.kwargs:
            self._refuse(site.where, "a layer called with more than its input")
            return
        composite = self.plan.composite
        first = not self.first_seen
        self.first_seen = True
        conv = not isinstance(module, nn.Linear)
        default = composite.first if first and composite.first is not None else composite.conv if conv else (
            composite.linear)  # fmt: skip
        rule = self._choose(LAYER, module, default)
        what = "input layer" if first else "Conv layers" if conv else "Linear layers"
        self.counts[f"{what} with {rule.describe()}"] += 1
        layer = LrpLayer(rule, module, None, site.where)
        self.layers[self._replace(node, layer, "layer", (node.args[0],))] = layer

    def _mergeable(self, source: fx.Node, norm: BatchNormParams, module: nn.Module | None) -> LrpLayer | None:
        """The layer ``source`` computes, if the batch norm after it can be merged into it."""
        layer = self.layers.get(source)
        if layer is None or layer.layer is None or layer.norm is not None:
            return None
        users = [u for u in source.users if self.tensors.get(u)]
        if len(users) != 1:
            return None  # the layer's output is used elsewhere too, without the batch norm
        inner = layer.layer
        if isinstance(inner, nn.Linear):
            fits = isinstance(module, nn.BatchNorm1d) and inner.out_features == norm.channels
        elif isinstance(inner, nn.modules.conv._ConvTransposeNd):
            fits = inner.groups == 1 and inner.out_channels == norm.channels
        else:
            fits = inner.out_channels == norm.channels
        return layer if fits else None

    def _batch_norm(self, node: fx.Node, source: Any, norm: BatchNormParams, module: nn.Module | None,
                    where: str) -> None:  # fmt: skip
        layer = self._mergeable(source, norm, module) if isinstance(source, fx.Node) else None
        if layer is not None:
            layer.norm = norm
            node.replace_all_uses_with(source)
            self.graph.erase_node(node)
            self.counts["batch norms merged into the Conv or Linear layer before them"] += 1
            return
        rule = self._choose(LAYER, module, self.plan.composite.batch_norm)
        self.counts[f"batch norms on their own (affine layers) with {rule.describe()}"] += 1
        bn = LrpLayer(rule, None, norm, where)
        self.layers[self._replace(node, bn, "batch_norm", (source,))] = bn

    def _functional_batch_norm(self, node: fx.Node, site: S.Site) -> None:
        bound = dict(zip(_BATCH_NORM_ARGS, node.args, strict=False)) | dict(node.kwargs)
        names = ("running_mean", "running_var", "weight", "bias")
        values = [bound.get(n) for n in names]
        constant = all(v is None or (isinstance(v, fx.Node) and v.op == "get_attr") for v in values)
        if bound.get("training") is not False or not constant or values[0] is None or values[1] is None:
            self._refuse(site.where, "a batch norm without running statistics held by the model, or in training")
            return
        mean, var, weight, bias = (None if v is None else _fetch(self.gm, v.target) for v in values)
        eps = float(bound.get("eps", 1e-5))
        norm = BatchNormParams(lambda: (mean, var, weight, bias), eps, mean.numel())
        owner = self.owners.get(id(mean))
        self._batch_norm(node, bound["input"], norm, owner, site.where)
