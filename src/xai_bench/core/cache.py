"""One cache per model object: what xai_bench measured or built for it, kept while the model lives.

The memory probe's costs, the pass-size measurements, the traced graph, the rewritten views, the
checks of those views against the model and the class counts probed all live here, each under its own kind, and go with
the model when it is garbage collected. :func:`forget` drops them at once (``xai_bench.forget``):
after a change the caches cannot see, or to free the memory they hold.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from torch import nn

_per_model: weakref.WeakKeyDictionary[nn.Module, dict[str, dict[Any, Any]]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()

#: the kinds of what is cached, for forget()'s callers and the docs
KINDS = ("costs", "measurements", "trace", "rewrites", "checked views", "probes")


def cache_of(model: nn.Module, kind: str) -> dict[Any, Any]:
    """The cache of ``kind`` (one of :data:`KINDS`) for ``model``, made empty on first use."""
    assert kind in KINDS, kind
    with _lock:
        return _per_model.setdefault(model, {}).setdefault(kind, {})


def forget(model: nn.Module, *kinds: str) -> None:
    """Drop what is cached for ``model``: every kind, or those named. The next call measures, traces and
    checks again; results do not change, only the time they take."""
    with _lock:
        if not kinds:
            _per_model.pop(model, None)
            return
        for kind in kinds:
            _per_model.get(model, {}).pop(kind, None)


def cached_models() -> int:
    """How many models have something cached (for tests of the cache's lifetime)."""
    with _lock:
        return len(_per_model)
