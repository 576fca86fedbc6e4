from __future__ import annotations

import pytest

import xai_bench
from xai_bench.testing import CHECKS, check_attributor

# Parameters that fit the conformance suite's 12 x 12 images.
SMALL = {"occlusion": {"window": 4, "stride": 2}, "integrated_gradients": {"n_steps": 8}}
BUILTINS = [m for m, info in xai_bench.methods().items() if info["provider"] == "xai_bench.attributors.builtin"]


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("method", BUILTINS)
def test_builtin_methods_conform(method, check):
    CHECKS[check](method, SMALL.get(method))


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
