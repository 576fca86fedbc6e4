"""Every byte of a store is verified and in its place: coordinates, swapped chunks, metrics after a resume,
what ``overwrite=True`` may replace, and what killed or interrupted writers leave behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import google_crc32c
import pytest
import torch
import xarray as xr

from xai_bench import (
    Passes,
    StoreDamagedError,
    StoreExistsError,
    StoreMismatchError,
    XaiBenchWarning,
    evaluate,
    explain,
    open_maps,
    run,
    verify_store,
)
from xai_bench.storage import zarr_io
from xai_bench.testing import tiny_cnn
from xai_bench.testing.data import SyntheticImages

N = 4
ARGS = {
    "methods": ["saliency", "deeplift"],
    "targets": "all",
    "samples_per_block": 2,
    "passes": Passes(batch_size=2, memory_budget="1GiB", progress=False),
}
METRICS = ["deeplift_completeness"]  # what evaluate(metrics="completeness") adds


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("ref") / "whole.zarr"
    run(tiny_cnn(), SyntheticImages(N), store=store, **ARGS)
    return store


@pytest.fixture
def store(reference, tmp_path) -> Path:
    copy = tmp_path / "s.zarr"
    shutil.copytree(reference, copy)
    return copy


def chunk(store: Path, name: str, position: int | None = None) -> Path:
    """The file of ``name``'s chunk of the sample at ``position`` (or its first chunk)."""
    folder = store / name / "c"
    if position is not None:
        folder = folder / str(position)
    return folder if folder.is_file() else next(p for p in sorted(folder.rglob("*")) if p.is_file())


def flip(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-6] + bytes([data[-6] ^ 0xFF]) + data[-5:])


def swap(a: Path, b: Path) -> None:
    assert a.read_bytes() != b.read_bytes()
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(a_bytes)


def resumed(store: Path, dataset=None, **match: str) -> object:
    """Run again on ``store``, expecting a warning matching each of ``match``'s values."""
    with pytest.warns(XaiBenchWarning) as caught:
        summary = run(tiny_cnn(), dataset or SyntheticImages(N), store=store, **ARGS)
    messages = [str(w.message) for w in caught]
    for pattern in match.values():
        assert any(re.search(pattern, m) for m in messages), (pattern, messages)
    return summary


def evaluated(store: Path) -> None:
    evaluate(open_maps(store), metrics="completeness", into=store)
    assert set(METRICS) <= set(open_maps(store).data_vars)


# -- 4: metrics written by evaluate(store=) never outlive the maps they were computed from --------------------


def test_metrics_of_recomputed_samples_are_dropped_with_a_warning_not_kept_stale(store):
    evaluated(store)

    class Brighter(SyntheticImages):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            return {**item, "image": item["image"] * 0.5} if index == 1 else item

    summary = resumed(store, Brighter(N), changed="changed since", dropped=r"dropping deeplift_completeness")
    assert summary.computed == 2
    ds = open_maps(store, checksums=True)
    assert not set(METRICS) & set(ds.data_vars)
    assert verify_store(store).ok
    evaluated(store)  # and evaluate writes them again, from the new maps


def test_a_damaged_map_chunk_after_evaluate_leaves_a_readable_store(store, reference):
    evaluated(store)
    flip(chunk(store, "saliency", 1))
    resumed(store, damaged="have missing or damaged chunks", dropped="dropping deeplift_completeness")
    assert verify_store(store).ok
    xr.testing.assert_identical(open_maps(store, checksums=True).load(), open_maps(reference).load())
    # and a second run has nothing to do, and says so truthfully
    assert run(tiny_cnn(), SyntheticImages(N), store=store, **ARGS).computed == 0


def test_a_damaged_metric_chunk_drops_the_metrics_and_recomputes_no_map(store, reference):
    evaluated(store)
    (store / "deeplift_completeness" / "c" / "1" / "0").unlink()
    assert set(verify_store(store).damaged) == {"img-001"}
    summary = resumed(store, dropped="dropping deeplift_completeness, which have missing or damaged chunks")
    assert summary.computed == 0
    xr.testing.assert_identical(open_maps(store, checksums=True).load(), open_maps(reference).load())


def test_metrics_half_dropped_by_a_killed_run_are_dropped_by_the_next(store, reference):
    evaluated(store)
    shutil.rmtree(store / "deeplift_completeness")  # killed between deleting it and rewriting the metadata
    assert "deeplift_completeness" in verify_store(store).damaged["img-000"]
    summary = resumed(store, dropped="dropping deeplift_completeness")
    assert summary.computed == 0
    xr.testing.assert_identical(open_maps(store, checksums=True).load(), open_maps(reference).load())


def test_a_run_never_reports_success_on_a_store_it_leaves_unreadable(store, monkeypatch):
    # A repair that forgets an array (as the old one did with the metrics) is caught before returning.
    from xai_bench.storage.sample_store import SampleStore

    flip(chunk(store, "saliency", 1))
    real = SampleStore.mark_undone

    def forgetful(self, positions, *, discard=False):
        real(self, positions, discard=discard)
        if discard:
            shutil.rmtree(self.path / "score" / "c" / "3")  # a chunk the recompute will not write

    monkeypatch.setattr(SampleStore, "mark_undone", forgetful)
    left = r"still damaged after the run \(img-003: score\); delete the store"
    with pytest.warns(XaiBenchWarning), pytest.raises(StoreDamagedError, match=left):
        run(tiny_cnn(), SyntheticImages(N), store=store, **ARGS)


