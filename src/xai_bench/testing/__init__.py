"""Tiny analytic models, generated shapes with their masks, and the conformance suite plugin authors can run.

At the edge, beside ``app``: may import the front doors and everything below them.
"""

from .commands import fails_in_one_line
from .conformance import CHECKS, assert_model_unchanged, check_attributor, check_metric, hook_counts, model_state
from .models import AdditiveModel, FunctionalReluMLP, LinearModel, ReluNet, randomised, tiny_cnn
from .shapes import make_shapes, train_shapes

__all__ = [
    "CHECKS",
    "AdditiveModel",
    "FunctionalReluMLP",
    "LinearModel",
    "ReluNet",
    "assert_model_unchanged",
    "check_attributor",
    "check_metric",
    "fails_in_one_line",
    "hook_counts",
    "make_shapes",
    "model_state",
    "randomised",
    "tiny_cnn",
    "train_shapes",
]
