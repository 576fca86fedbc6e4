"""run() sharded over a dask LocalCluster with two worker processes."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import xarray as xr
import zarr

from xai_bench import InvalidParameterError, Passes, open_maps, run
from xai_bench.testing import tiny_cnn
from xai_bench.testing.data import SyntheticImages

distributed = pytest.importorskip("dask.distributed")

pytestmark = pytest.mark.slow

# A fixed pass size: stores built by different processes are compared bit for bit.
ARGS = {
    "methods": {"saliency": {}, "deeplift": {}},
    "targets": "all",
    "passes": Passes(batch_size=4, memory_budget="1GiB", progress=False),
}


@pytest.fixture(scope="module")
def client(dask_default_port_taken):
    # ":0" lets the OS pick the HTTP port; None still binds dask's default 8787, and warns when it is taken.
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_cluster_store_equals_single_process_store(client, tmp_path):
    data = SyntheticImages(12)
    single = run("xai_bench.testing.models:tiny_cnn", data, store=tmp_path / "one.zarr", samples_per_block=2, **ARGS)
    shared = run(
        "xai_bench.testing.models:tiny_cnn",
        data,
        store=tmp_path / "many.zarr",
        samples_per_block=2,
        client=client,
        **ARGS,
    )
    assert single.computed == shared.computed == 12
    xr.testing.assert_identical(open_maps(tmp_path / "one.zarr").load(), open_maps(tmp_path / "many.zarr").load())
    # Both workers took part.
    assert len(client.scheduler_info()["workers"]) == 2


def test_model_objects_are_not_shipped_to_workers(client, tmp_path):
    with pytest.raises(InvalidParameterError, match="pass a model factory"):
        run(tiny_cnn(), SyntheticImages(2), store=tmp_path / "x.zarr", client=client, **ARGS)


def test_killed_worker_loses_no_finished_sample(client, tmp_path):
    store = tmp_path / "killed.zarr"
    data = SyntheticImages(24)
    seen: dict[str, int] = {}

    def kill_one_worker_midway():
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.1)
            try:
                done = np.asarray(zarr.open_group(store, mode="r")["done"][:])
            except Exception:  # the template is not written yet
                continue
            if done.sum() >= 6:
                seen["done_before_kill"] = int(done.sum())
                pid = next(iter(client.run(os.getpid).values()))
                os.kill(pid, signal.SIGKILL)
                seen["killed"] = pid
                return

    killer = threading.Thread(target=kill_one_worker_midway)
    killer.start()
    summary = run("xai_bench.testing.data:slow_tiny_cnn", data, store=store, samples_per_block=2, client=client, **ARGS)
    killer.join()
    assert "killed" in seen, "the run finished before a worker could be killed"
    flags = np.asarray(zarr.open_group(store, mode="r")["done"][:])
    assert flags.all()
    assert summary.computed == 24 and summary.skipped == 0
    whole = run(
        "xai_bench.testing.data:slow_tiny_cnn", data, store=tmp_path / "whole.zarr", samples_per_block=2, **ARGS
    )
    assert whole.computed == 24
    xr.testing.assert_identical(open_maps(store).load(), open_maps(tmp_path / "whole.zarr").load())


def test_a_factory_that_builds_other_weights_on_a_worker_is_refused(client, tmp_path):
    import torch

    torch.rand(1)  # this process's random state is not a fresh worker's
    with pytest.raises(Exception, match="built other weights on a worker than in the process that started the run"):
        run("xai_bench.testing.models:unseeded_cnn", SyntheticImages(4), store=tmp_path / "r.zarr",
            samples_per_block=2, client=client, **ARGS)  # fmt: skip


def test_a_failed_run_whose_error_is_kept_does_not_answer_for_the_next(client, tmp_path):
    import torch

    from xai_bench import XaiBenchError

    torch.manual_seed(1)
    client.run(lambda: __import__("torch").manual_seed(2))  # the workers build other random weights
    with pytest.raises(XaiBenchError, match="built other weights") as kept:
        run("xai_bench.testing.models:unseeded_cnn", SyntheticImages(6, size=8), store=tmp_path / "a.zarr",
            client=client, samples_per_block=2, **ARGS)  # fmt: skip
    # The failed run's tasks are still referenced (by the traceback kept here): the next run is its own.
    summary = run("xai_bench.testing.models:tiny_cnn", SyntheticImages(6, size=8), store=tmp_path / "b.zarr",
                  client=client, samples_per_block=2, **ARGS)  # fmt: skip
    assert summary.computed == 6 and kept.value is not None
