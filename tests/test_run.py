from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from xai_bench import InvalidParameterError, Passes, StoreMismatchError, explain, open_maps, run
from xai_bench.testing import tiny_cnn
from xai_bench.testing.data import SyntheticImages

METHODS = {"saliency": {}, "deeplift": {}, "occlusion": {"window": 4, "stride": 4}}
# A fixed pass size: resumed and uninterrupted stores are compared bit for bit.
ARGS = {"methods": METHODS, "targets": "all", "passes": Passes(batch_size=4, memory_budget="1GiB", progress=False)}


def test_run_writes_what_explain_computes(tmp_path):
    data = SyntheticImages(10)
    summary = run(tiny_cnn(), data, store=tmp_path / "maps.zarr", samples_per_block=3, **ARGS)
    assert (summary.computed, summary.skipped) == (10, 0)
    stored = open_maps(tmp_path / "maps.zarr").load()
    x = torch.stack([data[i]["image"] for i in range(10)])
    direct = explain(tiny_cnn(), x, sample_ids=data.sample_ids, **{k: v for k, v in ARGS.items() if k != "progress"})
    assert list(stored["sample"].values) == data.sample_ids
    assert stored["done"].values.all()
    for name in ("saliency", "deeplift", "deeplift_delta", "occlusion", "score"):
        np.testing.assert_allclose(stored[name].values, direct[name].values, rtol=1e-10, atol=1e-13)
    assert stored.attrs["model_fingerprint"] == direct.attrs["model_fingerprint"]
    assert zarr.open_group(tmp_path / "maps.zarr")["deeplift"].chunks[0] == 1


def test_second_run_recomputes_nothing(tmp_path):
    data = SyntheticImages(5)
    run(tiny_cnn(), data, store=tmp_path / "maps.zarr", **ARGS)
    summary = run(tiny_cnn(), data, store=tmp_path / "maps.zarr", **ARGS)
    assert (summary.computed, summary.skipped) == (0, 5)


def test_a_different_run_is_refused(tmp_path):
    data = SyntheticImages(4)
    run(tiny_cnn(), data, store=tmp_path / "maps.zarr", **ARGS)
    other = {**ARGS, "methods": {**METHODS, "occlusion": {"window": 6, "stride": 6}}}
    with pytest.raises(StoreMismatchError, match="different run"):
        run(tiny_cnn(), data, store=tmp_path / "maps.zarr", **other)
    retrained = tiny_cnn()
    with torch.no_grad():
        retrained.fc.bias.add_(1)
    with pytest.raises(StoreMismatchError):
        run(retrained, data, store=tmp_path / "maps.zarr", **ARGS)
    with pytest.raises(StoreMismatchError):
        run(tiny_cnn(), SyntheticImages(5), store=tmp_path / "maps.zarr", **ARGS)
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreMismatchError, match="not a zarr store written by xai_bench.run"):
        run(tiny_cnn(), data, store=tmp_path / "plain", **ARGS)


def test_dataloader_and_factory_string(tmp_path):
    loader = torch.utils.data.DataLoader(SyntheticImages(3), batch_size=2)
    summary = run("xai_bench.testing.models:tiny_cnn", loader, store=tmp_path / "maps.zarr", **ARGS)
    assert summary.computed == 3
    with pytest.raises(InvalidParameterError, match="'package.module:function'"):
        run("tiny_cnn", loader, store=tmp_path / "other.zarr", **ARGS)


KILLED_RUN = """
import sys
from xai_bench import Passes, run
from xai_bench.testing.data import SyntheticImages
run("xai_bench.testing.data:slow_tiny_cnn", SyntheticImages(24), store=sys.argv[1], samples_per_block=2,
    methods={"saliency": {}, "deeplift": {}}, targets="all",
    passes=Passes(batch_size=4, memory_budget="1GiB", progress=False))
"""


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_store(tmp_path):
    store = tmp_path / "killed.zarr"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(store)], stderr=subprocess.PIPE)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            done = int(np.asarray(zarr.open_group(store, mode="r")["done"][:]).sum())
        except Exception:  # the template may not exist yet
            continue
        if done >= 6:
            break
    if proc.poll() is not None:
        pytest.fail(f"the run ended before it could be killed: {proc.stderr.read().decode()}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    flags = np.asarray(zarr.open_group(store, mode="r")["done"][:])
    finished = int(flags.sum())
    assert 6 <= finished < 24

    args = {
        "methods": {"saliency": {}, "deeplift": {}},
        "targets": "all",
        "passes": Passes(batch_size=4, memory_budget="1GiB", progress=False),
    }
    resumed = run("xai_bench.testing.data:slow_tiny_cnn", SyntheticImages(24), store=store, samples_per_block=2, **args)
    # Every block with a sample not done is computed again, whole (blocks of 2 samples).
    blocks = {i // 2 for i in np.flatnonzero(~flags)}
    assert (resumed.computed, resumed.skipped) == (2 * len(blocks), 24 - 2 * len(blocks))
    whole = run(
        "xai_bench.testing.data:slow_tiny_cnn",
        SyntheticImages(24),
        store=tmp_path / "whole.zarr",
        samples_per_block=2,
        **args,
    )
    assert whole.computed == 24
    xr.testing.assert_identical(open_maps(store).load(), open_maps(tmp_path / "whole.zarr").load())
