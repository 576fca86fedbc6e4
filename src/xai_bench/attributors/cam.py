"""The class activation map family at a named layer, upsampled to the input."""

from __future__ import annotations

from .base import Attributor

#: the classes this module registers as built-ins
CAM_METHODS: tuple[type[Attributor], ...] = ()
