from __future__ import annotations

import os

import captum.attr  # noqa: F401
import pytest
import torch
from hypothesis import HealthCheck, settings

# captum.attr imports IPython.display when IPython is installed, and IPython's jedi raises the
# recursion limit on import; importing it here keeps that out of hypothesis' examples, which
# warn when the limit changes under them.

settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def fresh_plugins():
    """Reload plugins before and after a test that changes what is installed or allowed."""
    from xai_bench.plugins import reset_plugin_manager

    reset_plugin_manager()
    yield
    reset_plugin_manager()
