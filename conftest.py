"""Settings every test of the repository shares: the library's (tests/) and the COVID-19 study's
(examples/covid_cxr/tests/)."""

from __future__ import annotations

import os

import captum.attr  # noqa: F401
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
