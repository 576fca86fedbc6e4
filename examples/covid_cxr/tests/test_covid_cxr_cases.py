"""What the paper's case figures are drawn from: the images one model gets wrong (Fig. 7) and a
subject's follow-up series (Fig. 8), and the explained images that include that series."""

from __future__ import annotations

import csv

import numpy as np
import torch
from covid_cxr.cases import single_model_errors
from covid_cxr.datasets import cohen_collection, offset_of
from covid_cxr.prepared import PreparedSet
from covid_cxr.study import explained_rows, followup_series
from PIL import Image

OUTPUTS = ("COVID-19", "pneumonia", "healthy")


def test_a_case_is_one_model_wrong_and_every_other_right():
    truth = np.array([[1, 1, 0], [0, 0, 1], [1, 1, 0]])
    probs = {
        "resnet18": np.array([[0.9, 0.8, 0.1], [0.2, 0.1, 0.9], [0.3, 0.9, 0.1]]),
        "resnet34": np.array([[0.8, 0.9, 0.2], [0.1, 0.6, 0.8], [0.4, 0.9, 0.2]]),
        "densenet161": np.array([[0.2, 0.9, 0.1], [0.1, 0.2, 0.7], [0.9, 0.9, 0.1]]),
    }
    cases = single_model_errors(probs, truth, OUTPUTS, ["a", "b", "c"])
    # a/COVID-19: only DenseNet161 says no (a false negative); b/pneumonia: only ResNet34 says yes (a false
    # positive); c/COVID-19: two models wrong, so no case.
    assert cases[["sample", "output", "model", "error"]].values.tolist() == [
        ["a", "COVID-19", "densenet161", "false negative"],
        ["b", "pneumonia", "resnet34", "false positive"],
    ]
    assert cases.iloc[0]["probability"] == 0.2 and cases.iloc[0]["others"] == np.mean([0.9, 0.8])
    assert single_model_errors({"resnet18": probs["resnet18"]}, truth, OUTPUTS, ["a", "b", "c"]).empty


def _prepared(offsets, subjects, labels) -> PreparedSet:
    n = len(offsets)
    return PreparedSet(
        images=torch.zeros(n, 3, 8, 8, dtype=torch.uint8), targets=torch.zeros(n, 3),
        padding=torch.zeros(n, 8, 8, dtype=torch.bool), lesions=None, sample_ids=[f"s{i}" for i in range(n)],
        subjects=subjects, sources=["cohen"] * n, labels=labels, outputs=OUTPUTS, offsets=offsets,
    )  # fmt: skip


def test_the_longest_covid_series_in_the_order_of_its_days():
    covid, healthy = ["COVID-19", "viral", "pneumonia"], ["healthy"]
    prepared = _prepared(
        offsets=[5.0, 0.0, None, 2.0, 0.0, 1.0, 9.0, 0.0, 3.0],
        subjects=["p1", "p1", "p1", "p1", "p2", "p2", "p1", "p3", "p3"],
        labels=[covid, covid, covid, covid, covid, covid, covid, healthy, healthy],
    )
    # p1 has four images with days (row 2 has none), p2 two, p3 is healthy.
    assert followup_series(prepared, range(9)) == [1, 3, 0, 6]
    assert followup_series(prepared, range(9), longest=3) == [1, 0, 6]  # days 0, 5, 9: spread, ends kept
    assert followup_series(prepared, [4, 5, 7, 8]) == [4, 5]
    assert followup_series(prepared, [0, 4, 7]) == []  # no subject with two
    assert followup_series(_prepared([None] * 3, ["a"] * 3, [covid] * 3), range(3)) == []


def test_the_explained_images_begin_with_the_series_and_then_take_each_kind_in_turn():
    covid = ["COVID-19", "viral", "pneumonia"]
    kinds = [covid] * 4 + [["bacterial", "pneumonia"]] * 3 + [["healthy"]] * 3
    prepared = _prepared([0.0, 4.0, 8.0, None, None, None, None, None, None, None], ["p1"] * 3 + list("abcdefg"),
                         kinds)  # fmt: skip
    chosen = explained_rows(prepared, list(range(10)), 6)
    assert {0, 1, 2} <= set(chosen) and len(chosen) == 6  # the series (at most half of six)
    assert {3, 4, 7} <= set(chosen)  # then a COVID-19, a bacterial and a healthy image
    assert explained_rows(prepared, list(range(10)), None) == list(range(10))


def test_the_collections_offsets_are_read_as_days(tmp_path):
    (tmp_path / "images").mkdir()
    rows = [("1", "0", "a.png"), ("1", "7", "b.png"), ("2", "", "c.png"), ("3", "n/a", "d.png")]
    with (tmp_path / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patientid", "offset", "finding", "view", "modality", "folder", "filename"])
        for patient, offset, name in rows:
            Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "images" / name)
            writer.writerow([patient, offset, "COVID-19", "PA", "X-ray", "images", name])
    assert [r.offset for r in cohen_collection(tmp_path)] == [0.0, 7.0, None, None]
    assert offset_of(" 3.5 ") == 3.5 and offset_of("inf") is None and offset_of(None) is None
