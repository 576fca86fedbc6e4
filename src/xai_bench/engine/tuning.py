"""Choose the pass size: the memory budget caps it, measured throughput picks it.

On a CPU, images per second peak at small passes (bigger ones miss the caches); on a GPU they
grow until the device is saturated. So, as cuDNN's benchmark mode does for its kernels, the
first passes of a method time a few candidate sizes (powers of two up to the cap), climbing from
a starting size while a neighbour is faster, and later passes use the fastest. The measurements
are remembered per model, input shape, dtype, device, method, parameters, targets and memory cap;
the passes that measure do real work, so tuning costs only the time they run slower than the best.

Results agree across pass sizes to rounding; a fixed ``batch_size`` gives bit-identical reruns.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from torch import nn

from ..core.cache import cache_of

#: a candidate must be this much faster per pair than the best so far to count as better
TOLERANCE = 0.03
#: timed passes per candidate (the fastest counts: noise only ever slows a pass down)
REPEATS = 2
#: images of the first candidate on a CPU: measured fastest or near it for ImageNet-size CNNs
CPU_START_IMAGES = 8


@dataclass
class Measurements:
    """Seconds per pair of each measured pass size, for one tuning key."""

    warm: bool = False
    seconds: dict[int, list[float]] = field(default_factory=dict)
    #: the largest size known to fit after an out-of-memory error, if any
    cap: int | None = None

    def best(self, size: int) -> float | None:
        times = self.seconds.get(size, [])
        return min(times) if len(times) >= REPEATS else None


def measurements(model: nn.Module, key: Hashable) -> Measurements:
    """The remembered measurements of ``key`` for ``model`` (new ones on first use)."""
    return cache_of(model, "measurements").setdefault(key, Measurements())


def candidates(cap: int) -> list[int]:
    """Powers of two below ``cap``, and ``cap`` itself."""
    sizes = [1 << i for i in range(cap.bit_length()) if 1 << i < cap]
    return [*sizes, cap]


def next_probe(sizes: list[int], start: int, known: Measurements) -> tuple[int, bool]:
    """Return (size, decided): the next size to measure, or the fastest one once the climb is over.

    Climbs up from ``start`` while each larger size is faster; if the first step up is not,
    climbs down instead. Sizes not measured yet are probed in that order.
    """
    if known.best(start) is None:
        return start, False
    i0 = sizes.index(start)
    best = start
    for direction in (sizes[i0 + 1 :], sizes[:i0][::-1]):
        for size in direction:
            t = known.best(size)
            if t is None:
                return size, False
            if t >= known.best(best) * (1 - TOLERANCE):
                break
            best = size
        if best != start:
            break  # the climb up paid off: no need to look down
    return best, True


class PassSizer:
    """Pairs per pass for one method run: fixed by the caller, or tuned under the memory cap."""

    def __init__(
        self, *, cap: int, fixed: int | None, total: int, known: Measurements, start: int, minimum: int = 1
    ) -> None:
        self.fixed = fixed
        self.known = known
        self.minimum = minimum
        cap = min(cap, known.cap) if known.cap is not None else cap
        self.cap = max(minimum, cap)
        # Sizes above the call's work could never be measured in it.
        self.sizes = candidates(max(minimum, min(self.cap, total)))
        self.start = max(s for s in self.sizes if s <= max(start, self.sizes[0]))
        self.used = fixed if fixed is not None else self.start

    def size(self) -> int:
        """Pairs for the next pass."""
        if self.fixed is not None:
            return self.fixed
        if not self.known.warm:
            return self.start  # the first pass pays for allocations and kernel set-up: not timed
        size, _ = next_probe(self.sizes, self.start, self.known)
        return size

    def record(self, size: int, seconds: float) -> None:
        """Note a finished pass of the size :meth:`size` asked for."""
        self.used = size
        if self.fixed is not None:
            return
        if not self.known.warm:
            self.known.warm = True
            return
        times = self.known.seconds.setdefault(size, [])
        if len(times) < REPEATS:
            times.append(seconds / size)

    def shrink(self, wanted: int, size: int) -> bool:
        """After an out-of-memory error in a pass of ``size`` (``wanted`` asked for): halve the pass size.

        Returns False when the pass cannot shrink.
        """
        if size <= self.minimum:
            return False
        smaller = max(self.minimum, wanted // 2)
        if smaller >= size:
            smaller = max(self.minimum, size // 2)
        self.known.cap = smaller if self.known.cap is None else min(self.known.cap, smaller)
        self.cap = min(self.cap, smaller)
        if self.fixed is not None:
            self.fixed = min(self.fixed, smaller)
        self.sizes = [s for s in self.sizes if s < smaller] + [smaller]
        self.start = min(self.start, smaller)
        self.known.seconds = {s: t for s, t in self.known.seconds.items() if s <= smaller}
        return True

    @property
    def settled(self) -> int:
        """The size in use now: the fastest measured so far, or the last one run."""
        if self.fixed is not None:
            return self.fixed
        measured = {s: self.known.best(s) for s in self.sizes if self.known.best(s) is not None}
        return min(measured, key=measured.get) if measured else self.used
