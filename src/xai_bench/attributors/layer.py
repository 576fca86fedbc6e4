"""Attribution to a layer's activations: internal influence, layer conductance, and the shared layer hooks."""

from __future__ import annotations

from .base import Attributor

#: the classes this module registers as built-ins
LAYER_METHODS: tuple[type[Attributor], ...] = ()
