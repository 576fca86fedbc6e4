"""Completeness: how far a method's maps miss summing to f(x) - f(baseline), from the deltas already stored."""

from __future__ import annotations

from typing import ClassVar

from .base import Context, Metric, Pairs, Score


class Completeness(Metric):
    """|sum(map) - (f(x) - f(baseline))| per pair, read from ``<method>_delta`` (IG, DeepLIFT);
    0 is exact. Methods without a delta are skipped."""

    id: ClassVar[str] = "completeness"
    higher_is_better: ClassVar[bool] = False

    def applies_to(self, pairs: Pairs) -> str | None:
        return None if pairs.delta is not None else "the method reports no completeness delta"

    def score(self, pairs: Pairs, context: Context) -> Score:
        assert pairs.delta is not None
        return Score(pairs.delta.abs().to(dtype=pairs.delta.dtype))
