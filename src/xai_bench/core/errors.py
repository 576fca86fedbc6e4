"""One exception tree for xai_bench; domain errors also subclass the matching builtin."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable
from typing import Any


class XaiBenchError(Exception):
    """Base class of every error raised by xai_bench."""


class XaiBenchWarning(UserWarning):
    """Base class of every warning issued by xai_bench."""


def warn(message: str, category: type[Warning] = XaiBenchWarning) -> None:
    """Issue an :class:`XaiBenchWarning` (or ``category``) attributed to the caller's code, outside xai_bench.

    The stack level is found by walking out of this package (and contextlib, whose context
    managers sit between a ``with`` statement and the code in them), so the warning points at
    the user's call however deep inside the library it was raised.
    """
    import sys

    package = __name__.rpartition(".core.")[0] or __name__.split(".")[0]
    frame, level = sys._getframe(1), 1
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not (module == package or module.startswith(package + ".") or module == "contextlib"):
            break
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)


def deprecated(old: str, new: str) -> None:
    """Warn that ``old`` is deprecated: it still works in this release and goes in the next; use ``new``."""
    warn(f"{old} is deprecated and will be removed in xai_bench 0.4; use {new}.", DeprecationWarning)


def renamed(old: dict[str, Any], where: str, was: str, now: str, value: Any, default: Any = None) -> Any:
    """``value`` of the parameter ``now`` of ``where()``, or the one given in ``old`` under its 0.2 name ``was``
    (taken out of ``old``, with a warning); both at once (``value`` not its ``default``) is an error."""
    if was not in old:
        return value
    deprecated(f"{where}({was}=...)", f"{where}({now}=...)")
    if value is not default:
        raise InvalidParameterError(f"{where}() got {now}= and {was}=: give it once, as {now}=.")
    return old.pop(was)


def refuse_unknown(old: dict[str, Any], where: str, accepted: Iterable[str]) -> None:
    """A keyword left in ``old`` is not a parameter of ``where()``: say so as Python does, with the closest name."""
    if old:
        name = next(iter(old))
        raise TypeError(f"{where}() got an unexpected keyword argument {name!r}.{did_you_mean(name, accepted)}")


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` entries of ``choices`` that look like ``word``."""
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return " Did you mean 'a', 'b'?" for close matches of ``word``, or "" when nothing is close."""
    matches = close_matches(word, choices)
    return f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""


def _suggestion(word: str, choices: Iterable[str]) -> str:
    choices = sorted(choices)
    return f"{did_you_mean(word, choices)} Valid choices: {', '.join(repr(c) for c in choices) or '(none)'}."


class _MessageKeyError(KeyError):
    # KeyError.__str__ quotes its argument; a sentence reads better unquoted.
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownMethodError(XaiBenchError, _MessageKeyError):
    """A method or profiler id that no loaded plugin provides."""

    def __init__(self, method_id: str, available: Iterable[str], kind: str = "method", note: str = "") -> None:
        self.method_id = method_id
        super().__init__(f"Unknown {kind} {method_id!r}.{_suggestion(method_id, available)}{note}")


class DuplicateMethodError(XaiBenchError, ValueError):
    """Two plugins registered the same id."""


class UnknownParameterError(XaiBenchError, TypeError):
    """A method was given a keyword argument it does not accept."""

    def __init__(self, method_id: str, name: str, valid: Iterable[str]) -> None:
        super().__init__(f"Method {method_id!r} has no parameter {name!r}.{_suggestion(name, valid)}")


class InvalidParameterError(XaiBenchError, ValueError):
    """A method parameter has a value the method cannot use."""


class InvalidInputError(XaiBenchError, ValueError):
    """The inputs are not a finite (N, C, H, W) float tensor the model accepts."""


class InvalidTargetError(XaiBenchError, ValueError):
    """A target is out of range, an unknown label name or of an unsupported kind."""


class ModelOutputError(XaiBenchError, ValueError):
    """The model does not return (N, classes) logits."""


class DeviceMismatchError(XaiBenchError, ValueError):
    """Inputs and model live on different devices."""


class SurgeryError(XaiBenchError, RuntimeError):
    """The model cannot be rewritten so that a rule-based method is correct on it."""


class StoreMismatchError(XaiBenchError, ValueError):
    """An existing store was written by a different run (methods, parameters, model, targets or data)."""


class StoreExistsError(XaiBenchError, FileExistsError):
    """A store would be written where one exists already."""


class StoreDamagedError(XaiBenchError, ValueError):
    """Chunks of a store are missing or fail their checksums."""


class PluginError(XaiBenchError, RuntimeError):
    """A plugin failed to load or registered something invalid."""


__all__ = [
    "DeviceMismatchError",
    "DuplicateMethodError",
    "InvalidInputError",
    "InvalidParameterError",
    "InvalidTargetError",
    "ModelOutputError",
    "PluginError",
    "StoreDamagedError",
    "StoreExistsError",
    "StoreMismatchError",
    "SurgeryError",
    "UnknownMethodError",
    "UnknownParameterError",
    "XaiBenchError",
    "XaiBenchWarning",
]
