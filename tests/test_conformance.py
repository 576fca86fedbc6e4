from __future__ import annotations

import pytest

import xai_bench
from xai_bench.api.evaluating import list_metrics
from xai_bench.testing import CHECKS, check_attributor, check_metric

# Parameters that fit the conformance suite's 12 x 12 images.
SMALL = {
    "occlusion": {"window": 4, "stride": 2},
    "integrated_gradients": {"n_steps": 8},
    "feature_ablation": {"cell": 4},  # 9 grid features (the default 16 px cell makes one on 12 x 12 images)
    "shapley_sampling": {"cell": 4, "n_samples": 4},
    "kernel_shap": {"cell": 4, "n_samples": 16},
    "lime": {"cell": 4, "n_samples": 16},
    "internal_influence": {"layer": "conv3", "n_steps": 8},
    "layer_conductance": {"layer": "conv3", "n_steps": 8},
}
BUILTINS = [m for m, info in xai_bench.list_methods().items() if info["provider"] == "xai_bench.attributors.builtin"]


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("method", BUILTINS)
def test_builtin_methods_conform(method, check):
    CHECKS[check](method, SMALL.get(method))


@pytest.mark.parametrize("check", list(CHECKS))
def test_typed_methods_of_a_plugin_conform(add_plugin, check):
    """A plugin's typed method goes through the same suite as an id with params."""
    import torch

    from xai_bench import Attribution, OneTarget

    class Scaled(OneTarget):
        """The gradient times a factor."""

        id = "scaled_gradient"

        def __init__(self, *, factor: float = 1.0) -> None:
            self.factor = factor

        def attribute_target(self, model, inputs, target):
            x = inputs.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(model(x)[torch.arange(len(x)), target].sum(), x)
            return Attribution(self.factor * grad)

    add_plugin(Scaled)
    CHECKS[check](Scaled(factor=2.0))
    with pytest.raises(AssertionError, match="give a typed method its parameters when you make it"):
        check_attributor(Scaled(factor=2.0), {"factor": 3.0})


def test_typed_builtin_metrics_conform():
    check_metric(xai_bench.Deletion(patch=4, steps=3))


def test_conformance_catches_a_method_that_modifies_the_model(add_plugin):
    import torch

    from xai_bench import Attribution, OneTarget

    class Vandal(OneTarget):
        """Scales the model's weights while explaining."""

        id = "vandal"

        def attribute_target(self, model, inputs, target):
            with torch.no_grad():
                next(model.parameters()).mul_(1.0001)
            return Attribution(inputs.clone())

    add_plugin(Vandal)
    with pytest.raises(AssertionError, match="tensor 'conv1.weight' changed"):
        check_attributor("vandal")


METRIC_PARAMS = {
    "deletion": {"patch": 4, "steps": 3},
    "insertion": {"patch": 4, "steps": 3, "replacement": "blur", "sigma": 1.0},
    "top_k_intersection": {"k": 10},
    "parameter_randomisation": {"layers": ["fc", "conv3"]},
    # Two copies per map keep each check to a few re-explanations (the defaults, 10, pass too).
    "max_sensitivity": {"n_samples": 2},
    "avg_sensitivity": {"n_samples": 2},
    "local_lipschitz_estimate": {"n_samples": 2},
    "relative_input_stability": {"n_samples": 2},
    "infidelity": {"n_samples": 2},
}
BUILTIN_METRICS = [m for m, info in list_metrics().items() if info["provider"] == "xai_bench.metrics.builtin"]


@pytest.mark.parametrize("metric", [m for m in BUILTIN_METRICS if m != "data_randomisation"])
def test_builtin_metrics_conform(metric):
    check_metric(metric, METRIC_PARAMS.get(metric))


def test_data_randomisation_conforms():
    from xai_bench.testing import tiny_cnn

    check_metric("data_randomisation", {"model": tiny_cnn(seed=7)})


def test_conformance_catches_a_metric_that_is_not_deterministic(add_plugin):
    import pytest
    import torch

    from xai_bench.metrics.base import Metric, Score

    class Dice(Metric):
        id = "dice"

        def score(self, pairs, context):
            return Score(torch.rand(len(pairs.sample), dtype=torch.float64))

    add_plugin(Dice)
    with pytest.raises(AssertionError, match="dice: two runs of saliency_dice differ"):
        check_metric("dice")


def test_a_cam_given_a_layer_conforms_with_maps_of_the_input():
    """A CAM's layer= picks the layer it weighs; its maps are of the input, which the suite tells by
    the maps' own layer attribute, not by the parameter's name."""
    check_attributor("grad_cam", {"layer": "conv3"})
    check_attributor("score_cam", {"layer": "branch_conv"})