# -- 5: coordinates are verified, and rebuilt from the run's arguments ----------------------------------------


@pytest.mark.parametrize(
    ("name", "how"), [("target_index", "delete"), ("sample", "delete"), ("channel", "flip"), ("y", "seals")]
)
def test_damaged_coordinates_are_reported_and_rebuilt_by_the_run(store, reference, name, how):
    if how == "delete":
        chunk(store, name).unlink()
    elif how == "flip":
        flip(chunk(store, name))
    else:
        (store / name / zarr_io.SEALS).unlink()
    report = verify_store(store)
    assert report.damaged_arrays == [name] and not report.ok
    assert name in report.summary()
    with pytest.raises(StoreDamagedError, match=f"damaged arrays .*: {name}"):
        open_maps(store)
    assert verify_store(store, checksums=False).damaged_arrays == [name]  # coordinates are read even then
    resumed(store, rebuilt=f"{name} had missing or damaged chunks; rebuilt them")
    assert verify_store(store).ok
    xr.testing.assert_identical(open_maps(store, checksums=True).load(), open_maps(reference).load())


def test_deleted_target_index_no_longer_gives_another_class_map(store, reference):
    from xai_bench import select_map

    chunk(store, "target_index").unlink()
    with pytest.raises(StoreDamagedError, match="target_index"):
        select_map(open_maps(store), "saliency", sample="img-000", target=0)
    resumed(store, rebuilt="rebuilt")
    got = select_map(open_maps(store), "saliency", sample="img-000", target=0)
    want = select_map(open_maps(reference), "saliency", sample="img-000", target=0)
    xr.testing.assert_identical(got.load(), want.load())


def test_a_coordinate_of_a_store_of_explain_is_reported_as_damaged(tmp_path):
    x = torch.rand(3, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    explain(tiny_cnn(), x, methods=["saliency"], targets=[0, 1], store=tmp_path / "m.zarr")
    flip(chunk(tmp_path / "m.zarr", "target"))
    assert verify_store(tmp_path / "m.zarr").damaged_arrays == ["target"]
    with pytest.raises(StoreDamagedError, match="damaged arrays .*: target"):
        open_maps(tmp_path / "m.zarr")


# -- 9: each checksum is bound to its array and its place -----------------------------------------------------


@pytest.mark.parametrize("name", ["saliency", "deeplift_delta", "input_checksum"])
def test_swapped_chunks_of_two_samples_are_found_and_repaired(store, reference, name):
    swap(chunk(store, name, 0), chunk(store, name, 3))
    report = verify_store(store)
    assert report.damaged == {"img-000": [name], "img-003": [name]}
    with pytest.raises(StoreDamagedError, match="2 damaged samples"):
        open_maps(store, checksums=True)
    summary = resumed(store, damaged=r"2 samples .* have missing or damaged chunks.*img-000.*img-003")
    assert summary.computed == 4
    xr.testing.assert_identical(open_maps(store, checksums=True).load(), open_maps(reference).load())


def test_chunks_swapped_between_arrays_or_records_swapped_are_found(store):
    swap(chunk(store, "saliency", 2), chunk(store, "deeplift", 2))
    assert verify_store(store).damaged == {"img-002": ["deeplift", "saliency"]}
    records = store / zarr_io.RECORDS
    swap(records / "0.json", records / "1.json")
    assert set(verify_store(store).damaged) == {"img-000", "img-001", "img-002"}


def test_swapped_chunks_of_a_store_of_explain_are_found(tmp_path):
    x = torch.rand(3, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    explain(tiny_cnn(), x, methods=["saliency"], targets=[0], store=tmp_path / "m.zarr")
    swap(chunk(tmp_path / "m.zarr", "saliency", 0), chunk(tmp_path / "m.zarr", "saliency", 2))
    assert set(verify_store(tmp_path / "m.zarr").damaged) == {"0", "2"}
    with pytest.raises(StoreDamagedError, match="2 damaged samples"):
        open_maps(tmp_path / "m.zarr", checksums=True)


def test_a_store_of_an_older_version_is_read_but_not_resumed(store):
    shutil.rmtree(store / zarr_io.RECORDS)
    for seals in store.glob(f"*/{zarr_io.SEALS}"):
        seals.unlink()
    assert verify_store(store).ok
    assert open_maps(store, checksums=True).sizes["sample"] == N
    with pytest.raises(StoreMismatchError, match="older xai_bench.*delete it and run again"):
        run(tiny_cnn(), SyntheticImages(N), store=store, **ARGS)


# -- 6: overwrite=True replaces only a store this library wrote -----------------------------------------------


def test_overwrite_replaces_only_a_store_of_xai_bench(tmp_path):
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    folder = tmp_path / "paper"
    folder.mkdir()
    (folder / "main.tex").write_text("\\documentclass{article}")
    with pytest.raises(StoreExistsError, match="not a store written by xai_bench"):
        explain(tiny_cnn(), x, methods=["saliency"], targets=[0], store=folder, overwrite=True)
    assert (folder / "main.tex").read_text() == "\\documentclass{article}"
    file = tmp_path / "notes.txt"
    file.write_text("keep")
    for overwrite in (False, True):
        with pytest.raises(StoreExistsError, match="is a file, not a store"):
            explain(tiny_cnn(), x, methods=["saliency"], targets=[0], store=file, overwrite=overwrite)
    assert file.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "paper"]  # nothing renamed aside
    # its own stores, of this version or an older one (no checksum files, but its provenance), are replaced
    store = tmp_path / "m.zarr"
    explain(tiny_cnn(), x, methods=["saliency"], targets=[0], store=store)
    for seals in store.glob(f"*/{zarr_io.SEALS}"):
        seals.unlink()
    explain(tiny_cnn(), x, methods=["saliency"], targets=[1], store=store, overwrite=True)
    assert open_maps(store)["target_index"].values.tolist() == [1]


# -- 15: partial folders of killed writers are cleaned up; Ctrl-C never leaves half-written state ------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_partial_folders_are_removed_by_the_next_writer(tmp_path):
    host = zarr_io._HOST
    dead = tmp_path / f".s.zarr.{host}-{_dead_pid()}-0123abcd.partial"
    alive = tmp_path / f".s.zarr.{host}-{os.getppid()}-0123abcd.adding"
    old = tmp_path / ".s.zarr.0123456789ab.partial"  # an older version's name: judged by its age
    recent = tmp_path / ".s.zarr.ba9876543210.old"
    other = tmp_path / f".t.zarr.{host}-{_dead_pid()}-0123abcd.partial"  # another store's
    for folder in (dead, alive, old, recent, other):
        (folder / "c").mkdir(parents=True)
    day_ago = time.time() - zarr_io.STALE_AFTER - 60
    os.utime(old, (day_ago, day_ago))
    run(tiny_cnn(), SyntheticImages(N), store=tmp_path / "s.zarr", **ARGS)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["s.zarr", alive.name, recent.name, other.name])


