"""Local attribution methods: the ``Attributor`` interface and the built-in methods."""

from .base import Attributor, Cost, Prepared

__all__ = ["Attributor", "Cost", "Prepared"]
