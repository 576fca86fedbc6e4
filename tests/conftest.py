"""Fixtures of the library's tests (the shared settings are in the repository's conftest.py)."""

from __future__ import annotations

import socket

import pytest
import torch


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def fresh_plugins():
    """Reload plugins before and after a test that changes what is installed or allowed."""
    from xai_bench.plugins.manager import reset_plugin_manager

    reset_plugin_manager()
    yield
    reset_plugin_manager()


@pytest.fixture
def add_plugin(monkeypatch, fresh_plugins):
    """Register classes as a throwaway plugin module, through the public hooks, for one test."""
    import sys
    import types

    import xai_bench
    from xai_bench import Attributor, GlobalProfiler, hookimpl
    from xai_bench.metrics.base import Metric

    def add(*classes, name: str = "test_plugin"):
        module = types.ModuleType(name)

        @hookimpl
        def register_attributors(register):
            for cls in classes:
                if issubclass(cls, Attributor):
                    register(cls)

        @hookimpl
        def register_profilers(register):
            for cls in classes:
                if issubclass(cls, GlobalProfiler):
                    register(cls)

        @hookimpl
        def register_metrics(register):
            for cls in classes:
                if issubclass(cls, Metric):
                    register(cls)

        module.register_attributors = register_attributors
        module.register_profilers = register_profilers
        module.register_metrics = register_metrics
        monkeypatch.setitem(sys.modules, name, module)
        xai_bench.get_plugin_manager().register(module, name=name)
        return module

    return add


@pytest.fixture(scope="session")
def dask_default_port_taken():
    """Hold dask's default dashboard port 8787, as another program on a shared machine may."""
    sock = socket.socket()
    try:
        sock.bind(("", 8787))
        sock.listen()
    except OSError:
        pass  # held by another program already: the same condition
    yield
    sock.close()
