"""Progress bars for long calls: ``progress=True``, ``False`` or ``"auto"`` (the default of ``explain`` and ``run``)."""

from __future__ import annotations

import sys
from typing import Any, Literal

from tqdm import tqdm

from ..core.errors import InvalidParameterError

Progress = bool | Literal["auto"]

#: ``"auto"`` draws no bar for a call that puts fewer images than this through the model.
AUTO_MIN_IMAGES = 256
#: ``"auto"`` draws the bar only once the call has run this many seconds (tqdm's ``delay``).
AUTO_DELAY_S = 2.0


def check_progress(progress: object) -> Progress:
    """``progress`` itself, or an error naming the three choices."""
    if progress != "auto" and not isinstance(progress, bool):
        raise InvalidParameterError(f"progress must be True, False or 'auto', got {progress!r}.")
    return progress  # type: ignore[return-value]


def progress_bar(progress: Progress, *, planned_images: int, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, drawn or not as ``progress`` says.

    ``True`` always draws it and ``False`` never does. ``"auto"`` draws it when stderr is a
    terminal, the call plans at least ``AUTO_MIN_IMAGES`` images through the model
    (``planned_images``: each method's images per (sample, target) pair, e.g. IG's steps or
    occlusion's windows, times the pairs), and the call has run for ``AUTO_DELAY_S`` seconds: a
    short call stays quiet, a long one in a terminal shows how far it is. In a notebook, or to
    log a redirected run, pass ``progress=True``.
    """
    if check_progress(progress) == "auto":
        terminal = bool(getattr(sys.stderr, "isatty", lambda: False)())
        return tqdm(disable=not (terminal and planned_images >= AUTO_MIN_IMAGES), delay=AUTO_DELAY_S, **kwargs)
    return tqdm(disable=not progress, **kwargs)
