"""The pluggy hooks xai_bench calls; built-ins and third-party plugins implement the same ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "xai_bench"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_attributors(register: Callable[..., Any]) -> None:
    """Register local attribution methods: call ``register(AttributorSubclass)`` once per method."""


@hookspec
def register_profilers(register: Callable[..., Any]) -> None:
    """Register global profilers: call ``register(GlobalProfilerSubclass)`` once per profiler."""


@hookspec
def register_metrics(register: Callable[..., Any]) -> None:
    """Register metrics that score maps: call ``register(MetricSubclass)`` once per metric."""
