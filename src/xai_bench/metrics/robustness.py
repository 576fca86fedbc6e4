"""Robustness metrics: how much maps change when the input changes a little."""

from __future__ import annotations

from .base import Metric

#: the classes this module registers as built-ins
ROBUSTNESS_METRICS: tuple[type[Metric], ...] = ()
