"""Bad command lines of ``covid-cxr``: one line on stderr and exit code 2, never a traceback; a user's label map."""

from __future__ import annotations

import csv
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from covid_cxr.cli import build_parser, main
from covid_cxr.datasets import csv_folder
from covid_cxr.labels import Hierarchy, UnknownFindingError
from PIL import Image

from xai_bench.testing import fails_in_one_line

_fails = functools.partial(fails_in_one_line, main)


def _own_data(folder: Path, labels: list[str]) -> tuple[Path, Path]:
    """Tiny grey images and a labels CSV of one's own, one subject per image."""
    images = folder / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    table = folder / "labels.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "labels", "patient_id"])
        for i, label in enumerate(labels):
            Image.fromarray(rng.integers(0, 255, (30, 40), dtype=np.uint8), mode="L").save(images / f"x{i}.png")
            writer.writerow([f"x{i}.png", label, f"p{i}"])
    return images, table


@pytest.fixture
def kermany_empty(tmp_path) -> Path:
    (tmp_path / "chest_xray" / "train" / "NORMAL").mkdir(parents=True)
    return tmp_path / "chest_xray"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--size", "0"], "argument --size: expected a whole number of at least 1, got '0'"),
        (["--folds", "0"], "argument --folds: expected a whole number of at least 1, got '0'"),
        (["--epochs", "-1"], "argument --epochs: expected a whole number of at least 1, got '-1'"),
        (["--explain-images", "0"], "argument --explain-images: expected a whole number of at least 1, got '0'"),
        (["--healthy", "-1"], "argument --healthy: expected a whole number of at least 0, got '-1'"),
        (["--threshold", "1.5"], "argument --threshold: expected a number between 0 and 1, got '1.5'"),
        (["--threshold", "nan"], "argument --threshold: expected a number between 0 and 1, got 'nan'"),
        (["--explain-batch-size", "abc"],
         "argument --explain-batch-size: expected a positive number of images or 'auto', got 'abc'"),
        (["--models", "resnet18,resnet19"],
         "argument --models: unknown architecture 'resnet19' (did you mean 'resnet18'?); the study's are resnet18,"),
        (["--memory-budget", "abc"], "argument --memory-budget: memory_budget 'abc' is not a size;"),
        (["--device", "gpu0"], "argument --device: 'gpu0' is no device"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["data", "study"])
def test_bad_numbers_and_names_are_usage_errors(kermany_empty, capsys, command, argv, message):
    err = _fails([command, "--kermany", str(kermany_empty), *argv], capsys)
    assert err.startswith(f"covid-cxr {command}: error: {message}"), err
    assert err.endswith(f"`covid-cxr {command} --help` lists the options.")


@pytest.mark.parametrize("argv", [["--images", "0"], ["--size", "0"], ["--folds", "0"], ["--epochs", "-1"]])
def test_the_quick_study_takes_positive_numbers(tmp_path, capsys, argv):
    err = _fails(["quick", "--out", str(tmp_path / "q"), *argv], capsys)
    assert f"argument {argv[0]}: expected a whole number of at least 1, got '{argv[1]}'" in err
    assert not (tmp_path / "q").exists()


def test_a_size_below_a_models_smallest_input_is_refused_before_any_work(tmp_path, capsys):
    images, table = _own_data(tmp_path, ["healthy", "COVID-19"])
    argv = ["train", "--csv", str(images), str(table), "--out", str(tmp_path / "s"), "--size", "40",
            "--models", "resnet18,inception_v3"]  # fmt: skip
    assert _fails(argv, capsys) == (
        "covid-cxr: error: --size 40 is below the smallest input of inception_v3 (75 px); give --size 75 or more, "
        "or leave it out of --models."
    )
    assert "--size 40 is below the smallest input of inception_v3, inception_resnet_v2 (75 px)" in _fails(
        ["quick", "--out", str(tmp_path / "q"), "--size", "40"], capsys
    )
    assert not (tmp_path / "s").exists() and not (tmp_path / "q").exists()


