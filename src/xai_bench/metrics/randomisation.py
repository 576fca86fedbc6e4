"""Sanity checks (Adebayo et al., 2018): maps of a model with randomised parameters, or trained on shuffled
labels, should not look like the maps of the trained model."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..core.errors import InvalidParameterError
from ..core.provenance import model_fingerprint
from .base import Context, Curve, Metric, Pairs, Score
from .similarity import centred_ranks, spearman, ssim

ORDERS = ("top_down", "independent", "bottom_up")


def randomised_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules parameter randomisation resets, first to last: those with ``reset_parameters`` (as Quantus)."""
    return [(name, m) for name, m in model.named_modules() if hasattr(m, "reset_parameters")]


SIMILARITIES = ("spearman", "ssim")


def _check_similarity(metric: str, value: Any) -> list[str]:
    chosen = [value] if isinstance(value, str) else value
    if not isinstance(chosen, (list, tuple)) or not chosen or any(s not in SIMILARITIES for s in chosen):
        raise InvalidParameterError(
            f"{metric}: similarity must be 'spearman', 'ssim' or a list of them (the first is the main value), "
            f"got {value!r}."
        )
    return list(dict.fromkeys(chosen))


def _similarities(original: Tensor, new: Tensor, chosen: list[str], ranked: Tensor | None = None) -> list[Tensor]:
    """The ``chosen`` similarities of channel-summed maps, per pair (``ranked``: the original's centred ranks)."""
    a, b = original.to(torch.float64).sum(1), new.to(torch.float64).sum(1)
    return [spearman(a, b, ranked_a=ranked) if name == "spearman" else ssim(a, b) for name in chosen]


class ParameterRandomisation(Metric):
    """Similarity of the maps to those of the model with its layers' parameters re-initialised, layer
    by layer (the model parameter randomisation test, Adebayo et al., 2018; Quantus's ``MPRT``).

    ``order="top_down"`` randomises cumulatively from the output layer down (cascading),
    ``"independent"`` one layer at a time, ``"bottom_up"`` cumulatively from the input. Each layer
    is reset with its own ``reset_parameters()`` after seeding torch with ``seed + 1`` (Quantus's
    procedure), on a private copy of the model: the caller's model and random state are untouched.
    The value is Spearman's rank correlation per layer (``<method>_parameter_randomisation``,
    dims ``(..., parameter_randomisation_layer)``), beside SSIM (``..._ssim``); ``similarity``
    picks them (the first is the main value); maps are summed over channels; ``abs`` compares
    |map|. A method that passes the check loses similarity as layers
    are randomised. ``layers`` limits the test to the named modules.
    """

    id: ClassVar[str] = "parameter_randomisation"
    higher_is_better: ClassVar[bool] = False
    needs_model: ClassVar[bool] = True

    def __init__(
        self,
        *,
        order: str = "top_down",
        seed: int = 42,
        layers: list[str] | None = None,
        similarity: str | list[str] = ("spearman", "ssim"),
        abs: bool = False,
    ) -> None:
        self.similarity = _check_similarity(self.id, similarity)
        if order not in ORDERS:
            raise InvalidParameterError(
                f"parameter_randomisation: order must be one of {', '.join(map(repr, ORDERS))}, got {order!r}."
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidParameterError(f"parameter_randomisation: seed must be an int, got {seed!r}.")
        if layers is not None and (
            not isinstance(layers, (list, tuple)) or not all(isinstance(n, str) for n in layers)
        ):
            raise InvalidParameterError(
                f"parameter_randomisation: layers must be a list of module names, got {layers!r}."
            )
        self.order, self.seed, self.abs = order, seed, bool(abs)
        self.layers = list(layers) if layers is not None else None

    def _chosen(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        found = randomised_layers(model)
        if self.layers is not None:
            names = [n for n, _ in found]
            missing = [n for n in self.layers if n not in names]
            if missing:
                raise InvalidParameterError(
                    f"parameter_randomisation: no resettable module {missing[0]!r} in the model; it has {names[:20]}."
                )
            found = [(n, m) for n, m in found if n in self.layers]
        return found if self.order == "bottom_up" else found[::-1]

    def score(self, pairs: Pairs, context: Context) -> Score:
        assert context.model is not None
        private = copy.deepcopy(context.model)
        layers = self._chosen(private)
        if not layers:
            raise InvalidParameterError("parameter_randomisation: the model has no module with reset_parameters().")
        trained = {k: v.clone() for k, v in private.state_dict().items()} if self.order == "independent" else None
        original = pairs.maps.abs() if self.abs else pairs.maps
        ranked = centred_ranks(original.to(torch.float64).sum(1))  # once, not once per layer
        per_layer: list[list[Tensor]] = []
        for _, module in layers:
            if trained is not None:
                private.load_state_dict(trained)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed + 1)
                module.reset_parameters()
            new = context.explain(private, pairs.sample, pairs.target)
            per_layer.append(_similarities(original, new.abs() if self.abs else new, self.similarity, ranked))
        names = [n for n, _ in layers]
        dim = f"{self.id}_layer"
        curves = [Curve(torch.stack(values, 1), dim, names) for values in zip(*per_layer, strict=True)]
        return Score(curves[0], {name: curve for name, curve in zip(self.similarity[1:], curves[1:], strict=True)})


class DataRandomisation(Metric):
    """Similarity of the maps to those of ``model``, the same architecture trained on shuffled labels
    (the data randomisation test, Adebayo et al., 2018): Spearman's rank correlation, and SSIM as
    ``..._ssim``, of channel-summed maps. Lower means the method depends on what the model learnt."""

    id: ClassVar[str] = "data_randomisation"
    higher_is_better: ClassVar[bool] = False
    needs_model: ClassVar[bool] = True

    def __init__(
        self, *, model: nn.Module, similarity: str | list[str] = ("spearman", "ssim"), abs: bool = False
    ) -> None:
        self.similarity = _check_similarity(self.id, similarity)
        if not isinstance(model, nn.Module):
            raise InvalidParameterError(
                "data_randomisation: model must be the torch module trained on shuffled labels, "
                f"got {type(model).__name__}."
            )
        self._model = model
        self.abs = bool(abs)

    def params(self) -> dict[str, Any]:
        return {"model_fingerprint": model_fingerprint(self._model), "similarity": self.similarity, "abs": self.abs}

    def score(self, pairs: Pairs, context: Context) -> Score:
        private = copy.deepcopy(self._model)
        new = context.explain(private, pairs.sample, pairs.target)
        original = pairs.maps.abs() if self.abs else pairs.maps
        values = _similarities(original, new.abs() if self.abs else new, self.similarity)
        return Score(values[0], dict(zip(self.similarity[1:], values[1:], strict=True)))
