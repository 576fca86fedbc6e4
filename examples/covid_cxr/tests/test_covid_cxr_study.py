"""The study's stages run end to end on real images and a second run does nothing again."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from covid_cxr.study import StudyConfig, data_stage, evaluate_stage, train_stage

MINI = Path(__file__).resolve().parents[4] / "shared" / "cxr_mini"


@pytest.mark.skipif(not MINI.is_dir(), reason="the real subset ../shared/cxr_mini is not on this machine")
def test_data_train_evaluate_on_the_real_subset_and_again_without_work(tmp_path):
    from covid_cxr.datasets import cohen_collection, kermany

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the collection's lateral and CT rows are left out, with a warning
        records = cohen_collection(MINI / "covid-chestxray-dataset") + kermany(MINI / "chest_xray")
    config = StudyConfig(size=64, folds=2, models=("resnet18", "resnet34"), epochs=1, batch_size=16)
    prepared, splits = data_stage(records, tmp_path, config, progress=False)
    assert prepared.images.shape == (129, 3, 64, 64) and len(splits) == 2
    trained = train_stage(prepared, splits, tmp_path, config, progress=False)
    results = evaluate_stage(prepared, splits, trained, tmp_path, config)
    assert set(results) == {"ResNet18", "ResNet34", "Ensemble (majority vote)", "Ensemble (mean probability)"}
    assert all(len(folds) == 2 for folds in results.values())
    table = (tmp_path / "table2.md").read_text()
    assert "| ResNet18 |" in table and "0.824" in table  # the paper's ResNet18 micro scores beside ours
    written = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")} | {
        p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npz")
    }
    prepared, splits = data_stage(records, tmp_path, config, progress=False)
    again = evaluate_stage(prepared, splits, train_stage(prepared, splits, tmp_path, config, progress=False),
                           tmp_path, config)  # fmt: skip
    assert {p: p.stat().st_mtime_ns for p in written} == written  # nothing trained, prepared or predicted again
    assert again == results


@pytest.mark.slow
@pytest.mark.skipif(not MINI.is_dir(), reason="the real subset ../shared/cxr_mini is not on this machine")
def test_every_stage_of_the_command_on_real_images_in_the_collection_and_csv_layouts(tmp_path, capsys):
    import csv

    import pandas as pd
    import xarray as xr
    from covid_cxr.cli import main

    # The Kermany images of the subset, described by a CSV of one's own (persons as patient ids).
    table = tmp_path / "labels.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "labels", "patient_id"])
        for path in sorted((MINI / "chest_xray").glob("*/*/*.jpeg")):
            kind = "healthy" if path.parent.name == "NORMAL" else "viral" if "virus" in path.name else "bacterial"
            writer.writerow([path.relative_to(MINI / "chest_xray"), kind, path.name.split("_")[0]])
    out = tmp_path / "study"
    # Two ResNets at 32 px: DenseNet161's checkpoints alone made one epoch take minutes on a busy machine; it is
    # trained in test_covid_cxr_training.py and profiled at the study's layers in test_profile.py.
    args = ["--cohen", str(MINI / "covid-chestxray-dataset"), "--csv", str(MINI / "chest_xray"), str(table),
            "--out", str(out), "--size", "32", "--folds", "2", "--epochs", "1", "--models", "resnet18,resnet34",
            "--explain-images", "6", "--ig-steps", "4", "--occlusion-windows", "4", "--deepliftshap"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the collection's lateral and CT rows are left out, with a warning
        assert main(["explain", *args]) == 0
        assert "6 test images explained" in capsys.readouterr().out
        assert not (out / "profiles").exists() and not (out / "report.md").exists()  # only the stages asked for
        assert main(["study", *args]) == 0
    report = (out / "report.md").read_text()
    for part in ("| ResNet18 |", "| ResNet34 |", "## The shortcut", "## Dead feature maps", "fig4_COVID-19.png",
                 "fig9_naps_resnet34.png", "images of", "## Model complexity (Table 1)", "fig1_findings.png",
                 "fig2_hierarchy.png", "fig3_scores.png", "fig9_naps_resnet18_last_block.png", "micro Spec",
                 "Outputs: COVID-19, pneumonia, viral, bacterial, healthy."):  # fmt: skip
        assert part in report, part
    assert "## Localisation" not in report  # real images have no lesion masks
    padding = pd.read_csv(out / "padding.csv")
    assert set(padding.model) == {"(any)", "resnet18", "resnet34"} and (padding["mean"].between(0, 1)).all()
    # The even map's share is the padding's area: the Kermany images (wider than tall) have bands, and every
    # image's padding is a known share of it.
    area = padding[padding.method == "area of the padding (an even map)"].set_index("group")["mean"]
    assert 0 < area["pneumonia without COVID-19"] < 0.6
    shap = padding[padding.method.str.startswith("deepliftshap")]
    assert set(shap.model) == {"resnet18", "resnet34"} and (out / "maps_deepliftshap" / "resnet34.zarr").is_dir()
    assert (out / "cases.csv").is_file()
    maps = xr.open_zarr(out / "maps" / "resnet18.zarr")
    assert maps.sizes["sample"] == 6 and len(maps.data_vars) >= 6
    stored = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix in (".pt", ".npz", ".json") or
              p.name == "zarr.json"}  # fmt: skip
    stored.pop(out / "timings.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["study", *args]) == 0  # a second run: nothing prepared, trained, explained or profiled
    assert {p: p.stat().st_mtime_ns for p in stored} == stored


def test_the_gpu_script_passes_only_options_the_command_has():
    import re

    from covid_cxr.cli import build_parser

    script = Path(__file__).resolve().parents[1] / "scripts" / "full_study_gpu.sh"
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", script.read_text()))
    study = build_parser()._subparsers._group_actions[0].choices["study"]
    known = {flag for action in study._actions for flag in action.option_strings}
    assert {"--size", "--folds", "--device", "--pretrained", "--memory-budget", "--explain-images"} <= flags
    assert flags <= known, flags - known
