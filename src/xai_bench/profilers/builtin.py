"""Registers the built-in global profilers through the public hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.hookspecs import hookimpl


@hookimpl
def register_profilers(register: Callable[..., Any]) -> None:
    from .naps import DeadFeatureMaps, NeuronActivationProfiles

    register(NeuronActivationProfiles)
    register(DeadFeatureMaps)
