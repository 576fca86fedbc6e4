"""The study's data layer: label hierarchy, the published layouts, preprocessing and subject-wise splits."""

from __future__ import annotations

import csv
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from covid_cxr.datasets import cohen_collection, csv_folder, kermany, study_sample
from covid_cxr.labels import Hierarchy, UnknownFindingError
from covid_cxr.preprocess import prepare
from covid_cxr.splits import load_split, subject_splits
from PIL import Image

MINI = Path(__file__).resolve().parents[4] / "shared" / "cxr_mini"
needs_mini = pytest.mark.skipif(not MINI.is_dir(), reason="the real subset ../shared/cxr_mini is not on this machine")


def test_findings_imply_their_ancestors_in_both_spellings():
    h = Hierarchy.load()
    assert h.closure(["COVID-19"]) == {"COVID-19", "viral", "pneumonia"}
    assert h.closure(["Pneumonia/Viral/COVID-19"]) == h.closure(["COVID-19"])
    assert h.closure(["COVID-19", " ARDS"]) == {"COVID-19", "viral", "pneumonia", "ARDS"}
    assert h.closure(["Pneumocystis"]) == {"Pneumocystis", "fungal", "pneumonia"}
    assert h.closure(["No Finding"]) == {"healthy"}
    assert h.targets(h.closure(["Streptococcus"])) == [0, 1, 0]  # COVID-19, pneumonia, healthy
    with pytest.raises(UnknownFindingError, match="unknown finding 'Tuberculosis'; add it"):
        h.closure(["Tuberculosis"])


def _write_images(folder: Path, names, size=(40, 30)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, size[::-1], dtype=np.uint8), mode="L").save(folder / name)


