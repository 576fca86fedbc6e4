"""The ``GlobalProfiler`` interface: a streaming accumulator over a data set."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import xarray as xr
from torch import Tensor


class GlobalProfiler(abc.ABC):
    """Accumulates statistics batch by batch; profiling a data set equals merging its parts' profiles.

    Subclasses set ``id``, take parameters as keyword-only ``__init__`` arguments and implement
    :meth:`update`, :meth:`merge` and :meth:`result`.
    """

    id: ClassVar[str]

    def params(self) -> dict[str, Any]:
        """Return this instance's parameters, JSON-safe, for provenance."""
        from ..attributors.base import json_safe

        return {k: json_safe(v) for k, v in vars(self).items() if not k.startswith("_")}

    def bind(self, layers: Sequence[str], groups: Sequence[str]) -> None:  # noqa: B027 - optional hook
        """Learn the layer and group names before the first :meth:`update`."""

    @abc.abstractmethod
    def update(self, activations: dict[str, Tensor], groups: Tensor) -> None:
        """Add a batch: ``activations[layer]`` is (N, ...), ``groups`` is (N, G) membership (bool)."""

    @abc.abstractmethod
    def merge(self, other: GlobalProfiler) -> GlobalProfiler:
        """Return the profile of both parts' data; neither part is changed."""

    @abc.abstractmethod
    def result(self) -> xr.Dataset:
        """Return the profile as a labelled Dataset."""
