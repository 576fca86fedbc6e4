"""``Passes``: how a call's work runs (images per pass, memory budget, device, progress bar), checked once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from ..core.checks import batch_size_arg
from ..core.errors import InvalidParameterError, deprecated
from ..engine.memory import parse_budget
from ..engine.progress import Progress, check_progress
from .preflight import check_device


@dataclass(frozen=True)
class Passes:
    """How :func:`~xai_bench.explain`, :func:`~xai_bench.run`, :func:`~xai_bench.evaluate` and
    :func:`~xai_bench.profile` put their work through the model. Results do not depend on it beyond
    rounding (a fixed ``batch_size`` gives bit-identical reruns).

    ``batch_size`` is the images in one pass (integrated gradients' path points, occlusion's
    windows and DeepLIFT's references count as images); ``"auto"`` caps it by ``memory_budget``
    (bytes or a string such as ``"4GiB"``; default half the free GPU memory, or of the available
    RAM on CPU) and picks the fastest measured size under the cap, halving it if an allocation
    still fails. ``device`` (e.g. ``"cuda"``) runs the call there: the inputs are copied to it and
    the model is moved there for the call and back afterwards, bit for bit; by default everything
    runs where the inputs are. ``progress`` draws a bar on stderr: ``True`` always, ``False``
    never, ``"auto"`` for long calls when stderr is a terminal.

    Every field is checked when the object is made, so a bad value fails before any work. Where a
    call takes ``passes=``, a plain int (or ``"auto"``) is the batch size and a dict gives fields.
    """

    batch_size: int | str = "auto"
    memory_budget: int | str | None = None
    device: str | torch.device | None = None
    progress: Progress = "auto"

    def __post_init__(self) -> None:
        batch_size_arg(self.batch_size)
        if self.memory_budget is not None:
            parse_budget(self.memory_budget, torch.device("cpu"))  # the form only; what is free is read later
        check_device(self.device)
        check_progress(self.progress)

    @classmethod
    def of(cls, value: Passes | int | str | Mapping[str, Any] | None) -> Passes:
        """``value`` as :class:`Passes`: itself, the defaults for None, a batch size, or a dict of fields."""
        if value is None:
            return cls()
        if isinstance(value, Passes):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {f.name for f in fields(cls)})
            if unknown:
                raise InvalidParameterError(
                    f"passes has no field {unknown[0]!r}; it takes batch_size, memory_budget, device and progress."
                )
            return cls(**value)
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            return cls(batch_size=value)
        raise InvalidParameterError(
            f"passes must be a Passes, a batch size (an int or 'auto') or a dict of its fields, got {value!r}."
        )

    @property
    def fixed_images(self) -> int | None:
        """The fixed images per pass, or None for ``"auto"``."""
        return batch_size_arg(self.batch_size)

    def chosen_device(self) -> torch.device | None:
        """The device the call runs on (``"cuda"`` meaning the current GPU), or None: where the inputs are."""
        return check_device(self.device)

    def budget(self, device: torch.device) -> int:
        """The memory budget in bytes on ``device``: the one asked for, or the default share of what is free."""
        return parse_budget(self.memory_budget, device)

    def with_fields(self, **changes: Any) -> Passes:
        """A copy with ``changes`` (checked again)."""
        return Passes(**{**asdict(self), **changes})


#: ``explain``, ``run``, ``evaluate`` and ``profile`` took these as keywords of their own until 0.3
OLD_PASS_KEYWORDS = ("batch_size", "memory_budget", "device", "progress")


def passes_from(passes: object, old: dict[str, Any], where: str) -> Passes:
    """``passes=`` as :class:`Passes`, or built from the deprecated keywords in ``old`` (removed from it), with a
    warning for each that names the new spelling; both at once is an error."""
    moved = {name: old.pop(name) for name in OLD_PASS_KEYWORDS if name in old}
    for name in moved:
        deprecated(f"{where}({name}=...)", f"passes=Passes({name}=...) (or passes={{{name!r}: ...}})")
    if moved and passes is not None:
        raise InvalidParameterError(
            f"{where}() got passes= and {', '.join(moved)}=: give {', '.join(moved)} inside passes=Passes(...) only."
        )
    return Passes(**moved) if moved else Passes.of(passes)  # type: ignore[arg-type]
