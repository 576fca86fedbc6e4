"""Complexity metrics: how concentrated a map is."""

from __future__ import annotations

from .base import Metric

#: the classes this module registers as built-ins
COMPLEXITY_METRICS: tuple[type[Metric], ...] = ()
