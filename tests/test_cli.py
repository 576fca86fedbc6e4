from __future__ import annotations

import matplotlib
import numpy as np

from xai_bench import open_maps
from xai_bench.cli import main

matplotlib.use("Agg")


def test_methods_lists_builtins_with_parameters(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for method in (
        "occlusion",
        "saliency",
        "input_x_gradient",
        "guided_backprop",
        "integrated_gradients",
        "deeplift",
    ):
        assert method in out
    assert "n_steps=50" in out


def test_plugins_lists_builtins(capsys):
    assert main(["plugins"]) == 0
    assert "xai_bench.attributors.builtin" in capsys.readouterr().out


def test_demo_writes_a_store_and_a_figure(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "150"]) == 0
    out = capsys.readouterr().out
    assert "share of |attribution| inside the object" in out
    ds = open_maps(tmp_path / "maps.zarr")
    assert {
        "occlusion",
        "saliency",
        "input_x_gradient",
        "guided_backprop",
        "integrated_gradients",
        "deeplift",
    } <= set(ds)
    assert list(ds["target"].values) == ["disc", "bar"]
    assert np.nanmax(np.abs(ds["deeplift_delta"].values)) < 1e-4
    assert (tmp_path / "maps.png").stat().st_size > 10_000
