"""Tiny analytic models and the conformance suite third-party plugin authors can run.

At the edge, beside ``app``: may import the front doors and everything below them.
"""

from .conformance import CHECKS, assert_model_unchanged, check_attributor, check_metric, hook_counts, model_state
from .models import AdditiveModel, FunctionalReluMLP, LinearModel, ReluNet, randomised, tiny_cnn

__all__ = [
    "CHECKS",
    "AdditiveModel",
    "FunctionalReluMLP",
    "LinearModel",
    "ReluNet",
    "assert_model_unchanged",
    "check_attributor",
    "check_metric",
    "hook_counts",
    "model_state",
    "randomised",
    "tiny_cnn",
]
