"""Threads may run models side by side; tracing one with torch.fx needs every other model stopped.

While ``fx.symbolic_trace`` runs it patches ``torch.nn.Module.__call__`` and ``__getattr__`` for
the whole process, so a forward pass in another thread at that moment goes through the tracer and
fails ("module is not installed as a submodule") or records into its graph. Calls that run models
hold :func:`running` (shared); a trace holds :func:`tracing` (exclusive), which waits for the others
to finish their current call, and new calls wait while a trace is waiting or running. A thread that
traces inside its own call steps out of its shared hold while it waits, so two calls that both
trace never wait on each other. Models run outside xai_bench's calls are not covered.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_state = threading.Condition()
_running = 0  # shared holds over all threads
_tracer: int | None = None  # the thread that holds the exclusive hold
_depth = 0  # its nested exclusive holds
_waiting = 0  # threads waiting to trace; new calls let them go first
_local = threading.local()


def _held() -> int:
    return getattr(_local, "held", 0)


@contextlib.contextmanager
def running() -> Iterator[None]:
    """Hold the shared side while this thread runs models (nested holds are free)."""
    global _running
    me = threading.get_ident()
    with _state:
        if _held() == 0 and _tracer != me:
            while _tracer is not None or _waiting:
                _state.wait()
        _running += 1
    _local.held = _held() + 1
    try:
        yield
    finally:
        _local.held = _held() - 1
        with _state:
            _running -= 1
            _state.notify_all()


@contextlib.contextmanager
def tracing() -> Iterator[None]:
    """Hold the exclusive side: no other thread runs a model under :func:`running` meanwhile."""
    global _running, _tracer, _depth, _waiting
    me = threading.get_ident()
    held = _held()
    with _state:
        if _tracer == me:
            _depth += 1
        else:
            _running -= held  # step out, so that another thread waiting to trace is not waiting on us
            _waiting += 1
            _state.notify_all()
            try:
                while _tracer is not None or _running:
                    _state.wait()
            except BaseException:  # interrupted while waiting: step back in as we were
                _running += held
                raise
            finally:
                _waiting -= 1
                _state.notify_all()
            _tracer, _depth = me, 1
    try:
        yield
    finally:
        with _state:
            _depth -= 1
            if _depth == 0:
                _tracer = None
                _running += held
                _state.notify_all()