def test_cuda_on_a_machine_without_it(kermany_empty, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = _fails(["train", "--kermany", str(kermany_empty), "--device", "cuda"], capsys)
    assert "argument --device: 'cuda': this machine has no CUDA device; use --device cpu;" in err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    err = _fails(["train", "--kermany", str(kermany_empty), "--device", "cuda:1"], capsys)
    assert "'cuda:1': this machine has 1 CUDA device; use --device cpu or cuda:0 to cuda:0" in err


def test_missing_folders_files_and_empty_layouts(tmp_path, kermany_empty, capsys):
    images, table = _own_data(tmp_path, ["healthy"])
    cases = [
        (["--cohen", str(tmp_path / "nowhere")], f"argument --cohen: no folder at {tmp_path / 'nowhere'}"),
        (["--cohen", str(table)], f"argument --cohen: {table} is no folder"),
        (["--csv", str(tmp_path / "nowhere"), str(table)], "argument --csv: no file or folder at"),
        (["--csv", str(images), str(tmp_path / "none.csv")], "argument --csv: no file or folder at"),
        (["--csv", str(table), str(table)], f"no image folder {table} (the folder the CSV's file column"),
        (["--kermany", str(kermany_empty)], "no images under"),
        (["--cohen", str(images)], f"no metadata.csv in {images}"),
        (["--csv", str(images), str(table), "--split-files", str(tmp_path / "fold0.json")],
         f"argument --split-files: no file at {tmp_path / 'fold0.json'}"),
        ([], "give --cohen, --kermany and/or --csv FOLDER TABLE: the study needs images."),
    ]  # fmt: skip
    for argv, message in cases:
        err = _fails(["data", "--out", str(tmp_path / "out"), *argv], capsys)
        assert message in err, (argv, err)
    assert not (tmp_path / "out").exists()
    err = _fails(["data", "--csv", str(images), str(table), "--out", str(table / "out")], capsys)
    assert f"argument --out: {table} is a file, not a folder; choose another path" in err


def test_split_files_that_are_no_splits(tmp_path, capsys):
    images, table = _own_data(tmp_path, ["healthy", "COVID-19"])
    (tmp_path / "bad.json").write_text('{"seed": 0, "train": [')
    (tmp_path / "two_sides.json").write_text('{"seed": 0, "train": ["p0"], "test": ["p0"]}')
    base = ["data", "--csv", str(images), str(table), "--out", str(tmp_path / "out"), "--split-files"]
    assert f"--split-files {tmp_path / 'bad.json'} is not JSON: Expecting value" in _fails(
        [*base, str(tmp_path / "bad.json")], capsys
    )
    # A subject on two sides is kept as published (a reproduction keeps the authors' leak), counted and warned.
    with pytest.warns(UserWarning, match="on two sides"):
        assert main([*base, str(tmp_path / "two_sides.json")]) == 0
    assert "Subjects the split files name on two sides, kept as published: fold 0: 1 (p0)." in capsys.readouterr().out
    (tmp_path / "list.json").write_text("[1, 2]")
    assert "list.json: expected one JSON object (seed, train, test, val)." in _fails(
        [*base, str(tmp_path / "list.json")], capsys
    )


def test_unknown_labels_are_all_listed_with_the_valid_names(tmp_path, capsys):
    images, table = _own_data(tmp_path, ["healthy", "covid pneumonia", "TB;ARDS", "covid pneumonia"])
    err = _fails(["data", "--csv", str(images), str(table), "--out", str(tmp_path / "out")], capsys)
    assert err.startswith(
        f"covid-cxr: error: {table}: unknown labels 'covid pneumonia' (line 3), 'TB' (line 4); the labels are "
        "healthy, pneumonia, ARDS, viral,"
    )
    assert "(aliases: No Finding, normal," in err and "covid-cxr --labels FILE" in err
    with pytest.raises(UnknownFindingError, match=r"unknown labels 'covid pneumonia' \(line 3\), 'TB' \(line 4\);"):
        csv_folder(images, table)


def test_a_label_map_of_ones_own(tmp_path, capsys):
    images, table = _own_data(tmp_path, ["clear", "covid pneumonia", "TB;ARDS", "No Finding"])
    mapping = {"clear": "normal", "covid pneumonia": "COVID-19", "TB": ["bacterial"]}
    hierarchy = Hierarchy.load().with_labels(mapping)
    records = csv_folder(images, table, hierarchy)
    assert [sorted(r.labels) for r in records] == [
        ["healthy"], ["COVID-19", "pneumonia", "viral"], ["ARDS", "bacterial", "pneumonia"], ["healthy"]
    ]  # fmt: skip
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    out = tmp_path / "out"
    argv = ["data", "--csv", str(images), str(table), "--labels", str(tmp_path / "map.json"), "--out", str(out),
            "--size", "32", "--folds", "1"]  # fmt: skip
    assert main(argv) == 0
    assert "4 images prepared at 32 px; 1 folds" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"clear": "Normal"}', "map.json: 'clear' maps to 'Normal', which is no label; the labels are healthy,"),
        ('{"clear": 3}', "map.json: 'clear' must map to a label's name or a list of them, got 3."),
        ('["healthy"]', "map.json: expected a JSON object of your label -> the study's label, got list."),
        ("{clear: healthy}", "map.json is not JSON: Expecting property name"),
    ],
)
def test_a_label_map_that_names_no_label(tmp_path, capsys, text, message):
    images, table = _own_data(tmp_path, ["clear"])
    (tmp_path / "map.json").write_text(text)
    argv = ["data", "--csv", str(images), str(table), "--labels", str(tmp_path / "map.json"),
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert message in _fails(argv, capsys)


def test_no_traceback_from_the_installed_command(kermany_empty):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    argv = [sys.executable, "-m", "covid_cxr.cli", "data", "--kermany", str(kermany_empty), "--out",
            str(kermany_empty.parent / "out")]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"covid-cxr: error: no images under {kermany_empty}/{{train,test}}/"
                                                "{NORMAL,PNEUMONIA} (Kermany's layout)."]  # fmt: skip


def test_every_option_says_its_default():
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, command in commands.items():
        for action in command._actions:
            if action.option_strings not in ([], ["-h", "--help"]):
                assert "default" in (action.help or ""), (name, action.dest, action.help)
