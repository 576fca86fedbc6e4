"""Perturbation methods over a feature mask: feature ablation, Shapley value sampling, KernelSHAP, LIME."""

from __future__ import annotations

from .base import Attributor

#: the classes this module registers as built-ins
PERTURBATION_METHODS: tuple[type[Attributor], ...] = ()
