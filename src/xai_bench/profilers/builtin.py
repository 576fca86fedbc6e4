"""Registers the built-in global profilers through the public hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..hookspecs import hookimpl


@hookimpl
def register_profilers(register: Callable[..., Any]) -> None:
    """No built-in profiler yet; neuron activation profiles register here."""
