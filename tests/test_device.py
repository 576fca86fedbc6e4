"""``device=``: where a call runs; the model goes back where it was, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xai_bench import DeviceMismatchError, InvalidParameterError, Passes, explain, profile, run
from xai_bench.api.preflight import on_device
from xai_bench.testing import tiny_cnn


def _snapshot(model):
    return [(p, p.detach().clone(), p.device) for p in [*model.parameters(), *model.buffers()]]


def _assert_unchanged(model, snapshot):
    now = [*model.parameters(), *model.buffers()]
    assert len(now) == len(snapshot)
    for tensor, (before, values, device) in zip(now, snapshot, strict=True):
        assert tensor is before and tensor.device == device
        assert torch.equal(tensor.detach().cpu(), values.cpu())


def test_device_cpu_given_explicitly_gives_the_default_maps():
    model = tiny_cnn()
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    snapshot = _snapshot(model)
    chosen = ["saliency", "deeplift"]
    given = explain(model, x, methods=chosen, targets=[0, 1], passes=Passes(device="cpu", batch_size=4))
    default = explain(model, x, methods=chosen, targets=[0, 1], passes=4)
    for method in chosen:
        np.testing.assert_array_equal(given[method].values, default[method].values)
    _assert_unchanged(model, snapshot)


def test_run_takes_a_device_and_leaves_the_model_where_it_was(tmp_path):
    model = tiny_cnn()
    images = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    snapshot = _snapshot(model)
    summary = run(
        model, images, methods=["saliency"], store=tmp_path / "m.zarr", passes=Passes(device="cpu", progress=False)
    )
    assert summary.computed == 5
    _assert_unchanged(model, snapshot)


@pytest.mark.parametrize(
    ("device", "message"),
    [("gpu", "device must be a torch device such as 'cpu' or 'cuda:0', got 'gpu'"), (3.5, "device must be")],
)
def test_a_device_torch_does_not_know_is_refused(device, message):
    with pytest.raises(InvalidParameterError, match=message):
        explain(
            tiny_cnn(), torch.rand(1, 3, 12, 12, dtype=torch.float64), methods="saliency", passes=Passes(device=device)
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where there is no GPU")
def test_asking_for_a_gpu_where_there_is_none_says_so():
    with pytest.raises(InvalidParameterError, match="no CUDA GPU is available here; use 'cpu'"):
        explain(
            tiny_cnn(), torch.rand(1, 3, 12, 12, dtype=torch.float64), methods="saliency", passes=Passes(device="cuda")
        )


def test_a_model_spread_over_devices_is_not_moved():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2, device="meta"))
    with pytest.raises(DeviceMismatchError, match="several devices"), on_device(model, torch.device("cpu")):
        pass


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to move the model to")
def test_explain_on_the_gpu_moves_the_model_back_bit_for_bit():
    model = tiny_cnn()
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    snapshot = _snapshot(model)
    on_gpu = explain(model, x, methods=["saliency", "deeplift"], targets=[0], passes=Passes(device="cuda"))
    _assert_unchanged(model, snapshot)
    on_cpu = explain(model, x, methods=["saliency", "deeplift"], targets=[0])
    np.testing.assert_allclose(on_gpu["deeplift"].values, on_cpu["deeplift"].values, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("device", ["meta", "mps"])
def test_devices_that_hold_no_values_or_are_absent_are_refused(device):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has mps")
    model = tiny_cnn()
    with pytest.raises(InvalidParameterError, match=f"{device} is not a device this torch can run on here"):
        explain(model, torch.rand(1, 3, 12, 12, dtype=torch.float64), methods="saliency", passes=Passes(device=device))
    assert next(model.parameters()).device.type == "cpu"


def test_profile_takes_a_device_gives_the_same_profile_and_leaves_the_model_where_it_was():
    model = tiny_cnn()
    images = torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    groups = torch.tensor([0, 1, 0, 1, 1, 0])
    snapshot = _snapshot(model)
    given = profile(model, images, layers=["input"], groups=groups, group_names=["a", "b"], passes=Passes(device="cpu"))
    default = profile(model, images, layers=["input"], groups=groups, group_names=["a", "b"])
    for name in default.data_vars:
        np.testing.assert_array_equal(given[name].values, default[name].values)
    _assert_unchanged(model, snapshot)
    with pytest.raises(InvalidParameterError, match="device must be a torch device"):
        profile(model, images, layers=["input"], groups=groups, group_names=["a", "b"], passes=Passes(device="gpu"))
