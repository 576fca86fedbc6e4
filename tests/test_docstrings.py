"""Every public function, class, method and hook has a docstring, so the API reference shows each one."""

from __future__ import annotations

import inspect

import pytest
import torch

import xai_bench
import xai_bench.surgery
import xai_bench.testing
from xai_bench.core import hookspecs

MODULES = (xai_bench, xai_bench.testing, xai_bench.surgery)
PUBLIC = [(m, name) for m in MODULES for name in m.__all__ if name not in ("__version__", "CHECKS")]
HOOKS = [name for name in vars(hookspecs) if name.startswith("register_")]


def _members(cls: type) -> list[tuple[str, object]]:
    """The public callables and properties a class defines itself (inherited ones are checked where defined)."""
    found = []
    fields = getattr(cls, "__dataclass_fields__", {})
    for name, value in vars(cls).items():
        # A module's forward is described by its class; dataclass fields are data, not methods.
        if name.startswith("_") or name in fields or (name == "forward" and issubclass(cls, torch.nn.Module)):
            continue
        if isinstance(value, (classmethod, staticmethod)):
            value = value.__func__
        if callable(value) or isinstance(value, property):
            found.append((name, value))
    return found


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[f"{m.__name__}.{n}" for m, n in PUBLIC])
def test_each_public_name_has_a_docstring(module, name):
    obj = getattr(module, name)
    assert (inspect.getdoc(obj) or "").strip(), f"{module.__name__}.{name} has no docstring"
    if inspect.isclass(obj) and not issubclass(obj, BaseException):
        # A method that implements a base class's documented one (a method's attribute() of Attributor's)
        # shows that doc in the reference: inspect.getdoc finds it.
        undocumented = [m for m, _ in _members(obj) if not (inspect.getdoc(getattr(obj, m)) or "").strip()]
        assert undocumented == [], f"{module.__name__}.{name}: {undocumented} have no docstring"


@pytest.mark.parametrize("name", HOOKS)
def test_each_hook_has_a_docstring(name):
    assert len(HOOKS) == 3
    assert (inspect.getdoc(getattr(hookspecs, name)) or "").strip()
