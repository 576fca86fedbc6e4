from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import xai_bench
from xai_bench import Attribution, InvalidParameterError, OneTarget, Passes, explain
from xai_bench.engine.memory import image_cost, images_per_pass, parse_budget
from xai_bench.testing import tiny_cnn

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4GiB", 4 * 2**30), ("512 MiB", 512 * 2**20), ("2GB", 2 * 10**9), ("1.5kib", 1536), (1000, 1000)],
)
def test_parse_budget(text, expected):
    assert parse_budget(text, CPU) == expected


@pytest.mark.parametrize("bad", ["4 parsecs", "", "-1GiB", 0, -5, True, [1]])
def test_parse_budget_rejects_nonsense(bad):
    with pytest.raises(InvalidParameterError, match="memory_budget"):
        parse_budget(bad, CPU)


def test_default_budget_is_a_share_of_available_memory():
    budget = parse_budget(None, CPU)
    assert budget >= 256 * 2**20 and budget % (256 * 2**20) == 0


def test_probe_counts_what_autograd_keeps_per_image():
    model = tiny_cnn()
    small = image_cost(model, torch.rand(1, 3, 16, 16, dtype=torch.float64))
    large = image_cost(model, torch.rand(1, 3, 32, 32, dtype=torch.float64))
    assert 3.5 < large.saved / small.saved < 4.5  # activations scale with the pixels
    assert small.saved > 16 * 16 * 6 * 8  # at least one activation of the first layer
    # Ten times the per-image bytes fits ten images.
    assert images_per_pass(small, 10 * (small.saved + 2 * small.input), backward=True) == 10
    assert images_per_pass(small, 1, backward=True) == 1


def test_auto_batches_follow_the_budget_and_results_do_not_change():
    model = tiny_cnn()
    x = torch.rand(6, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    methods = {"deeplift": {}, "integrated_gradients": {"n_steps": 6}, "occlusion": {"window": 4, "stride": 4}}
    roomy = explain(model, x, targets="all", methods=methods, passes=Passes(memory_budget="1GiB"))
    cost = image_cost(model, x)
    tight = explain(
        model, x, targets="all", methods=methods, passes=Passes(memory_budget=3 * (cost.saved + 2 * cost.input))
    )
    for method in methods:
        np.testing.assert_allclose(tight[method].values, roomy[method].values, rtol=1e-10, atol=1e-13)
        assert tight[method].attrs["max_images_per_pass"] < roomy[method].attrs["max_images_per_pass"]
        assert tight[method].attrs["images_per_pass"] <= tight[method].attrs["max_images_per_pass"]
    # IG runs on the model itself, whose per-image cost was measured above (DeepLIFT's is its rewrite's).
    assert tight["integrated_gradients"].attrs["max_images_per_pass"] == 3
    assert tight.attrs["memory_budget"] == 3 * (cost.saved + 2 * cost.input)


def test_out_of_memory_halves_the_pass_and_keeps_finished_work(add_plugin):
    calls = []

    class Greedy(OneTarget):
        """Fails like a GPU would when a pass holds more than two images."""

        id = "greedy"

        def attribute_target(self, model, inputs, target):
            calls.append(len(inputs))
            if len(inputs) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return Attribution(inputs * (target.view(-1, 1, 1, 1) + 1))

    add_plugin(Greedy)
    x = torch.rand(7, 3, 8, 8, dtype=torch.float64)
    ds = explain(tiny_cnn(), x, targets=[0, 2], methods=["greedy"], passes=8)
    np.testing.assert_allclose(ds["greedy"].values[:, 1], 3 * x.numpy())
    assert ds["greedy"].attrs["images_per_pass"] == 2
    assert calls[:2] == [7, 4] and max(calls[2:]) <= 2  # 8 -> 4 -> 2 images per pass
    assert sum(c for c in calls if c <= 2) == 2 * 7  # every sample once per target after settling


def test_other_errors_are_not_mistaken_for_memory(add_plugin):
    class Broken(OneTarget):
        """Always fails."""

        id = "broken"

        def attribute_target(self, model, inputs, target):
            raise RuntimeError("shape mismatch somewhere")

    add_plugin(Broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        explain(tiny_cnn(), torch.rand(2, 3, 8, 8, dtype=torch.float64), targets=0, methods=["broken"])


def _count_forwards(model):
    seen = []
    handle = model.fc.register_forward_hook(lambda m, i, o: seen.append(len(o)))
    return seen, handle


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("occlusion", {"window": 4, "stride": 4}),
        ("integrated_gradients", {"n_steps": 5}),
        ("saliency", {}),
        ("deeplift", {}),
        ("guided_backprop", {}),
    ],
)
def test_many_targets_share_forward_passes(method, params):
    model = tiny_cnn()
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    seen, handle = _count_forwards(model)
    # A rewritten view is checked once per model and hooks (the counting hook is one): not counted.
    explain(model, x, targets=[0], methods={method: params})
    seen.clear()
    try:
        one = explain(model, x, targets=[1], methods={method: params}, passes=64)
        images_one = sum(seen)
        seen.clear()
        four = explain(model, x, targets="all", methods={method: params}, passes=64)
        images_four = sum(seen)
    finally:
        handle.remove()
    assert images_four == images_one  # four targets, the same forward work
    np.testing.assert_allclose(four[method].sel(target=1).values, one[method].sel(target=1).values, rtol=1e-10)
    # Provenance records the parameters the method ran with, defaults included.
    recorded = json.loads(four[method].attrs["params"])
    assert set(params) <= set(recorded)
    assert recorded == json.loads(one[method].attrs["params"])
    if method == "integrated_gradients":
        assert recorded == {
            "n_steps": 5,
            "method": "gausslegendre",
            "baseline": 0.0,
            "baselines": None,
            "sample_baselines": None,
        }
    if method == "occlusion":
        assert recorded == {"window": [4, 4], "stride": [4, 4], "fill": 0.0}


def test_a_budget_below_the_smallest_pass_warns_and_still_computes_correctly():
    model = tiny_cnn()
    x = torch.rand(3, 3, 12, 12, dtype=torch.float64)
    with pytest.warns(xai_bench.XaiBenchWarning, match="deeplift: its smallest pass \\(2 images"):
        ds = explain(model, x, targets=[0], methods=["deeplift"], passes=Passes(memory_budget=1))
    assert ds["deeplift"].attrs["images_per_pass"] == 2  # an input and its reference
    assert np.abs(ds["deeplift_delta"].values).max() < 1e-12


def test_the_probe_frees_every_activation_it_measured():
    import gc
    import weakref

    model = tiny_cnn()
    refs = []
    handles = [
        m.register_forward_hook(lambda m, i, o: refs.append(weakref.ref(o)))
        for m in model.modules()
        if not list(m.children())
    ]
    try:
        image_cost(model, torch.rand(1, 3, 16, 16, dtype=torch.float64))
    finally:
        for h in handles:
            h.remove()
    gc.collect()
    assert refs and all(r() is None for r in refs)  # nothing kept alive by the counting hooks


def test_cpu_passes_are_capped_where_large_batches_stop_paying():
    from xai_bench.engine.memory import CPU_PASS_BYTES, ImageCost

    cost = ImageCost(saved=300 * 2**20, forward_peak=100 * 2**20, input=0)
    assert images_per_pass(cost, 8 * 2**30, backward=True, device=torch.device("cpu")) == CPU_PASS_BYTES // cost.saved
    assert images_per_pass(cost, 8 * 2**30, backward=True, device=torch.device("cuda")) == 27
    assert images_per_pass(cost, 2**29, backward=True, device=torch.device("cpu")) == 1  # the budget still rules