def test_the_collection_reads_the_newer_path_spelling_and_frontal_views_only(tmp_path):
    _write_images(tmp_path / "images", ["a.png", "b.png", "c.png"])
    rows = [
        {"patientid": "7", "finding": "Pneumonia/Viral/COVID-19", "view": "AP Supine", "modality": "X-ray",
         "folder": "images", "filename": "a.png"},
        {"patientid": "7", "finding": "Pneumonia/Bacterial/Streptococcus", "view": "L", "modality": "X-ray",
         "folder": "images", "filename": "b.png"},
        {"patientid": "8", "finding": "No Finding", "view": "PA", "modality": "X-ray", "folder": "images",
         "filename": "c.png"},
    ]  # fmt: skip
    with (tmp_path / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.warns(UserWarning, match="left out 1 rows"):
        records = cohen_collection(tmp_path)
    assert [(r.subject, sorted(r.labels)) for r in records] == [
        ("cohen:7", ["COVID-19", "pneumonia", "viral"]),
        ("cohen:8", ["healthy"]),
    ]


def test_a_folder_and_csv_of_ones_own(tmp_path):
    _write_images(tmp_path / "scans", ["p1.png", "p2.png"])
    table = tmp_path / "labels.csv"
    table.write_text("file,labels,patient_id\np1.png,COVID-19;ARDS,A\np2.png,No Finding,\n")
    records = csv_folder(tmp_path / "scans", table)
    assert records[0].labels == {"COVID-19", "viral", "pneumonia", "ARDS"} and records[0].subject == "csv:A"
    assert records[1].subject == "csv:p2.png"  # no patient id: each image is its own subject
    table.write_text("file,labels\np1.png,Tuberculosis\n")
    with pytest.raises(UnknownFindingError, match=r"labels.csv: unknown labels 'Tuberculosis' \(line 2\);"):
        csv_folder(tmp_path / "scans", table)


@needs_mini
def test_the_published_layouts_of_the_real_subset():
    with pytest.warns(UserWarning, match="left out 2 rows"):  # one lateral view, one CT
        cohen = cohen_collection(MINI / "covid-chestxray-dataset")
    assert len(cohen) == 49
    assert Counter("COVID-19" in r.labels for r in cohen)[True] == 41 - 1  # 41 COVID rows, one of them CT
    assert {r.view for r in cohen} == {"PA", "AP", "AP Supine"}
    assert "cohen:311b" in {r.subject for r in cohen}
    ker = kermany(MINI / "chest_xray")
    kinds = Counter(next(k for k in ("healthy", "viral", "bacterial") if k in r.labels) for r in ker)
    assert kinds == {"healthy": 40, "viral": 20, "bacterial": 20}
    assert all(r.subject.startswith("kermany:") and "_" not in r.subject for r in ker)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drawn = study_sample(ker, seed=3)
    assert [str(w.message) for w in caught] == [
        f"only {n} {kind} images, {asked} asked for: taking all."
        for n, kind, asked in ((40, "healthy", 500), (20, "viral", 250), (20, "bacterial", 250))
    ]
    assert len(drawn) == 80 and study_sample(ker, healthy=5, viral=5, bacterial=5, seed=3) == study_sample(
        ker, healthy=5, viral=5, bacterial=5, seed=3
    )


@needs_mini
def test_real_images_of_every_mode_prepare_to_squares_with_exact_padding_masks():
    files = sorted((MINI / "covid-chestxray-dataset" / "images").glob("*"))
    for path in files[:12] + sorted((MINI / "chest_xray" / "train" / "PNEUMONIA").glob("*"))[:3]:
        with Image.open(path) as img:
            w, h = img.size
        prepared = prepare(path, size=96)
        assert prepared.image.shape == (3, 96, 96)
        assert float(prepared.image.min()) >= 0 and float(prepared.image.max()) <= 1
        assert (prepared.image[:, prepared.padding] == 0).all()
        short = round(min(w, h) * 96 / max(w, h))
        assert int((~prepared.padding).sum()) == 96 * short


def test_preprocessing_pads_the_shorter_side_and_clips_to_percentiles():
    wide = np.tile(np.linspace(0, 255, 200), (100, 1))  # 200 x 100, a ramp
    prepared = prepare(wide, size=50, low=1, high=95)
    rows = (~prepared.padding).any(1)
    assert int(rows.sum()) == 25 and bool(prepared.padding[0].all()) and bool(prepared.padding[-1].all())
    content = prepared.image[0][~prepared.padding].reshape(25, 50)
    assert float(content.max()) == 1.0 and float((content == 1.0).float().mean()) > 0.04  # the top 5% clipped


def test_subject_wise_splits_never_share_a_subject_and_follow_their_seed(tmp_path):
    from covid_cxr.datasets import Record

    h = Hierarchy.load()
    findings = [["COVID-19"], ["No Finding"], ["Streptococcus"]]
    records = [Record(Path(f"{i}.png"), h.closure(findings[i % 3]), f"s{i // 2}", "PA", "x") for i in range(300)]
    splits = subject_splits(records, folds=5, seed=11)
    assert len({s.test for s in splits}) == 5  # five different test sets
    for split in splits:
        train, val, test = set(split.train), set(split.val), set(split.test)
        assert not (train & test or train & val or val & test)
        assert len(test) == pytest.approx(0.4 * 150, abs=3)
        assert {r.subject for r in split.part(records, "test")} == test
    assert subject_splits(records, folds=5, seed=11) == splits
    path = tmp_path / "split.json"
    path.write_text(splits[0].to_json())
    assert load_split(path) == splits[0]
    path.write_text(json.dumps({"seed": 1, "train": ["a", "b"], "test": ["b"], "val": []}))
    with pytest.raises(ValueError, match="subjects on two sides of the split: \\['b'\\]"):
        load_split(path)


def test_split_files_may_name_images_and_leakage_counts_the_subjects_they_split():
    from covid_cxr.datasets import Record
    from covid_cxr.splits import Split, leakage, unmatched

    h = Hierarchy.load()
    records = [Record(Path(f"images/p{i // 2}_{i}.png"), h.closure(["COVID-19"]), f"cohen:{i // 2}", "PA", "cohen")
               for i in range(8)]  # fmt: skip  # four subjects, two images each
    by_subject = Split(0, ("0", "cohen:1"), ("2",), ("3",))  # with or without the collection prefix
    assert leakage(by_subject, records) == {}
    assert [r.sample_id for r in by_subject.part(records, "test")] == ["cohen/p3_6.png", "cohen/p3_7.png"]
    # Images split one by one, as an image-wise split does: subjects 0 and 3 end up on two sides.
    by_image = Split(0, ("p0_0", "p1_2", "p1_3", "p3_6.png"), ("p2_4", "p2_5"), ("p0_1", "p3_7"))
    assert leakage(by_image, records) == {"cohen:0": {"train", "test"}, "cohen:3": {"train", "test"}}
    assert unmatched(Split(0, ("0", "1"), (), ("2", "3", "p9_1")), records) == {"p9_1"}
    assert leakage(Split(0, ("0", "1"), (), ("2", "3", "p9_1")), records) == {}
    with pytest.raises(ValueError, match="cohen/p0_0.png is named on two sides of the split \\(train, test\\)"):
        leakage(Split(0, ("0",), (), ("p0_0",)), records)


def test_an_image_wise_split_leaks_the_subjects_with_several_images():
    from covid_cxr.datasets import Record
    from covid_cxr.splits import image_split_leak

    h = Hierarchy.load()
    alone = [Record(Path(f"{i}.png"), h.closure(["COVID-19"]), f"s{i}", "PA", "x") for i in range(100)]
    assert image_split_leak(alone, seed=3) == 0.0  # one image per subject: nothing to leak
    pairs = [Record(Path(f"{i}.png"), h.closure(["COVID-19"]), f"s{i // 2}", "PA", "x") for i in range(1000)]
    # Each test image's partner is in training with probability about 0.6 (the training share).
    assert 0.5 < image_split_leak(pairs, seed=3) < 0.7
