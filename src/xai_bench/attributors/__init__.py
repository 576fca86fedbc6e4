"""Local attribution methods: the ``Attributor`` interface and the built-in methods."""

from .base import Attribution, Attributor, Cost, Prepared

__all__ = ["Attribution", "Attributor", "Cost", "Prepared"]
