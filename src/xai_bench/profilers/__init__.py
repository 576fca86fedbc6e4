"""Global methods: the ``GlobalProfiler`` interface and the built-in profilers."""

from .base import GlobalProfiler

__all__ = ["GlobalProfiler"]
