"""Bad command lines of ``xai-bench``: one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import functools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xai_bench.app.cli import build_parser, main
from xai_bench.testing import fails_in_one_line

RUN = ["run", "--model", "xai_bench.testing.models:tiny_cnn32", "--size", "16", "--methods", "saliency",
       "--targets", "0", "--memory-budget", "256MiB"]  # fmt: skip


def _images(folder: Path, n: int = 2) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"case{i}.png")
    return folder


_fails = functools.partial(fails_in_one_line, main)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> Path:
    """A store of two samples, one chunk of 'case1.png' with a flipped byte."""
    folder = tmp_path_factory.mktemp("damaged")
    store = folder / "maps.zarr"
    assert main([*RUN, "--images", str(_images(folder / "images")), "--store", str(store), "--store-inputs"]) == 0
    chunk = next(p for p in (store / "saliency" / "c" / "1").rglob("*") if p.is_file())
    data = chunk.read_bytes()
    chunk.write_bytes(data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:])
    return store


def test_a_store_or_report_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys):
    # As root every folder is writable, so the folder that cannot be made is one whose parent is a file.
    images = _images(tmp_path / "images")
    (tmp_path / "a_file").write_text("not a folder")
    err = _fails([*RUN, "--images", str(images), "--store", str(tmp_path / "a_file" / "maps.zarr")], capsys)
    assert err.startswith("xai-bench: error: --store ") and "a_file is a file, not a folder" in err
    err = _fails(["demo", "--steps", "1", "--out", str(tmp_path / "a_file" / "demo")], capsys)
    assert "--out " in err and "is a file, not a folder" in err
    assert not (tmp_path / "demo").exists()


def test_a_read_only_folder_is_named(tmp_path, capsys, monkeypatch):
    images = _images(tmp_path / "images")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: answer as the system would for anyone else
            monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked)
        err = _fails([*RUN, "--images", str(images), "--store", str(locked / "maps.zarr")], capsys)
        assert err == (
            f"xai-bench: error: --store {locked / 'maps.zarr'}: the folder {locked} is read-only; choose a folder "
            "you can write."
        )
    finally:
        locked.chmod(0o755)


def test_an_os_error_from_deep_inside_is_one_line(tmp_path, capsys, monkeypatch):
    from xai_bench.scale import dataset_run

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "maps.zarr"))

    monkeypatch.setattr(dataset_run, "run", full_disk)
    err = _fails([*RUN, "--images", str(_images(tmp_path / "images")), "--store", str(tmp_path / "m.zarr")], capsys)
    assert err == f"xai-bench: error: No space left on device: {tmp_path / 'maps.zarr'}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--size", "0"], "argument --size: expected a whole number of at least 1, got '0'"),
        (["--size", "-5"], "argument --size: expected a whole number of at least 1, got '-5'"),
        (["--size", "1.5"], "argument --size: expected a whole number of at least 1, got '1.5'"),
        (["--connect-timeout", "0"], "argument --connect-timeout: expected a number above 0, got '0'"),
        (["--connect-timeout", "nan"], "argument --connect-timeout: expected a number above 0, got 'nan'"),
    ],
)
def test_sizes_and_timeouts_must_be_positive(tmp_path, capsys, argv, message):
    err = _fails([*RUN, "--images", str(tmp_path), "--store", str(tmp_path / "m.zarr"), *argv], capsys)
    assert err == f"xai-bench run: error: {message}; `xai-bench run --help` lists the options."


@pytest.mark.parametrize("steps", ["0", "-1"])
def test_the_demo_needs_a_training_step(tmp_path, capsys, steps):
    err = _fails(["demo", "--steps", steps, "--out", str(tmp_path / "demo")], capsys)
    assert f"argument --steps: expected a whole number of at least 1, got '{steps}'" in err
    assert not (tmp_path / "demo").exists()


def test_report_needs_a_sample_per_page(tmp_path, capsys):
    assert "argument --per-page: expected a whole number of at least 1" in _fails(
        ["report", str(tmp_path), "--per-page", "0"], capsys
    )


@pytest.mark.parametrize(("module", "body", "kind"), [("gives_int", "return 5", "'int'"),
                                                      ("gives_none", "return None", "'NoneType'"),
                                                      ("gives_str", "return 'images/'", "'str'")])  # fmt: skip
def test_a_dataset_factory_that_returns_no_data_set(tmp_path, capsys, monkeypatch, module, body, kind):
    (tmp_path / f"{module}.py").write_text(f"def build():\n    {body}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    err = _fails([*RUN, "--dataset", f"{module}:build", "--store", str(tmp_path / "m.zarr")], capsys)
    assert f"--dataset '{module}:build' returned {kind}, not a data set" in err
    assert not (tmp_path / "m.zarr").exists()


def test_a_dataset_factory_that_cannot_be_loaded_is_named_as_one(tmp_path, capsys):
    err = _fails([*RUN, "--dataset", "no_such_module_here:build", "--store", str(tmp_path / "m.zarr")], capsys)
    assert err.startswith("xai-bench: error: --dataset: cannot load factory 'no_such_module_here:build'")


def _closed_port() -> int:
    """A local port nothing listens on: bound once by the system's choice, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_scheduler_at_the_address_fails_fast_in_one_line(tmp_path, capsys):
    pytest.importorskip("distributed")
    images = _images(tmp_path / "images")
    address = f"tcp://127.0.0.1:{_closed_port()}"
    start = time.perf_counter()
    err = _fails([*RUN, "--images", str(images), "--store", str(tmp_path / "m.zarr"), "--scheduler", address,
                  "--connect-timeout", "0.5"], capsys)  # fmt: skip
    assert time.perf_counter() - start < 10  # was dask's 30 s, then a 45-line traceback
    assert err == (
        f"xai-bench: error: no dask scheduler answered at {address!r} within 0.5 s; start one (`dask scheduler`), "
        "check the address, or wait longer with --connect-timeout."
    )
    err = _fails([*RUN, "--images", str(images), "--store", str(tmp_path / "m.zarr"), "--scheduler", "nowhere"],
                 capsys)  # fmt: skip
    assert "--scheduler 'nowhere' is no dask scheduler address: missing port number" in err
    assert not (tmp_path / "m.zarr").exists()


