"""The study's stages run end to end on real images and a second run does nothing again."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from covid_cxr.study import StudyConfig, data_stage, evaluate_stage, train_stage

MINI = Path(__file__).resolve().parents[2] / "shared" / "cxr_mini"


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
