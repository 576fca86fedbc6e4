"""xai_bench.report and `xai-bench report`: what the page holds, and what it refuses."""

from __future__ import annotations

import re

import matplotlib
import matplotlib.pyplot
import numpy as np
import pytest
import torch
import xarray as xr
from PIL import Image

from xai_bench import InvalidParameterError, Passes, Targets, evaluate, explain, open_maps, profile, report, run
from xai_bench.app.cli import main
from xai_bench.testing import tiny_cnn


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stores")
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    model = tiny_cnn().float()
    maps = folder / "maps" / "net.zarr"
    methods = {"saliency": {}, "occlusion": {"window": 4, "stride": 4}}
    run(
        model,
        images,
        methods=methods,
        store=maps,
        store_inputs=True,
        targets=Targets([[0], [1], [0, 1], [1], [0]], max_targets=2),
        passes=Passes(progress=False),
    )
    evaluate(open_maps(maps), model=model, inputs=images, metrics=["deletion"], into=maps)
    prof = folder / "profiles" / "net.zarr"
    profile(model, images, layers=["input"], groups=torch.tensor([0, 1, 0, 1, 0]), group_names=["a", "b"], store=prof)
    return maps, prof, images, model


def test_the_page_shows_every_sample_target_and_method_over_its_input(stores, tmp_path):
    maps, prof, _, _ = stores
    index = report([maps, prof], tmp_path / "r", per_page=2, title="Tiny <study>")
    page = index.read_text()
    assert "<title>Tiny &lt;study&gt;</title>" in page  # text is escaped
    assert page.count("<section class='sample'") == 5
    assert re.findall(r"data-page='(\d)'", page) == ["0", "0", "1", "1", "2"]
    assert "maps/net" in page and "profiles/net" in page  # same file names: told apart by their folders
    assert "<h2 id='metrics'>Metrics</h2>" in page and "<h3>maps/net</h3>" in page and "deletion" in page
    assert "99th percentile" in page and "http" not in page.replace("http-equiv", "")  # nothing fetched online
    pictures = sorted(p.name for p in (tmp_path / "r" / "img").iterdir())
    # Sample 2 has two targets and each target a row: input, saliency, occlusion.
    # Files are named store-sample-target-method by position: names from labels could collide.
    assert {"0-2-0-0.png", "0-2-1-0.png", "0-2-1-1.png", "0-2-input.png"} <= set(pictures)
    assert any(name.startswith("profile0-") for name in pictures)
    for name in re.findall(r"src='img/([^']+)'", page):
        assert name in pictures, name
    overlay = np.asarray(Image.open(tmp_path / "r" / "img" / "0-2-1-0.png").convert("RGB"), dtype=float)
    assert overlay.shape[:2] == (16, 16) and overlay.std() > 5


def test_a_report_replaces_its_own_folder_but_nothing_else(stores, tmp_path):
    maps, _, _, _ = stores
    report([maps], tmp_path / "r", per_page=10)
    (tmp_path / "r" / "img" / "stale.png").write_bytes(b"")
    report([maps], tmp_path / "r", per_page=10)
    assert not (tmp_path / "r" / "img" / "stale.png").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(InvalidParameterError, match="exists and is not a report"):
        report([maps], tmp_path / "mine")
    (tmp_path / "mine" / "index.html").write_text("<html>a site of one's own</html>")
    with pytest.raises(InvalidParameterError, match="exists and is not a report"):
        report([maps], tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_bad_arguments_are_refused_with_what_to_do(stores, tmp_path):
    maps = stores[0]
    with pytest.raises(InvalidParameterError, match="per_page must be a positive integer, got 0"):
        report([maps], tmp_path / "r", per_page=0)
    with pytest.raises(FileNotFoundError, match="no store at"):
        report([tmp_path / "absent.zarr"], tmp_path / "r")
    with pytest.raises(InvalidParameterError, match="two stores share a name"):
        report([maps, maps], tmp_path / "r")
    with pytest.raises(InvalidParameterError, match="no stores given"):
        report([], tmp_path / "r")


def test_datasets_in_memory_are_reported_side_by_side(stores, tmp_path):
    _, _, images, model = stores
    a = explain(model, images[:2], methods="saliency", targets=[0])
    b = explain(model, images[:3], methods="saliency", targets=[0])
    page = report({"first": a, "second": b}, tmp_path / "r").read_text()
    assert page.count("<section class='sample'") == 3
    assert "first: not in this store" in page  # the third sample exists in the second only


def test_the_command_writes_the_page_and_prints_its_path(stores, tmp_path, capsys):
    maps, prof, _, _ = stores
    assert main(["report", str(maps), str(prof), "--out", str(tmp_path / "r"), "--per-page", "3"]) == 0
    assert capsys.readouterr().out.strip().endswith("index.html")
    assert (tmp_path / "r" / "index.html").exists()


def test_extreme_logits_of_a_multilabel_store_are_shown_as_probabilities_without_overflow(tmp_path):
    weights = torch.zeros(2, 3 * 4 * 4)
    weights[0] = -100.0  # logits near -4800 and +4800 for an image of ones: far beyond exp's range
    weights[1] = 100.0
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2, bias=False)).eval()
    model[1].weight.data = weights
    ds = explain(model, torch.ones(1, 3, 4, 4), methods="saliency", targets=[0, 1])
    ds.attrs["task"] = "multilabel"  # as a multilabel run records it: the page adds sigmoid probabilities
    page = report({"net": ds}, tmp_path / "r").read_text()
    assert "p 0.000" in page and "p 1.000" in page


