"""Per-sample targets and the slot layout: forms, captum's ``target=y``, stores, selection and resume."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from captum.attr import DeepLift, GuidedBackprop, InputXGradient, IntegratedGradients, Occlusion, Saliency
from torch import nn

from xai_bench import InvalidTargetError, Passes, Targets, XaiBenchWarning, explain, open_maps, run, select_map
from xai_bench.testing import tiny_cnn
from xai_bench.testing.data import SyntheticImages
from xai_bench.testing.models import plain_cnn

LABELS = ["covid", "viral", "bacterial", "normal"]


@pytest.fixture
def case(gen):
    return tiny_cnn(), torch.rand(4, 3, 12, 12, generator=gen, dtype=torch.float64)


CAPTUM = {
    "saliency": (Saliency, {}, {}),
    "input_x_gradient": (InputXGradient, {}, {}),
    "guided_backprop": (GuidedBackprop, {}, {}),
    "integrated_gradients": (IntegratedGradients, {"n_steps": 7}, {"n_steps": 7}),
    "deeplift": (DeepLift, {}, {}),
    "occlusion": (
        Occlusion,
        {"window": 4, "stride": 2},
        {"sliding_window_shapes": (3, 4, 4), "strides": (3, 2, 2)},
    ),
}


@pytest.mark.parametrize("method", list(CAPTUM))
def test_per_sample_targets_equal_captum_target_y(gen, method):
    model = plain_cnn()
    x = torch.rand(5, 3, 12, 12, generator=gen, dtype=torch.float64)
    y = torch.tensor([2, 0, 3, 3, 1])
    cls, ours, theirs = CAPTUM[method]
    ds = explain(model, x, targets=y, methods={method: ours}, passes=3)
    assert ds[method].dims == ("sample", "slot", "channel", "y", "x") and ds.sizes["slot"] == 1
    np.testing.assert_array_equal(ds["target_index"].values[:, 0], y.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # captum announces the hooks it sets
        expected = cls(model).attribute(x.clone().requires_grad_(True), target=y, **theirs).detach().numpy()
    # captum keeps occlusion maps and IG's quadrature weights in float32.
    rtol = 1e-5 if method in ("occlusion", "integrated_gradients") else 1e-10
    np.testing.assert_allclose(ds[method].values[:, 0], expected, rtol=rtol, atol=1e-9)


def test_numpy_targets_work_like_tensors(case):
    model, x = case
    as_tensor = explain(model, x, targets=torch.tensor([1, 0, 3, 2]), methods=["saliency"], passes=4)
    as_array = explain(model, x, targets=np.array([1, 0, 3, 2]), methods=["saliency"], passes=4)
    xr.testing.assert_identical(as_tensor.drop_attrs(), as_array.drop_attrs())
    scalar = explain(model, x, targets=np.int64(2), methods=["saliency"], passes=4)
    assert scalar["saliency"].dims[1] == "target" and list(scalar["target"].values) == [2]


def test_a_plain_list_is_the_same_classes_for_every_sample(case):
    model, x = case
    ds = explain(model, x, targets=[1, 2], methods=["saliency"])
    assert ds["saliency"].dims[1] == "target" and list(ds["target"].values) == [1, 2]


def test_lists_of_rows_and_masks_give_slots_as_wide_as_the_longest_row(case):
    model, x = case
    rows = [["covid"], ["viral", "normal"], [], [3, 0, 1]]
    ds = explain(model, x, methods=["saliency"], targets=Targets(rows, class_names=LABELS), passes=4)
    assert ds.sizes["slot"] == 3
    assert ds["target"].values.tolist() == [
        ["covid", "", ""], ["viral", "normal", ""], ["", "", ""], ["normal", "covid", "viral"],
    ]  # fmt: skip
    assert np.isnan(ds["saliency"].values[2]).all() and np.isnan(ds["score"].values[2]).all()
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 0] = mask[1, 1] = mask[1, 3] = mask[3, [0, 1, 3]] = True
    from_mask = explain(model, x, methods=["saliency"], targets=Targets(mask, class_names=LABELS), passes=4)
    # A mask lists each sample's classes in class order.
    assert from_mask["target_index"].values.tolist() == [[0, -1, -1], [1, 3, -1], [-1, -1, -1], [0, 1, 3]]
    for sample, target in [(1, "normal"), (3, "viral"), (0, "covid")]:
        np.testing.assert_array_equal(
            select_map(ds, "saliency", sample=sample, target=target).values,
            select_map(from_mask, "saliency", sample=sample, target=target).values,
        )
    wider = explain(model, x, methods=["saliency"], targets=Targets(rows, class_names=LABELS, max_targets=5))
    assert wider.sizes["slot"] == 5


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (torch.tensor([1, 0]), "hold 2 entries for 4 inputs"),
        (torch.tensor([0.0, 1.0, 2.0, 3.0]), "class indices"),
        (torch.ones(4, dtype=torch.bool), r"must be \(N, classes\)"),
        (torch.ones(4, 3, dtype=torch.bool), r"must be \(N, classes\) = \(4, 4\)"),
        (torch.zeros(4, 2, dtype=torch.long), "must be 1-D"),
        ([[0], [1], [2, 2], [3]], "sample 2 name the same class twice"),
        ([[0], 1, [2], [3]], "fits no accepted form"),
        ([[0], [1], [9], [3]], "out of range"),
    ],
)
def test_targets_that_fit_no_form_are_refused_clearly(case, targets, message):
    model, x = case
    with pytest.raises(InvalidTargetError, match=message):
        explain(model, x, targets=targets, methods=["saliency"])


def test_rows_longer_than_max_targets_are_refused(case):
    model, x = case
    with pytest.raises(InvalidTargetError, match="max_targets is 1"):
        explain(model, x, methods=["saliency"], targets=Targets([[0, 1], [1], [2], [3]], max_targets=1))


def test_predicted_multilabel_keeps_the_top_scoring_labels_within_max_targets(case):
    model, x = case
    with torch.no_grad():
        logits = model(x)
    with pytest.warns(XaiBenchWarning, match="beyond max_targets=1"):
        ds = explain(
            model,
            x,
            methods=["saliency"],
            targets=Targets("predicted", task="multilabel", threshold=0.0, max_targets=1),
        )
    np.testing.assert_array_equal(ds["target_index"].values[:, 0], logits.argmax(1).numpy())


def test_predicted_multiclass_has_one_slot_whatever_max_targets_says(case):
    model, x = case
    ds = explain(model, x, methods=["saliency"], targets=Targets("predicted", max_targets=5))
    assert ds.sizes["slot"] == 1


def test_predicted_on_a_thousand_classes_stores_one_slot_per_sample(gen, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1000))
    x = torch.rand(6, 3, 16, 16, generator=gen)
    ds = explain(model.eval(), x, targets="predicted", methods=["saliency"], store=tmp_path / "p.zarr")
    assert ds["saliency"].shape == (6, 1, 3, 16, 16)
    back = open_maps(tmp_path / "p.zarr")
    assert back["saliency"].shape == (6, 1, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_array_equal(back["target_index"].values[:, 0], model(x).argmax(1).numpy())


def test_slot_store_round_trips_and_selects_the_map_of_a_class(case, tmp_path):
    model, x = case
    rows = [["covid", "normal"], ["viral"], ["bacterial", "covid"], ["normal"]]
    ids = ["p1", "p2", "p3", "p4"]
    ds = explain(
        model,
        x,
        methods=["deeplift"],
        sample_ids=ids,
        store=tmp_path / "s.zarr",
        targets=Targets(rows, class_names=LABELS),
    )
    back = open_maps(tmp_path / "s.zarr")
    xr.testing.assert_identical(back.load(), ds)
    assert back["target"].dtype.kind == "U" and back["sample"].dtype.kind == "U"
    # The map of class c for sample s equals explaining that pair alone.
    alone = explain(model, x[2:3], methods=["deeplift"], targets=Targets(["covid"], class_names=LABELS))
    np.testing.assert_allclose(
        select_map(back, "deeplift", sample="p3", target="covid").values, alone["deeplift"].values[0, 0], rtol=1e-12
    )
    np.testing.assert_array_equal(
        select_map(back, "deeplift", sample="p3", target=0).values,
        select_map(back, "deeplift", sample="p3", target="covid").values,
    )
    with pytest.raises(KeyError, match=r"sample 'p2' has no map of target 'covid'; it has \['viral'\]"):
        select_map(back, "deeplift", sample="p2", target="covid")
    # The best slot of each sample names its highest-scoring target.
    for sample, row in zip(ids, rows, strict=True):
        best = back["score"].sel(sample=sample).idxmax("slot").values.item()
        scores = {t: back["score"].sel(sample=sample).values[i] for i, t in enumerate(row)}
        assert back["target"].sel(sample=sample, slot=best).item() == max(scores, key=scores.get)


def test_dense_string_coordinates_read_back_as_plain_strings(case, tmp_path):
    model, x = case
    explain(model, x, methods=["saliency"], store=tmp_path / "d.zarr", targets=Targets("all", class_names=LABELS))
    back = open_maps(tmp_path / "d.zarr")
    assert back["target"].dtype.kind == "U"
    best = back["score"].sel(sample=1).idxmax("target").values.item()
    assert best == LABELS[int(np.argmax(back["score"].sel(sample=1).values))]
    # Consolidated metadata: plain xarray opens the store without a warning (warnings are errors here).
    assert set(xr.open_zarr(tmp_path / "d.zarr").data_vars) == {"saliency", "score", "input"}


def test_a_slot_store_resumes_to_the_uninterrupted_one(tmp_path):
    data = SyntheticImages(6)
    targets = [[0], [1, 2], [3], [], [2, 0], [1]]
    args = {"methods": ["saliency", "deeplift"], "targets": targets, "samples_per_block": 2,
            "passes": Passes(batch_size=4, memory_budget="1GiB", progress=False)}  # fmt: skip
    whole = run(tiny_cnn(), data, store=tmp_path / "whole.zarr", **args)
    assert whole.computed == 6
    # Losing the done flags of two blocks is what a kill leaves behind; a rerun redoes only those.
    resumed = tmp_path / "resumed.zarr"
    run(tiny_cnn(), data, store=resumed, **args)
    group = zarr.open_group(resumed, mode="r+")
    group["done"][2:] = False
    for name in ("saliency", "deeplift", "deeplift_delta", "score", "target", "target_index"):
        group[name][2:] = group[name].fill_value
    summary = run(tiny_cnn(), data, store=resumed, **args)
    assert (summary.computed, summary.skipped) == (4, 2)
    back = open_maps(resumed).load()
    xr.testing.assert_identical(back, open_maps(tmp_path / "whole.zarr").load())
    assert back.sizes["slot"] == 2 and back["target_index"].values[1].tolist() == [1, 2]
