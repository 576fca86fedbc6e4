from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import xai_bench
from xai_bench import (
    DeviceMismatchError,
    InvalidInputError,
    InvalidParameterError,
    InvalidTargetError,
    ModelOutputError,
    Passes,
    Targets,
    XaiBenchWarning,
    explain,
    open_maps,
)
from xai_bench.testing import model_state, tiny_cnn
from xai_bench.testing.conformance import assert_model_unchanged
from xai_bench.testing.models import TupleOutputModel

LABELS = ["covid", "viral", "bacterial", "normal"]


@pytest.fixture
def case(gen):
    return tiny_cnn(), torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)


def test_layout_coordinates_and_scores(case):
    model, x = case
    ds = explain(
        model,
        x,
        methods=["saliency", "deeplift"],
        sample_ids=["a", "b", "c"],
        targets=Targets(["viral", 3], class_names=LABELS),
    )
    assert ds["deeplift"].dims == ("sample", "target", "channel", "y", "x")
    assert ds["deeplift"].shape == (3, 2, 3, 12, 12)
    assert list(ds["target"].values) == ["viral", "normal"]
    assert list(ds["target_index"].values) == [1, 3]
    assert list(ds["sample"].values) == ["a", "b", "c"]
    with torch.no_grad():
        logits = model(x)[:, [1, 3]].numpy()
    np.testing.assert_allclose(ds["score"].values, logits, rtol=1e-12)
    assert ds["deeplift_delta"].dims == ("sample", "target")
    assert "saliency_delta" not in ds


def test_provenance(case):
    model, x = case
    ds = explain(model, x, targets=0, methods={"integrated_gradients": {"n_steps": 7}, "deeplift": {}})
    for key in ("xai_bench_version", "torch_version", "captum_version", "model_fingerprint", "model"):
        assert ds.attrs[key]
    assert ds.attrs["xai_bench_version"] == xai_bench.__version__
    assert ds.attrs["model"].endswith("ReluNet")
    ig = ds["integrated_gradients"].attrs
    assert json.loads(ig["params"]) == {
        "n_steps": 7,
        "method": "gausslegendre",
        "baseline": 0.0,
        "baselines": None,
        "sample_baselines": None,
    }
    assert ig["provider"] == "xai_bench.attributors.builtin"
    surgery = json.loads(ds["deeplift"].attrs["surgery"])
    assert "relu call sites of re-used modules unshared: 2" in surgery
    assert json.loads(ig["surgery"]) == []


def test_fingerprint_follows_the_weights(case):
    model, x = case
    first = explain(model, x, targets=0, methods=["saliency"]).attrs["model_fingerprint"]
    assert explain(model, x, targets=0, methods=["saliency"]).attrs["model_fingerprint"] == first
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    assert explain(model, x, targets=0, methods=["saliency"]).attrs["model_fingerprint"] != first


def test_all_targets(case):
    model, x = case
    ds = explain(model, x, targets="all", methods=["saliency"])
    assert list(ds["target"].values) == [0, 1, 2, 3]
    assert not np.isnan(ds["saliency"].values).any()


def test_predicted_multiclass_computes_only_the_argmax(case):
    model, x = case
    ds = explain(model, x, targets="predicted", methods=["saliency"])
    # One slot per sample, naming the arg-max class: the size follows the pairs, not the classes.
    assert ds["saliency"].dims == ("sample", "slot", "channel", "y", "x")
    assert ds.sizes["slot"] == 1
    with torch.no_grad():
        logits = model(x)
    np.testing.assert_array_equal(ds["target_index"].values[:, 0], logits.argmax(1).numpy())
    np.testing.assert_allclose(ds["score"].values[:, 0], logits.max(1).values.numpy())
    assert not np.isnan(ds["saliency"].values).any()


def test_predicted_multilabel_uses_the_threshold(case):
    model, x = case
    with torch.no_grad():
        probs = torch.sigmoid(model(x)).numpy()
    threshold = float(np.median(probs))
    ds = explain(model, x, methods=["deeplift"], targets=Targets("predicted", task="multilabel", threshold=threshold))
    assert ds.sizes["slot"] == 4  # max_targets defaults to every class
    for i in range(len(x)):
        used = ds["target_index"].values[i] >= 0
        assert sorted(ds["target_index"].values[i][used]) == list(np.flatnonzero(probs[i] > threshold))
        np.testing.assert_array_equal(~np.isnan(ds["deeplift"].values[i, :, 0, 0, 0]), used)
        np.testing.assert_array_equal(~np.isnan(ds["deeplift_delta"].values[i]), used)


