"""Layer-wise relevance propagation with rules and named composites, on a rewritten view of the model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..core.checks import json_safe, to_json
from ..core.errors import InvalidParameterError, did_you_mean
from ..surgery.canonizers import RulePlan, lrp_view
from ..surgery.lrp_rules import (
    COMPOSITES,
    RULES,
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Gradient,
    Norm,
    Pass,
    Rule,
    WSquare,
    ZBox,
    ZPlus,
    composite_rules,
)
from .base import UNUSED_IS_ZERO, Attribution, Attributor, Batch, Prepared, zero_maps

__all__ = ["LRP", "LRP_METHODS", "AlphaBeta", "Epsilon", "Flat", "Gamma", "Gradient", "Norm", "Pass", "WSquare", "ZBox",
           "ZPlus"]  # fmt: skip


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidParameterError(f"lrp: {name} must be a finite number >= 0, got {value!r}; e.g. {name}=1e-6.")
    return float(value)


def _key_text(key: str | type) -> str:
    return key if isinstance(key, str) else f"{key.__module__}.{key.__qualname__}"


class LRP(Attributor):
    """Layer-wise relevance propagation: the target's score shared out layer by layer, by a rule per layer.

    The relevance at the top is the explained score of the target (the output times a one-hot
    vector, as zennit's ``attr_output`` is usually given), and each call site passes the relevance
    at its output to its inputs by its rule; maps (C, H, W) are the relevance at the input. With
    rules that conserve (``epsilon`` going to 0, layers without biases) a map sums to the score.

    ``composite`` names the rules per kind of layer, as zennit's composites do:

    - ``"epsilon_plus_flat"`` (default): flat for the input layer, zplus for the other convolutions;
    - ``"epsilon_gamma_box"``: z-box with bounds ``low``/``high`` for the input layer, gamma for the
      other convolutions;
    - ``"epsilon_alpha2_beta1"``: alpha 2 beta 1 for every convolution;
    - ``"epsilon"``: epsilon everywhere.

    In every composite, Linear layers take ``epsilon``; sums of branches and average pooling take
    ``norm``; activations and scalings by constants ``pass`` relevance unchanged; max pooling passes
    the gradient (all to each window's winner); a batch norm right after a Conv or Linear layer is merged
    into it (on copies of the weights), and one that is not (after a concatenation, as in DenseNet)
    is its own affine layer with the epsilon rule, where zennit passes relevance through it unchanged.
    The input layer is the first Conv or Linear layer the input reaches.

    ``rules`` maps module names (``fnmatch`` patterns of the names ``named_modules()`` gives) and module
    types to rules, names (``"epsilon"``, ``"zplus"``, ``"alpha_beta"``, ``"gamma"``, ``"zbox"``, ``"flat"``,
    ``"wsquare"``, ``"norm"``, ``"pass"``, ``"gradient"``, made with this instance's ``epsilon``, ``gamma``,
    ``stabilizer``, ``low`` and ``high``) or rule objects (``Gamma(gamma=0.5)``, ``AlphaBeta(alpha=1, beta=0)``
    from ``xai_bench.attributors.lrp``); e.g. ``{"features.0": "zbox", torch.nn.Conv2d: "gamma", "classifier.*":
    "epsilon"}``. An entry overrides the composite where it matches a module and its rule fits the module's
    call site; names are tried before types, each in the map's order.

    ``epsilon`` is the epsilon rule's (default 1e-6, zennit's), ``gamma`` the gamma rule's (0.25) and
    ``stabilizer`` the one every other rule adds to its denominators (1e-6). ``low`` and ``high`` bound
    the input layer's input for the z-box rule: numbers, or tensors broadcastable to it ((C, H, W),
    (C, 1, 1)). Products of activations, attention, layer norm and softmax have no rule: such models are
    refused, naming the call sites.
    """

    id: ClassVar[str] = "lrp"
    needs_surgery: ClassVar[bool] = True
    reports_outputs: ClassVar[bool] = True

    def __init__(
        self,
        *,
        composite: str = "epsilon_plus_flat",
        epsilon: float = 1e-6,
        gamma: float = 0.25,
        stabilizer: float = 1e-6,
        low: float | Tensor | None = None,
        high: float | Tensor | None = None,
        rules: Mapping[str | type, str | Rule] | None = None,
    ) -> None:
        if not isinstance(composite, str) or composite not in COMPOSITES:
            raise InvalidParameterError(
                f"lrp: composite must be one of {', '.join(map(repr, COMPOSITES))}, got {composite!r}."
                f"{did_you_mean(str(composite), COMPOSITES)}"
            )
        self.composite = composite
        self.epsilon = _number("epsilon", epsilon)
        self.gamma = _number("gamma", gamma)
        self.stabilizer = _number("stabilizer", stabilizer)
        self.low, self.high = self._bounds(low, high, rules)
        base = composite_rules(composite, epsilon=self.epsilon, gamma=self.gamma, stabilizer=self.stabilizer,
                               low=self.low, high=self.high)  # fmt: skip
        self.rules = self._user_rules(rules)
        self._plan = RulePlan(base, tuple(self.rules.items()), to_json(self.params()))

    def _bounds(self, low: Any, high: Any, rules: Any) -> tuple[Any, Any]:
        """``low`` and ``high`` checked: both given where a z-box rule uses them, neither where none does."""
        wanted = self.composite == "epsilon_gamma_box" or (
            isinstance(rules, Mapping) and any(v == "zbox" for v in rules.values() if isinstance(v, str))
        )
        if wanted and (low is None or high is None):
            raise InvalidParameterError(
                "lrp: the z-box rule (composite='epsilon_gamma_box' or a 'zbox' rule) needs low= and high=, the "
                "lowest and highest values of the input layer's input; e.g. low=0.0, high=1.0 for images in [0, 1]."
            )
        if not wanted and (low is not None or high is not None):
            raise InvalidParameterError(
                "lrp: low= and high= bound the z-box rule, which this call does not use; use "
                "composite='epsilon_gamma_box' or a 'zbox' rule, or leave them out."
            )
        if not wanted:
            return None, None
        checked = ZBox(low, high)  # checks both, one error per problem
        return checked.low, checked.high

    def _rule(self, value: Any, key: Any) -> Rule:
        if isinstance(value, Rule):
            return value
        if not isinstance(value, str) or value not in RULES:
            raise InvalidParameterError(
                f"lrp: rules[{_key_text(key)!r}] must be a rule name ({', '.join(map(repr, RULES))}) or a rule "
                f"object (xai_bench.attributors.lrp.Gamma(gamma=0.5), ...), got {value!r}."
                f"{did_you_mean(str(value), RULES)}"
            )
        made = {
            "epsilon": lambda: Epsilon(self.epsilon),
            "zplus": lambda: ZPlus(self.stabilizer),
            "alpha_beta": lambda: AlphaBeta(2.0, 1.0, self.stabilizer),
            "gamma": lambda: Gamma(self.gamma, self.stabilizer),
            "zbox": lambda: ZBox(self.low, self.high, self.stabilizer),
            "flat": lambda: Flat(self.stabilizer),
            "wsquare": lambda: WSquare(self.stabilizer),
            "norm": lambda: Norm(self.stabilizer),
            "pass": Pass,
            "gradient": Gradient,
        }
        return made[value]()

    def _user_rules(self, rules: Any) -> dict[str | type, Rule]:
        """The user's map as rule objects, names before types (the order they are tried in)."""
        if rules is None:
            return {}
        if not isinstance(rules, Mapping):
            raise InvalidParameterError(
                f"lrp: rules must be a dict from module names or types to rules, got {type(rules).__name__}; e.g. "
                "rules={'features.0': 'zbox', torch.nn.Conv2d: 'gamma'}."
            )
        for key in rules:
            if not (isinstance(key, str) and key) and not isinstance(key, type):
                raise InvalidParameterError(
                    f"lrp: a rules key must be a module name (or an fnmatch pattern of names) or a module type, got "
                    f"{key!r}."
                )
        ordered = sorted(rules, key=lambda k: not isinstance(k, str))  # stable: the map's order within each kind
        return {key: self._rule(rules[key], key) for key in ordered}

    def params(self) -> dict[str, Any]:
        return {
            "composite": self.composite,
            "epsilon": self.epsilon,
            "gamma": self.gamma,
            "stabilizer": self.stabilizer,
            "low": json_safe(self.low),
            "high": json_safe(self.high),
            "rules": {_key_text(k): r.describe() for k, r in self.rules.items()},
        }

    def prepare(self, model: nn.Module, example: Tensor) -> Prepared:
        view, report = lrp_view(model, self._plan, example)
        return Prepared(view, tuple(report.summary()))

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        inputs, targets = batch.inputs, batch.targets
        maps = zero_maps(inputs, targets.shape[1])
        columns = batch.columns()
        with torch.enable_grad():
            x = inputs.detach().requires_grad_(True)
            out = model(x)
            scores = out.detach()
            for i, (column, rows) in enumerate(columns):
                picked = targets[rows, column]
                # The relevance at the top: the target's score, nothing for the other outputs.
                top = torch.zeros_like(scores)
                top[rows, picked] = scores[rows, picked]
                (relevance,) = torch.autograd.grad(out, x, top, retain_graph=i < len(columns) - 1, **UNUSED_IS_ZERO)
                maps[rows, column] = relevance[rows]
        return Attribution(maps, outputs=scores)


#: the classes this module registers as built-ins
LRP_METHODS: tuple[type[Attributor], ...] = (LRP,)
