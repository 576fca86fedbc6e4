"""Registers the built-in metrics through the public hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.hookspecs import hookimpl

#: Built-in metric ids; scripts may rely on them.
BUILTIN_METRICS = (
    "pointing_game",
    "energy_pointing_game",
    "relevance_mass",
    "relevance_rank",
    "top_k_iou",
    "top_k_intersection",
    "deletion",
    "insertion",
    "parameter_randomisation",
    "data_randomisation",
    "completeness",
    "max_sensitivity",
    "avg_sensitivity",
    "local_lipschitz_estimate",
    "relative_input_stability",
    "infidelity",
    "sparseness",
    "complexity",
)


@hookimpl
def register_metrics(register: Callable[..., Any]) -> None:
    from .completeness import Completeness
    from .complexity import COMPLEXITY_METRICS
    from .localisation import (
        EnergyPointingGame,
        PointingGame,
        RelevanceMass,
        RelevanceRank,
        TopKIntersection,
        TopKIoU,
    )
    from .perturbation import Deletion, Insertion
    from .randomisation import DataRandomisation, ParameterRandomisation
    from .robustness import ROBUSTNESS_METRICS

    for cls in (
        PointingGame, EnergyPointingGame, RelevanceMass, RelevanceRank, TopKIoU, TopKIntersection,
        Deletion, Insertion, ParameterRandomisation, DataRandomisation, Completeness,
        *ROBUSTNESS_METRICS, *COMPLEXITY_METRICS,
    ):  # fmt: skip
        register(cls)