def test_store_round_trip(case, tmp_path):
    model, x = case
    ds = explain(
        model,
        x,
        methods=["saliency", "deeplift"],
        store=tmp_path / "maps.zarr",
        sample_ids=["p1", "p2", "p3"],
        targets=Targets(["covid", "normal"], class_names=LABELS),
    )
    back = open_maps(tmp_path / "maps.zarr")
    xr.testing.assert_identical(back.load(), ds)
    import zarr

    assert zarr.open_group(tmp_path / "maps.zarr", mode="r")["deeplift"].chunks == (1, 2, 3, 12, 12)
    with pytest.raises(FileNotFoundError, match="No zarr store"):
        open_maps(tmp_path / "missing.zarr")


def test_training_mode_warns_runs_in_eval_and_is_restored(case):
    model, x = case
    model.train()
    model.fc.eval()  # mixed modes must come back as they were
    before = model_state(model)
    with pytest.warns(XaiBenchWarning, match="training mode"):
        ds = explain(model, x, targets=0, methods=["saliency"])
    assert_model_unchanged(before, model)
    model.eval()
    np.testing.assert_allclose(
        explain(model, x, targets=0, methods=["saliency"])["saliency"].values, ds["saliency"].values
    )


@pytest.mark.parametrize(
    ("make_input", "error", "message"),
    [
        (
            lambda x: x.clone().index_fill_(0, torch.tensor([1]), float("nan")),
            InvalidInputError,
            r"NaN or Inf.*samples \[1\]",
        ),
        (lambda x: x.clone().fill_(float("inf")), InvalidInputError, "NaN or Inf"),
        (lambda x: x[0], InvalidInputError, r"4 dimensions.*x.unsqueeze\(0\)"),
        (
            lambda x: x[:, :1],
            InvalidInputError,
            r"failed on inputs of shape \(1, 1, 12, 12\).*x.expand\(-1, 3, -1, -1\)",
        ),
        (
            lambda x: x.float(),
            InvalidInputError,
            "torch.float32 but the model's parameters are torch.float64",
        ),
        (lambda x: x.to(torch.int64), InvalidInputError, "floating-point"),
        (lambda x: x.numpy(), InvalidInputError, "must be a torch.Tensor"),
        (lambda x: x.to("meta"), DeviceMismatchError, "inputs are on meta but the model is on cpu"),
    ],
)
def test_bad_inputs_are_refused_and_nothing_changes(case, make_input, error, message):
    model, x = case
    before = model_state(model)
    with pytest.raises(error, match=message):
        explain(model, make_input(x), targets=0, methods=["deeplift", "guided_backprop"])
    assert_model_unchanged(before, model)


@pytest.mark.parametrize(
    ("targets", "labels", "message"),
    [
        (4, None, r"target 4 is out of range: the model has 4 outputs \(0..3\)"),
        (-1, None, "out of range"),
        ("covdi", LABELS, "unknown label 'covdi'. Did you mean 'covid'"),
        ("covid", None, r"no names were given: Targets\(\.\.\., class_names=\[\.\.\.\]\)"),
        ([0, 0], None, "same class twice"),
        ([], None, "empty"),
        (1.5, None, "fits no accepted form"),
    ],
)
def test_bad_targets(case, targets, labels, message):
    model, x = case
    with pytest.raises(InvalidTargetError, match=message):
        explain(model, x, methods=["saliency"], targets=Targets(targets, class_names=labels))


