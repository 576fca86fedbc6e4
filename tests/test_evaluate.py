"""evaluate(): layouts, stores, a third-party metric, and the caller's model and random state left alone."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch

import xai_bench
from xai_bench import InvalidParameterError, Passes, StoreExistsError, explain, open_maps, run, verify_store
from xai_bench.api.evaluating import evaluate, list_metrics
from xai_bench.metrics.base import Metric, Score
from xai_bench.testing import tiny_cnn
from xai_bench.testing.conformance import assert_model_unchanged, model_state


def _images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 12, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


class MapMean(Metric):
    """The mean of each map (a third-party metric for tests)."""

    id = "map_mean"

    def __init__(self, *, scale: float = 1.0) -> None:
        self.scale = scale

    def score(self, pairs, context):
        return Score(pairs.maps.flatten(1).mean(1).to(torch.float64) * self.scale)


def test_a_third_party_metric_is_listed_and_runs_like_the_built_ins(monkeypatch, fresh_plugins, capsys):
    module = types.ModuleType("map_mean_plugin")

    @xai_bench.hookimpl
    def register_metrics(register):
        register(MapMean)

    module.register_metrics = register_metrics
    monkeypatch.setitem(sys.modules, "map_mean_plugin", module)
    xai_bench.get_plugin_manager().register(module, name="map_mean_plugin")
    assert list_metrics()["map_mean"]["provider"] == "map_mean_plugin"
    from xai_bench.app.cli import main

    assert main(["metrics"]) == 0
    assert "map_mean" in capsys.readouterr().out
    ds = explain(tiny_cnn(), _images(), methods=["saliency"], targets=[0, 1])
    out = evaluate(ds, metrics={"map_mean": {"scale": 2.0}})
    expected = 2 * ds["saliency"].mean(("channel", "y", "x")).values
    np.testing.assert_allclose(out["saliency_map_mean"].values, expected)
    assert json.loads(out["saliency_map_mean"].attrs["params"]) == {"scale": 2.0}
    assert out["saliency_map_mean"].attrs["provider"] == "map_mean_plugin"


def test_slot_layouts_score_only_the_pairs_with_maps():
    model = tiny_cnn()
    ds = explain(model, _images(), methods=["deeplift"], targets=[[0], [1, 2], []])
    out = evaluate(ds, model=model, metrics="completeness")
    values = out["deeplift_completeness"].values
    assert out["deeplift_completeness"].dims == ("sample", "slot")
    assert np.isfinite(values[0, 0]) and np.isnan(values[0, 1]) and np.isfinite(values[1]).all()
    assert np.isnan(values[2]).all()
    np.testing.assert_allclose(values[1], np.abs(ds["deeplift_delta"].values[1]))


def test_metrics_go_into_the_maps_store_each_array_whole(tmp_path):
    model = tiny_cnn()
    store = tmp_path / "maps.zarr"
    explain(model, _images(), methods=["saliency", "deeplift"], targets=[0, 2], store=store)
    chosen = {"deletion": {"patch": 4, "steps": 3}, "completeness": {}}
    out = evaluate(open_maps(store), model=model, metrics=chosen, into=store, passes=4)
    back = open_maps(store, checksums=True)
    np.testing.assert_array_equal(back["saliency_deletion_curve"].values, out["saliency_deletion_curve"].values)
    assert list(back["deletion_fraction"].values) == [0, 1 / 3, 2 / 3, 1]
    assert verify_store(store).ok
    with pytest.raises(StoreExistsError, match="already holds deeplift_completeness, deeplift_deletion"):
        evaluate(open_maps(store), model=model, metrics=chosen, into=store)
    again = evaluate(open_maps(store), model=model, metrics=chosen, into=store, overwrite=True, passes=4)
    np.testing.assert_array_equal(again["deeplift_deletion"].values, out["deeplift_deletion"].values)


def test_metrics_go_into_a_run_store_too(tmp_path):
    model = tiny_cnn().float()
    x = _images(5).float()
    store = tmp_path / "run.zarr"
    run(model, x, methods=["saliency"], targets=[1], store=store, store_inputs=True,
        samples_per_block=2, passes=Passes(progress=False))  # fmt: skip
    evaluate(open_maps(store), model=model, metrics={"insertion": {"patch": 6, "steps": 2}}, into=store)
    back = open_maps(store, checksums=True)
    assert back["saliency_insertion"].shape == (5, 1) and np.isfinite(back["saliency_insertion"].values).all()


def test_randomisation_leaves_the_model_and_the_random_state_alone():
    model = tiny_cnn()
    ds = explain(model, _images(2), methods=["saliency"], targets=[0])
    before = model_state(model)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    evaluate(ds, model=model, metrics="parameter_randomisation")
    assert torch.equal(torch.rand(3), expected)
    assert_model_unchanged(before, model)


def test_what_a_metric_needs_is_asked_for_plainly():
    ds = explain(tiny_cnn(), _images(2), methods=["saliency"], targets=[0], store_inputs=False)
    with pytest.raises(InvalidParameterError, match="deletion call the model: pass it as evaluate"):
        evaluate(ds, metrics="deletion")
    with pytest.raises(xai_bench.InvalidInputError, match="need the inputs"):
        evaluate(ds, model=tiny_cnn(), metrics="deletion")
    with pytest.raises(InvalidParameterError, match="the maps have no method 'deeplift'"):
        evaluate(ds, metrics="completeness", methods=["deeplift"])
    with pytest.raises(xai_bench.UnknownMethodError, match="Unknown metric 'deletions'"):
        evaluate(ds, metrics="deletions")


def test_the_evaluate_command_writes_metrics_into_the_store(tmp_path, capsys):
    from xai_bench.app.cli import main
    from xai_bench.testing.models import tiny_cnn32

    store = tmp_path / "m.zarr"
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    explain(tiny_cnn32(), x, methods=["saliency", "deeplift"], targets=[1], store=store)
    masks = np.zeros((2, 1, 32, 32), dtype=bool)
    masks[:, :, 4:20, 4:20] = True
    np.save(tmp_path / "masks.npy", masks)
    argv = ["evaluate", str(store), "--model", "xai_bench.testing.models:tiny_cnn32", "--masks",
            str(tmp_path / "masks.npy"), "--batch-size", "8", "--metrics"]  # fmt: skip
    assert main([*argv, '{"deletion": {"patch": 8, "steps": 4}, "pointing_game": {}, "completeness": {}}']) == 0
    out = capsys.readouterr().out
    assert "metric variables written to" in out and "skipped saliency_completeness" in out
    back = open_maps(store, checksums=True)
    assert back["deeplift_deletion_curve"].shape == (2, 1, 5) and "saliency_pointing_game" in back
    assert main([*argv, "pointing_game"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds deeplift_pointing_game" in err and len(err.splitlines()) == 1
    assert main(["evaluate", str(store), "--metrics", "deletion"]) == 2
    assert "deletion call the model: give it with --model" in capsys.readouterr().err
