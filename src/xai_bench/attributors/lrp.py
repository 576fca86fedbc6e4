"""Layer-wise relevance propagation with rules and named composites, on a rewritten view of the model."""

from __future__ import annotations

from .base import Attributor

#: the classes this module registers as built-ins
LRP_METHODS: tuple[type[Attributor], ...] = ()
