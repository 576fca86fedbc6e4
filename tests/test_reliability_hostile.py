"""Cases a hostile pass over the reliability round found still failing: hooks on every module, lost
coordinate folders, damaged slot targets, the advice for an explain() store, plugins whose finish()
returns a tensor or that never run the model, models whose output ignores the input, and errors
that shared their line with a progress bar."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from xai_bench import (
    Attribution,
    Attributor,
    InvalidTargetError,
    Passes,
    PluginError,
    StoreDamagedError,
    StoreMismatchError,
    XaiBenchWarning,
    explain,
    hookimpl,
    open_maps,
    run,
    verify_store,
)
from xai_bench.plugins.manager import get_plugin_manager
from xai_bench.testing import tiny_cnn
from xai_bench.testing.conformance import check_cleanup_after_error
from xai_bench.testing.data import SyntheticImages

ARGS = {"methods": ["saliency", "deeplift"], "targets": "all", "samples_per_block": 2,
        "passes": Passes(batch_size=2, memory_budget="1GiB", progress=False)}  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("ref") / "whole.zarr"
    run(tiny_cnn(), SyntheticImages(4), store=store, **ARGS)
    return store


def _copy(reference: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "s.zarr"
    shutil.copytree(reference, copy)
    return copy


def test_a_hook_on_every_module_changes_the_fingerprint_a_resume_checks(reference, tmp_path):
    store = _copy(reference, tmp_path)
    handle = nn.modules.module.register_module_forward_hook(lambda m, a, o: o * 3 if isinstance(m, nn.Linear) else o)
    try:
        with pytest.raises(StoreMismatchError):
            run(tiny_cnn(), SyntheticImages(4), store=store, **ARGS)
    finally:
        handle.remove()
    assert run(tiny_cnn(), SyntheticImages(4), store=store, **ARGS).computed == 0  # the hook gone, it matches


@pytest.mark.parametrize("coordinate", ["target_index", "channel"])
def test_a_lost_coordinate_folder_is_rebuilt_not_dropped(reference, tmp_path, coordinate):
    store = _copy(reference, tmp_path)
    shutil.rmtree(store / coordinate)
    assert verify_store(store).damaged_arrays == [coordinate]
    with pytest.warns(XaiBenchWarning, match=f"{coordinate} had missing or damaged chunks; rebuilt them"):
        assert run(tiny_cnn(), SyntheticImages(4), store=store, **ARGS).computed == 0
    assert verify_store(store).ok
    xr.testing.assert_identical(open_maps(store, checksums=True).load(), open_maps(reference).load())


def test_a_damaged_slot_target_is_the_stores_error_not_zarrs(tmp_path):
    store = tmp_path / "slots.zarr"
    run(tiny_cnn(), SyntheticImages(4), store=store, methods=["saliency"], targets=torch.tensor([0, 3, 1, 2]),
        samples_per_block=2, passes=Passes(progress=False))  # fmt: skip
    chunks = sorted((store / "target_index" / "c").rglob("*"))
    last = [p for p in chunks if p.is_file()][-1]
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    with pytest.raises(StoreDamagedError, match="a coordinate has damaged chunks"):
        open_maps(store)


def test_a_damaged_explain_store_says_to_explain_again(tmp_path):
    store = tmp_path / "explained.zarr"
    explain(tiny_cnn(), torch.rand(2, 3, 12, 12, dtype=torch.float64), methods=["saliency"], targets=[0],
            store=store, passes=Passes(progress=False))  # fmt: skip
    chunk = next(p for p in (store / "saliency").rglob("*") if p.is_file() and p.name != "zarr.json"
                 and not p.name.startswith("."))  # fmt: skip
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreDamagedError, match="written by explain\\(\\) cannot be repaired") as raised:
        open_maps(store, checksums=True)
    assert "xai_bench.run" not in str(raised.value)


class _TensorFinish(Attributor):
    id = "tensor_finish"

    def attribute(self, model, batch):
        return Attribution(torch.zeros(len(batch.inputs), batch.targets.shape[1], *batch.inputs.shape[1:]))

    def finish(self, inputs, total):
        return total.maps  # not an Attribution


class _EdgeMap(Attributor):
    """A map from the image alone: it never runs the model."""

    id = "edge_map"

    def attribute(self, model, batch):
        x = batch.inputs
        edges = (x - x.roll(1, -1)).abs()
        return Attribution(edges.unsqueeze(1).expand(-1, batch.targets.shape[1], *x.shape[1:]).clone())


class _Plugin:
    @hookimpl
    def register_attributors(self, register):
        register(_TensorFinish)
        register(_EdgeMap)


@pytest.fixture
def plugin():
    manager = get_plugin_manager()
    instance = _Plugin()
    manager.register(instance, name="hostile-test-plugin")
    yield
    manager.unregister(instance)


def test_finish_returning_a_tensor_is_a_plugin_error(plugin):
    with pytest.raises(PluginError, match=r"tensor_finish.*finish\(\) returned Tensor"):
        explain(tiny_cnn(), torch.rand(2, 3, 12, 12, dtype=torch.float64), methods="tensor_finish", targets=[0])


def test_the_conformance_suite_accepts_a_method_that_never_runs_the_model(plugin):
    check_cleanup_after_error("edge_map")


class _Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b.expand(x.shape[0], 3) * 1.0


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "guided_backprop", "integrated_gradients",
                                    "deeplift"])  # fmt: skip
def test_an_output_that_ignores_the_input_has_zero_maps(method):
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    ds = explain(_Constant().eval(), x, methods=[method], targets=[0, 2])
    assert np.array_equal(ds[method].values, np.zeros_like(ds[method].values))


def test_an_error_after_the_bar_started_is_a_line_of_its_own(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "images").mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 60 * i, dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
    done = subprocess.run(
        [sys.executable, "-m", "xai_bench.app.cli", "run", "--model", "xai_bench.testing.models:tiny_cnn32",
         "--images", str(tmp_path / "images"), "--store", str(tmp_path / "s.zarr"), "--methods", "saliency",
         "--targets", "9"],
        capture_output=True, timeout=300,
    )  # fmt: skip
    # Into a log (stderr no terminal) the command draws no bar: the error is the whole output.
    assert done.returncode == 2
    assert done.stderr == b"xai-bench: error: target 9 is out of range: the model has 4 outputs (0..3).\n"
    # A bar that was drawn (progress=True) clears its line when the call fails.
    with pytest.raises(InvalidTargetError):
        run(tiny_cnn(), SyntheticImages(2), store=tmp_path / "t.zarr", methods=["saliency"], targets=[9],
            passes=Passes(progress=True))  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("\r") and err.endswith("\r") and not err.split("\r")[-2].strip(), repr(err)
