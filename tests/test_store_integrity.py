"""What is on disk is verifiably complete and correct, or reported as not: damaged chunks and killed writers."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xai_bench import (
    Passes,
    StoreDamagedError,
    XaiBenchWarning,
    explain,
    open_maps,
    run,
    verify_store,
)
from xai_bench.testing import tiny_cnn
from xai_bench.testing.data import SyntheticImages

N = 8
ARGS = {
    "methods": ["saliency", "deeplift"],
    "targets": "all",
    "samples_per_block": 2,
    "passes": Passes(batch_size=4, memory_budget="1GiB", progress=False),
}
SCRIPT = """
import sys
from xai_bench import Passes, run
from xai_bench.testing.data import SyntheticImages
run("xai_bench.testing.models:tiny_cnn", SyntheticImages({n}), store=sys.argv[1], methods=["saliency", "deeplift"],
    targets="all", passes=Passes(batch_size=4, memory_budget="1GiB", progress=False), samples_per_block=2)
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("ref") / "whole.zarr"
    run(tiny_cnn(), SyntheticImages(N), store=store, **ARGS)
    return store


def chunk_files(store: Path) -> list[tuple[str, int, Path]]:
    """(variable, sample position, file) of every per-sample chunk of the maps and deltas."""
    found = []
    for name in ("saliency", "deeplift", "deeplift_delta", "score", "input_checksum", "done"):
        for path in sorted((store / name / "c").iterdir()):
            chunk = path if path.is_file() else next(p for p in path.rglob("*") if p.is_file())
            found.append((name, int(path.name), chunk))
    return found


def damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    if kind == "flip":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    elif kind == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    kinds=st.lists(st.sampled_from(["flip", "truncate", "delete"]), min_size=1, max_size=4),
)
def test_damaged_chunks_are_found_never_read_silently_and_repaired(reference, tmp_path_factory, seed, kinds):
    store = tmp_path_factory.mktemp("damaged") / "s.zarr"
    shutil.copytree(reference, store)
    chosen = random.Random(seed).sample(chunk_files(store), len(kinds))
    for (_, _, path), kind in zip(chosen, kinds, strict=True):
        damage(path, kind)
    ids = SyntheticImages(N).sample_ids
    # A deleted done flag reads as "not done": that sample is simply computed again.
    undone = {ids[p] for (name, p, _), kind in zip(chosen, kinds, strict=True) if name == "done" and kind == "delete"}
    expected = {ids[position] for _, position, _ in chosen} - undone
    report = verify_store(store)
    assert set(report.damaged) == expected
    assert not report.ok and report.done == N - len(expected | undone)
    if expected:
        with pytest.raises(StoreDamagedError, match=f"{len(expected)} damaged samples"):
            open_maps(store, checksums=True)
    maps_lost = any(kind == "delete" and name != "done" for (name, _, _), kind in zip(chosen, kinds, strict=True))
    if maps_lost:  # a lost chunk is caught from the listing, before any data is read
        with pytest.raises(StoreDamagedError):
            open_maps(store)
    if expected:  # whatever the damage, reading never returns the damaged values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", XaiBenchWarning)  # "incomplete": a flag was lost too
            with pytest.raises((StoreDamagedError, ValueError), match="damaged|checksum|[Dd]ecompress|Zstd|[Ss]ize"):
                open_maps(store).load()
    if expected:
        with pytest.warns(XaiBenchWarning, match=f"{len(expected)} samples .* have missing or damaged chunks"):
            summary = run(tiny_cnn(), SyntheticImages(N), store=store, **ARGS)  # verifies by default
    else:
        summary = run(tiny_cnn(), SyntheticImages(N), store=store, **ARGS)
    # Whole blocks are recomputed, so that passes hold the same images as the first time.
    blocks = {position // ARGS["samples_per_block"] for _, position, _ in chosen}
    assert summary.computed == ARGS["samples_per_block"] * len(blocks)
    xr.testing.assert_identical(open_maps(store, checksums=True).load(), open_maps(reference).load())


def _killed_run(store: Path, kill_at: str | None, n: int = N) -> int:
    env = {**os.environ, "XAI_BENCH_KILL_AT": kill_at or ""}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(n=n), str(store)], env=env, capture_output=True, timeout=300
    )
    return proc.returncode


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["template", "rename", "region:1", "region:7", "region:13"])
def test_a_run_killed_at_any_write_step_resumes_to_the_uninterrupted_store(reference, tmp_path, kill_at):
    store = tmp_path / "s.zarr"
    assert _killed_run(store, kill_at) == -9  # SIGKILL, as a crash
    if kill_at in ("template", "rename", "region:1"):
        # The template and the first block are built aside: nothing is at the path yet.
        assert not store.exists()
    else:
        done = np.asarray(zarr.open_group(store, mode="r")["done"][:])
        assert 0 < done.sum() < N
        with pytest.warns(XaiBenchWarning, match=rf"incomplete: {int(done.sum())} of {N} samples done"):
            open_maps(store)
    summary = run(tiny_cnn(), SyntheticImages(N), store=store, **ARGS)
    assert summary.computed + summary.skipped == N
    xr.testing.assert_identical(open_maps(store).load(), open_maps(reference).load())
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"] or all(
        p.name.startswith(".s.zarr.") for p in tmp_path.iterdir() if p.name != "s.zarr"
    )


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kills=st.lists(st.sampled_from(["template", "rename", "region:2", "region:7", "region:12"]), max_size=2))
def test_any_sequence_of_kills_then_a_resume_gives_the_uninterrupted_store(reference, tmp_path_factory, kills):
    store = tmp_path_factory.mktemp("kills") / "s.zarr"
    for kill_at in kills:
        _killed_run(store, kill_at)
    assert _killed_run(store, None) == 0
    xr.testing.assert_identical(open_maps(store).load(), open_maps(reference).load())


@pytest.mark.slow
def test_explain_killed_while_writing_leaves_no_store_that_looks_complete(tmp_path):
    script = (
        "import sys, torch\nfrom xai_bench import explain\nfrom xai_bench.testing import tiny_cnn\n"
        "explain(tiny_cnn(), torch.rand(40, 3, 12, 12, dtype=torch.float64), methods=['saliency'], "
        "targets='all', store=sys.argv[1])\n"
    )
    store = tmp_path / "m.zarr"
    env = {**os.environ, "XAI_BENCH_KILL_AT": "save"}
    proc = subprocess.run([sys.executable, "-c", script, str(store)], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -9
    assert not store.exists()
    with pytest.raises(FileNotFoundError):
        open_maps(store)
    # Only the hidden partial folder is left; a new write is not blocked by it.
    assert all(p.name.startswith(".m.zarr.") and p.name.endswith(".partial") for p in tmp_path.iterdir())
    explain(tiny_cnn(), torch.rand(2, 3, 12, 12, dtype=torch.float64), methods=["saliency"], targets=[0], store=store)
    assert open_maps(store).sizes["sample"] == 2
