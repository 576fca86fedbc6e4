"""Timing helpers the benchmark scripts share (imported from the scripts' own folder)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def round_robin(calls: Sequence[Callable[[], object]], rounds: int) -> list[float]:
    """Median time of each callable, run in turn ``rounds`` times so drifts in load hit all alike."""
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for fn, kept in zip(calls, times, strict=True):
            kept.append(timed(fn))
    return [statistics.median(t) for t in times]
