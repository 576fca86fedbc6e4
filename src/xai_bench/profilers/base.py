"""The ``GlobalProfiler`` interface: a streaming accumulator over a data set."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import xarray as xr
from torch import Tensor

from ..core.checks import json_safe

#: module name of the tap on the model's input rather than on a layer
INPUT = "input"


class GlobalProfiler(abc.ABC):
    """Accumulates statistics batch by batch; profiling a data set equals merging its parts' profiles.

    Subclasses set ``id``, take their parameters as keyword-only ``__init__`` arguments after
    ``layers`` and ``groups`` (passed on to this class), and implement :meth:`update`,
    :meth:`merge` and :meth:`result`. ``layers`` maps each tap's label to the module it reads
    (``"input"`` for the model's input); ``groups`` names the groups.
    """

    id: ClassVar[str]

    def __init__(self, *, layers: Mapping[str, str], groups: Sequence[str]) -> None:
        self._layers = dict(layers)
        self._groups = list(groups)

    @property
    def layers(self) -> list[str]:
        """Labels of the profiled taps, in order."""
        return list(self._layers)

    @property
    def groups(self) -> list[str]:
        """The group names, in the order of the membership columns."""
        return list(self._groups)

    def is_input(self, layer: str) -> bool:
        """True when the tap labelled ``layer`` reads the model's input, not a module."""
        return self._layers[layer] == INPUT

    def params(self) -> dict[str, Any]:
        """Return this instance's parameters, JSON-safe, for provenance."""
        return {k: json_safe(v) for k, v in vars(self).items() if not k.startswith("_")}

    def same_setup(self, other: GlobalProfiler) -> bool:
        """True when ``other`` profiles the same taps and groups with the same parameters."""
        return (
            type(other) is type(self)
            and other._layers == self._layers
            and other._groups == self._groups
            and other.params() == self.params()
        )

    @abc.abstractmethod
    def update(self, activations: dict[str, Tensor], groups: Tensor) -> None:
        """Add a batch: ``activations[layer]`` is (N, ...), ``groups`` is (N, G) membership (bool)."""

    @abc.abstractmethod
    def merge(self, other: GlobalProfiler) -> GlobalProfiler:
        """Return the profile of both parts' data; neither part is changed."""

    @abc.abstractmethod
    def result(self) -> xr.Dataset:
        """Return the profile as a labelled Dataset."""
