"""A set of reference images as the expansion axis: the maps are the mean over the references."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from captum.attr import DeepLiftShap

from xai_bench import InvalidParameterError, explain
from xai_bench.testing import tiny_cnn
from xai_bench.testing.models import plain_cnn


@pytest.mark.parametrize("batch_size", [2, 4, 64])
def test_deeplift_with_three_baselines_is_the_mean_of_three_single_baseline_runs(gen, batch_size):
    model = tiny_cnn()
    x = torch.rand(4, 3, 12, 12, generator=gen, dtype=torch.float64)
    refs = torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)
    ds = explain(model, x, methods={"deeplift": {"baselines": refs}}, targets=[0, 2], passes=batch_size)
    singles = [explain(model, x, methods={"deeplift": {"baseline": r}}, targets=[0, 2]) for r in refs]
    mean_maps = np.mean([s["deeplift"].values for s in singles], axis=0)
    np.testing.assert_allclose(ds["deeplift"].values, mean_maps, rtol=1e-10, atol=1e-13)
    # Summation to delta, against the mean reference output.
    with torch.no_grad():
        mean_ref = model(refs).mean(0)
        expected = model(x)[:, [0, 2]] - mean_ref[[0, 2]]
    sums = ds["deeplift"].values.reshape(4, 2, -1).sum(2)
    np.testing.assert_allclose(sums, expected.numpy(), rtol=1e-9, atol=1e-12)
    assert np.abs(ds["deeplift_delta"].values).max() < 1e-10
    # The planner batches (sample, reference) pairs: at most batch_size images per pass.
    assert ds["deeplift"].attrs["images_per_pass"] <= max(batch_size, 2)


def test_deeplift_baseline_sets_equal_captums_deeplift_shap(gen):
    model = plain_cnn()
    x = torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)
    refs = torch.rand(4, 3, 12, 12, generator=gen, dtype=torch.float64)
    ds = explain(model, x, methods={"deeplift": {"baselines": refs}}, targets=torch.tensor([1, 3, 0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = DeepLiftShap(model).attribute(x.clone().requires_grad_(True), refs, target=torch.tensor([1, 3, 0]))
    np.testing.assert_allclose(ds["deeplift"].values[:, 0], expected.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_one_baseline_and_a_set_cannot_be_confused():
    refs = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64)
    with pytest.raises(InvalidParameterError, match="either baseline= .* or baselines="):
        explain(tiny_cnn(), x, methods={"deeplift": {"baseline": 0.5, "baselines": refs}}, targets=[0])
    with pytest.raises(InvalidParameterError, match=r"baselines must be a tensor of reference images, shape \(B"):
        explain(tiny_cnn(), x, methods={"deeplift": {"baselines": refs[0]}}, targets=[0])


@pytest.mark.parametrize("batch_size", [3, 64])
def test_integrated_gradients_with_a_set_is_the_mean_over_its_baselines(gen, batch_size):
    model = tiny_cnn()
    x = torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)
    refs = torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)
    params = {"n_steps": 6, "method": "riemann_trapezoid"}
    ds = explain(model, x, methods={"integrated_gradients": {**params, "baselines": refs}}, targets=[1],
                 passes=batch_size)  # fmt: skip
    singles = [
        explain(model, x, methods={"integrated_gradients": {**params, "baseline": r}}, targets=[1]) for r in refs
    ]
    mean_maps = np.mean([s["integrated_gradients"].values for s in singles], axis=0)
    np.testing.assert_allclose(ds["integrated_gradients"].values, mean_maps, rtol=1e-9, atol=1e-12)
    mean_delta = np.mean([s["integrated_gradients_delta"].values for s in singles], axis=0)
    np.testing.assert_allclose(ds["integrated_gradients_delta"].values, mean_delta, rtol=1e-8, atol=1e-12)
    with torch.no_grad():
        np.testing.assert_allclose(ds["score"].values[:, 0], model(x)[:, 1].numpy(), rtol=1e-12)


@pytest.mark.parametrize("method", ["deeplift", "integrated_gradients"])
@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_per_sample_baselines_give_each_sample_its_own_reference(gen, method, batch_size):
    model = tiny_cnn()
    x = torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)
    refs = torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)
    extra = {"n_steps": 6} if method == "integrated_gradients" else {}
    ds = explain(model, x, methods={method: {**extra, "sample_baselines": refs}}, targets=[0, 2], passes=batch_size)
    for i in range(3):
        alone = explain(model, x[i : i + 1], methods={method: {**extra, "baseline": refs[i]}}, targets=[0, 2])
        np.testing.assert_allclose(ds[method].values[i], alone[method].values[0], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(ds[f"{method}_delta"].values[i], alone[f"{method}_delta"].values[0], atol=1e-12)


def test_one_per_sample_and_a_set_of_baselines_cannot_be_confused():
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    refs = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    with pytest.raises(InvalidParameterError, match="pass one of baseline= .*, sample_baselines= .* and baselines="):
        explain(tiny_cnn(), x, methods={"deeplift": {"baselines": refs, "sample_baselines": refs}}, targets=[0])
    with pytest.raises(InvalidParameterError, match=r"sample_baselines has shape \(3, 3, 12, 12\) for inputs of shape"):
        explain(tiny_cnn(), x, methods={"integrated_gradients": {"sample_baselines": torch.rand(3, 3, 12, 12)}},
                targets=[0])  # fmt: skip
    with pytest.raises(InvalidParameterError, match=r"one reference per input, shape \(N, C, H, W\)"):
        explain(tiny_cnn(), x, methods={"deeplift": {"sample_baselines": refs[0]}}, targets=[0])


def test_per_sample_baselines_are_told_apart_in_provenance():
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    a = explain(tiny_cnn(), x, methods={"deeplift": {"sample_baselines": torch.zeros_like(x)}}, targets=[0])
    b = explain(tiny_cnn(), x, methods={"deeplift": {"sample_baselines": torch.ones_like(x)}}, targets=[0])
    assert "crc32=" in a["deeplift"].attrs["params"]
    assert a["deeplift"].attrs["params"] != b["deeplift"].attrs["params"]


def test_run_refuses_per_sample_baselines_before_any_work(tmp_path):
    from xai_bench import Passes, run

    x = torch.rand(4, 3, 12, 12, dtype=torch.float64)
    for method in ("deeplift", "integrated_gradients"):
        chosen = {method: {"sample_baselines": torch.zeros_like(x), "smooth": {"samples": 2}}}
        with pytest.raises(InvalidParameterError, match=f"{method}: run\\(\\) explains a data set block by block"):
            run(tiny_cnn(), x, methods=chosen, store=tmp_path / "s.zarr", passes=Passes(progress=False))
    assert not (tmp_path / "s.zarr").exists()