def test_the_menu_lists_the_sections_in_the_order_of_the_page(stores, tmp_path):
    maps, prof, _, _ = stores
    page = report([maps, prof], tmp_path / "r").read_text()
    menu = re.search(r"<nav class='contents'>(.*?)</nav>", page).group(1)
    assert re.findall(r"href='#(\w+)'", menu) == re.findall(r"<h2 id='(\w+)'>", page) == ["metrics", "profiles",
                                                                                          "samples"]  # fmt: skip


def test_layers_are_shown_in_network_order_whatever_order_they_were_named_in(stores, tmp_path):
    _, _, images, model = stores
    named = {"late": "conv3", "early": "conv1", "input": "input"}  # neither network nor alphabetical order
    ds = profile(model, images, layers=named, groups=torch.tensor([0, 1, 0, 1, 0]), group_names=["a", "b"],
                 profilers=["naps", "dead_feature_maps"], passes=Passes(progress=False))  # fmt: skip
    page = report({"net": ds}, tmp_path / "r").read_text()
    assert re.findall(r"alt='NAPs of (\w+)'", page) == ["input", "early", "late"]
    from xai_bench.app.viz import plot_dead_feature_maps

    fig = plot_dead_feature_maps(ds)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["early", "late"]
    matplotlib.pyplot.close(fig)


def test_a_dead_feature_map_chart_without_dead_maps_says_none():
    from xai_bench.app.viz import plot_dead_feature_maps

    ds = xr.Dataset({"dead_share": ("layer", [0.0, 0.0])}, coords={"layer": ["a", "b"]})
    fig = plot_dead_feature_maps(ds)
    texts = [t.get_text() for t in fig.axes[0].texts]
    matplotlib.pyplot.close(fig)
    assert any(t.startswith("none") for t in texts) and "0.0%" in texts  # the bars say their values too


def test_each_target_is_marked_true_predicted_or_both(tmp_path):
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 3, bias=False))
    model[2].weight.data = torch.diag(torch.tensor([5.0, 5.0, -5.0]))  # classes 0 and 1 predicted, 2 not
    ds = explain(
        model.eval(),
        torch.ones(1, 3, 4, 4),
        methods="saliency",
        sample_ids=["img"],
        targets=Targets([[0, 1, 2]], class_names=["x", "y", "z"]),
    )
    ds.attrs["task"] = "multilabel"
    page = report({"net": ds}, tmp_path / "r", truth={"img": ["y", "z"]}).read_text()
    marks = re.findall(r"<div class='label'>(\w)(?:<br><b class='mark'>([^<]*)</b>)?", page)
    assert marks == [("x", "predicted"), ("y", "true and predicted"), ("z", "true")]


def test_metric_tables_say_which_direction_is_better_and_tell_close_scores_apart(stores, tmp_path):
    maps, _, _, _ = stores
    page = report([maps], tmp_path / "r").read_text()
    assert "deletion (lower is better)" in page
    from xai_bench.app.report import _distinct

    # Equal to three digits, apart at five: as many digits as it takes, small values in scientific form.
    assert _distinct(np.array([0.00123441, 0.00123449, np.nan])) == ["0.0012344", "0.0012345", "–"]
    assert _distinct(np.array([1.5e-7, 2.5e-7])) == ["1.5e-07", "2.5e-07"]
    assert _distinct(np.array([0.25, 0.25])) == ["0.25", "0.25"]
