"""``ExplainJob``: one frozen specification of what ``explain`` computes, which ``run`` sends to every block
and dask worker, so that the two share their arguments by construction."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..core.checks import to_json
from ..core.errors import InvalidParameterError, deprecated, refuse_unknown
from ..core.normalization import Normalization, check_normalization
from ..plugins import registry
from .passes import OLD_PASS_KEYWORDS, Passes, passes_from
from .targets import Targets

MethodsArg = Any  # an id, an instance, a list of ids and instances, or {id: params}

#: ``explain`` and ``run`` took these as keywords of their own until 0.3; now they are Targets' fields
OLD_TARGET_KEYWORDS = {
    "labels": "class_names", "task": "task", "threshold": "threshold", "max_targets": "max_targets", "output": "output",
}  # fmt: skip
#: the parameters ``explain`` and ``run`` share, the job's fields
JOB_PARAMETERS = ["methods", "targets", "passes", "store_inputs", "input_normalization"]


@dataclass(frozen=True, eq=False)
class ExplainJob:
    """Methods, targets, passes, and whether and how the inputs are kept: everything a call's maps depend on
    besides the model, the inputs and their ids. ``image_shape`` is set by ``run``: every block's images
    are checked against its first sample's."""

    methods: MethodsArg
    targets: Targets
    passes: Passes
    store_inputs: bool
    input_normalization: Normalization | None
    image_shape: tuple[int, ...] | None = None

    @classmethod
    def build(
        cls,
        *,
        methods: MethodsArg,
        targets: object,
        passes: object,
        store_inputs: bool,
        input_normalization: Any,
        old: dict[str, Any],
        where: str,
        accepted: Sequence[str],
    ) -> ExplainJob:
        """The job of a call, its arguments checked; ``old`` holds the call's other keywords: the deprecated
        spellings of 0.2 are folded in with a warning each, anything else is refused."""
        folded_passes = passes_from(passes, old, where)
        folded_targets = _targets_from(targets, old, where)
        refuse_unknown(old, where, [*accepted, *OLD_TARGET_KEYWORDS, *OLD_PASS_KEYWORDS])
        if not isinstance(store_inputs, bool):
            raise InvalidParameterError(f"store_inputs must be True or False, got {store_inputs!r}.")
        job = cls(methods, folded_targets, folded_passes, store_inputs, check_normalization(input_normalization))
        _ = job.specs  # unknown methods and parameters fail before any work
        return job

    @functools.cached_property
    def specs(self) -> list[tuple[registry.Entry, Any]]:
        """The methods as (registry entry, attributor instance) pairs, resolved once per job (a block's job,
        made by :meth:`for_block`, resolves them again: its instances are its own)."""
        return registry.resolve(registry.attributors, self.methods)

    def specs_json(self) -> str:
        return to_json({entry.id: attributor.params() for entry, attributor in self.specs})

    def for_block(self, block: Sequence[int]) -> ExplainJob:
        """The job of the samples at ``block`` of a run: per-sample targets cut to them, no bar of its own."""
        return replace(self, targets=self.targets.take(block), passes=self.passes.with_fields(progress=False))

    def options(self) -> dict[str, Any]:
        """What makes two runs the same run, besides the model, the methods and the data (JSON-safe)."""
        normalization = self.input_normalization
        return {
            **self.targets.options(),
            "store_inputs": self.store_inputs,
            "input_normalization": normalization.to_json() if normalization is not None else None,
        }


def _targets_from(targets: object, old: dict[str, Any], where: str) -> Targets:
    moved = {new: old.pop(name) for name, new in OLD_TARGET_KEYWORDS.items() if name in old}
    for name, new in OLD_TARGET_KEYWORDS.items():
        if new in moved:
            deprecated(f"{where}({name}=...)", f"targets=Targets(..., {new}=...)")
    if not moved:
        return Targets.of(targets)
    if isinstance(targets, Targets):
        raise InvalidParameterError(
            f"{where}() got targets=Targets(...) and {', '.join(moved)}=: give them inside Targets(...) only."
        )
    return Targets(targets, **moved)