def test_evaluate_and_report_refuse_a_damaged_store_in_one_line(damaged, tmp_path, capsys):
    expected = (
        f"xai-bench: error: {damaged} has 1 damaged samples ('case1.png'); `xai-bench verify {damaged}` lists their "
        "arrays, and the same `xai-bench run` again recomputes them."
    )
    argv = ["evaluate", str(damaged), "--metrics", "deletion", "--model", "xai_bench.testing.models:tiny_cnn32"]
    assert _fails(argv, capsys) == expected
    assert _fails(["report", str(damaged), "--out", str(tmp_path / "report")], capsys) == expected
    assert not (tmp_path / "report").exists()


def test_no_traceback_from_the_installed_command(tmp_path):
    pytest.importorskip("distributed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    argv = [sys.executable, "-m", "xai_bench.app.cli", *RUN, "--images", str(_images(tmp_path / "images")),
            "--store", str(tmp_path / "m.zarr"), "--scheduler", f"tcp://127.0.0.1:{_closed_port()}",
            "--connect-timeout", "0.5"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "no dask scheduler answered" in done.stderr


def test_every_option_says_its_default():
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, command in commands.items():
        for action in command._actions:
            if action.option_strings in ([], ["-h", "--help"]):  # positionals are required by nature
                continue
            if action.help == argparse.SUPPRESS:  # an old spelling, kept working but not shown
                continue
            text = action.help or ""
            assert "default" in text or "required" in text or "this or" in text, (name, action.dest, text)


def test_a_model_or_data_set_factory_that_raises_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_factories.py").write_text(
        "def raises():\n    raise RuntimeError('factory bug')\n\n"
        "def model():\n    from xai_bench.testing import tiny_cnn\n    return tiny_cnn()\n\n"
        "def data():\n    import torch\n    return torch.rand(2, 3, 8, 8)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for argv, what in (
        (["run", "--model", "broken_factories:raises", "--dataset", "broken_factories:data"], "model factory"),
        (["run", "--model", "broken_factories:model", "--dataset", "broken_factories:raises"], "--dataset"),
    ):
        code = main([*argv, "--methods", "saliency", "--store", str(tmp_path / "s.zarr")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "Traceback" not in err, err
        assert what in err and "raised RuntimeError: factory bug" in err and len(err.splitlines()) == 1, err