def test_the_partial_folder_of_a_killed_run_is_removed_by_the_next_run(tmp_path):
    script = (
        "import sys\nfrom xai_bench import Passes, run\nfrom xai_bench.testing import tiny_cnn\n"
        "from xai_bench.testing.data import SyntheticImages\n"
        f"run(tiny_cnn(), SyntheticImages({N}), store=sys.argv[1], **{ARGS!r})\n"
    )
    env = {**os.environ, "XAI_BENCH_KILL_AT": "template"}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "s.zarr")], env=env, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert [p.name.endswith(".partial") for p in tmp_path.iterdir()] == [True]
    run(tiny_cnn(), SyntheticImages(N), store=tmp_path / "s.zarr", **ARGS)
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


@pytest.fixture
def ctrl_c():
    """Ctrl-C as in a terminal: a process started in the background (``cmd &``) ignores SIGINT from its start."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("kind", ["run", "explain"])
def test_ctrl_c_while_zarr_writes_a_template_leaves_no_half_written_folder(tmp_path, monkeypatch, kind, ctrl_c):
    # SIGINT arrives while zarr's own thread is writing a chunk, as a user's Ctrl-C would.
    from zarr.storage import _local

    real, sent = _local._put, []

    def interrupted(path, value, exclusive=False):
        if not sent:
            sent.append(path)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)  # the main thread would unwind (and delete the folder) meanwhile
        return real(path, value, exclusive=exclusive)

    monkeypatch.setattr(_local, "_put", interrupted)
    store = tmp_path / "s.zarr"
    with pytest.raises(KeyboardInterrupt):
        if kind == "run":
            run(tiny_cnn(), SyntheticImages(N), store=store, **ARGS)
        else:
            explain(
                tiny_cnn(),
                torch.rand(2, 3, 12, 12, dtype=torch.float64),
                methods=["saliency"],
                targets=[0],
                store=store,
            )
    time.sleep(0.5)  # whatever zarr's thread still had to do is done
    assert sent and [p.name for p in tmp_path.iterdir()] in ([], ["s.zarr"])
    if store.exists():  # the interrupt came once the store was whole
        assert verify_store(store).done > 0 and not verify_store(store).damaged


def test_ctrl_c_is_delivered_after_the_write_not_lost(ctrl_c):
    with pytest.raises(KeyboardInterrupt), zarr_io.uninterrupted():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        finished = True
    assert finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_checksum_binds_name_and_place():
    def chunk_bytes(payload: bytes) -> bytes:  # as zarr's crc32c codec writes them: the bytes, then their crc
        return payload + google_crc32c.value(payload).to_bytes(4, "little")

    one, other = chunk_bytes(b"one sample"), chunk_bytes(b"another one")
    sums = {zarr_io.chunk_crc(n, k, d) for n in ("a", "b") for k in ("c/0/0", "c/1/0") for d in (one, other)}
    assert len(sums) == 8