def test_bad_labels_and_task(case):
    model, x = case
    with pytest.raises(InvalidTargetError, match="class_names has 2 names but the model has 4 outputs"):
        explain(model, x, methods=["saliency"], targets=Targets(0, class_names=["a", "b"]))
    with pytest.raises(InvalidTargetError, match="task must be"):
        explain(model, x, methods=["saliency"], targets=Targets("predicted", task="multi"))


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        ({"occlusion": {"window": 0}}, "window must be a positive int"),
        ({"occlusion": {"window": 2, "stride": 3}}, "stride .* is larger than window"),
        ({"occlusion": {"window": 20}}, r"window \(20, 20\) is larger than the image"),
        ({"integrated_gradients": {"n_steps": 0}}, "n_steps must be a positive int"),
        ({"integrated_gradients": {"method": "simpson"}}, "method must be one of"),
        ({"deeplift": {"baseline": float("nan")}}, "baseline must be finite"),
        ({"deeplift": {"baseline": torch.zeros(2, 3, 12, 12)}}, "one reference image"),
        ({"deeplift": {"baseline": torch.zeros(3, 5, 5, dtype=torch.float64)}}, "does not broadcast"),
        ({"saliency": "abs"}, "must be a dict"),
        ([], "methods is empty"),
    ],
)
def test_bad_method_parameters(case, methods, message):
    model, x = case
    with pytest.raises(InvalidParameterError, match=message):
        explain(model, x, targets=0, methods=methods)


def test_bad_batch_size_and_sample_ids(case):
    model, x = case
    with pytest.raises(InvalidParameterError, match="batch_size must be 'auto' or a positive int"):
        explain(model, x, targets=0, methods=["saliency"], passes=0)
    with pytest.raises(InvalidInputError, match="sample_ids has 2 entries for 3 inputs"):
        explain(model, x, targets=0, methods=["saliency"], sample_ids=["a", "b"])
    with pytest.raises(InvalidInputError, match="unique"):
        explain(model, x, targets=0, methods=["saliency"], sample_ids=["a", "a", "b"])


def test_model_outputs_must_be_logits():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ModelOutputError, match="returned tuple"):
        explain(TupleOutputModel().eval(), x, targets=0, methods=["saliency"])
    with pytest.raises(
        ModelOutputError, match=r"returned shape \(1, 2, 8, 8\) for a batch of 1, expected \(1, classes\)"
    ):
        explain(nn.Conv2d(3, 2, 1).eval(), x, targets=0, methods=["saliency"])


def test_baseline_image_is_used(case):
    model, x = case
    ref = torch.full((3, 12, 12), 0.5, dtype=torch.float64)
    ds = explain(model, x, targets=[0], methods={"deeplift": {"baseline": ref}})
    with torch.no_grad():
        expected = (model(x) - model(ref.expand_as(x)))[:, 0].numpy()
    np.testing.assert_allclose(ds["deeplift"].values.sum(axis=(2, 3, 4))[:, 0], expected, atol=1e-12)


@pytest.mark.parametrize("method", ["occlusion", "integrated_gradients", "guided_backprop"])
def test_scores_are_the_model_logits_whichever_method_ran(case, method):
    model, x = case
    params = {"occlusion": {"window": 4, "stride": 4}, "integrated_gradients": {"n_steps": 3}}.get(method, {})
    ds = explain(model, x, targets=[2, 0], methods={method: params}, passes=2)
    with torch.no_grad():
        np.testing.assert_allclose(ds["score"].values, model(x)[:, [2, 0]].numpy(), rtol=1e-12)


def test_the_progress_bar_counts_maps_and_warnings_point_at_the_callers_line(case, capsys):
    model, x = case
    model.train()
    methods = {"saliency": {}, "occlusion": {"window": 4, "stride": 4}}
    with pytest.warns(XaiBenchWarning, match="training mode") as caught:
        explain(model, x, targets=[0, 2], methods=methods, passes=Passes(progress=True))
    model.eval()
    assert caught[0].filename == __file__
    err = capsys.readouterr().err
    # 3 samples x 2 targets x 2 methods = 12 maps.
    assert "12/12" in err and "map/s" in err


def test_a_model_whose_forward_asserts_on_the_input_gets_an_error_that_says_so():
    class SizeChecked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3 * 12 * 12, 2)

        def forward(self, x):
            assert x.shape[-1] == 12, f"Input width ({x.shape[-1]}) doesn't match model (12)."
            return self.fc(x.flatten(1))

    with pytest.raises(InvalidInputError) as caught:
        explain(SizeChecked().eval(), torch.rand(1, 3, 16, 16), methods="saliency", targets=[0])
    message = str(caught.value)
    assert "the model's forward failed on inputs of shape (1, 3, 16, 16)" in message
    assert "AssertionError: Input width (16) doesn't match model (12)." in message
