"""The study authors' own lists: their image list (``metadataV2.csv``) over local copies of the two collections,
and their split files kept as published (a few patients on both train and test, warned and counted)."""

from __future__ import annotations

import csv
import functools
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from covid_cxr.authors import read_metadata, select_authors_images
from covid_cxr.cli import main
from covid_cxr.datasets import cohen_collection, kermany
from covid_cxr.labels import Hierarchy, UnknownFindingError
from covid_cxr.splits import leakage, load_split, named_twice, overlap_line
from PIL import Image

from xai_bench.testing import fails_in_one_line

SHARED = Path(__file__).resolve().parents[4] / "shared"
AUTHORS = SHARED / "diagnopp_data"
MINI = SHARED / "cxr_mini"
DEV = SHARED / "cxr_dev"
METADATA_COLUMNS = ["", "patientid", "offset", "finding", "view", "modality", "folder", "filename", "other_notes"]
KAGGLE = "cases from Kaggle dataset: Chest_X-Ray_Images_Pneumonia, View unknown, PA added by default"

# The authors' rows of the fixture: (patientid, finding, view, modality, filename), in the layout of their file.
ROWS = [
    ("1", "COVID-19", "PA", "X-ray", "c1.png"),
    ("1", "COVID-19", "L", "X-ray", "c1_lateral.png"),  # a lateral view: the study leaves it out
    ("2", "Pneumonia/Viral/SARS", "AP", "X-ray", "c2.jpg"),  # the collection's newer path spelling
    ("3", "COVID-19, ARDS", "AP Supine", "X-ray", "c3.png"),
    ("3", "COVID-19, ARDS", "AP Supine", "X-ray", "c3.png"),  # a repeated row: studied once
    ("4", "COVID-19", "PA", "X-ray", "c4.png"),  # no such file in the local copy
    ("5", "COVID-19", "Axial", "CT", "c5_ct.png"),
    ("10", "No Finding", "PA", "X-ray", "IM-0001-0001.jpeg"),
    ("11", "Viral Pneumonia", "PA", "X-ray", "person1_virus_2.jpeg"),
    ("12", "Bacterial Pneumonia", "PA", "X-ray", "person3_bacteria_4.jpeg"),
    ("13", "Viral Pneumonia", "PA", "X-ray", "person5_virus_6.jpeg"),  # in Kermany's test part
    ("14", "Bacterial Pneumonia", "PA", "X-ray", "person9_bacteria_9.jpeg"),  # not in the local copy
    ("15", "No Finding", "PA", "X-ray", "NORMAL2-IM-0009-0001.jpeg"),  # not in the local copy
]
COHEN_FILES = ["c1.png", "c1_lateral.png", "c2.jpg", "c3.png", "c5_ct.png"]
KERMANY_FILES = ["train/NORMAL/IM-0001-0001.jpeg", "train/NORMAL/IM-0002-0001.jpeg",
                 "train/PNEUMONIA/person1_virus_2.jpeg", "train/PNEUMONIA/person3_bacteria_4.jpeg",
                 "test/PNEUMONIA/person5_virus_6.jpeg"]  # fmt: skip


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 30), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path, format="PNG" if path.suffix == ".png" else "JPEG")


@pytest.fixture
def copies(tmp_path) -> dict[str, Path]:
    """The authors' list, a collection folder and a Kermany folder in their on-disk layouts, and a fold that
    names patient 1 on both sides."""
    metadata = tmp_path / "metadataV2.csv"
    with metadata.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(METADATA_COLUMNS)
        for i, (patient, finding, view, modality, filename) in enumerate(ROWS):
            note = ("Normal " if finding == "No Finding" else "Pneumonia ") + KAGGLE if int(patient) >= 10 else ""
            writer.writerow([i, patient, "0.0", finding, view, modality, "images", filename, note])
    cohen = tmp_path / "covid-chestxray-dataset"
    (cohen / "metadata.csv").parent.mkdir(parents=True)
    (cohen / "metadata.csv").write_text("patientid,finding,view,modality,folder,filename\n")
    for seed, name in enumerate(COHEN_FILES):
        _image(cohen / "images" / name, seed)
    chest_xray = tmp_path / "chest_xray"
    for seed, name in enumerate(KERMANY_FILES):
        _image(chest_xray / name, 100 + seed)
    fold = tmp_path / "fold0.txt"
    fold.write_text(json.dumps({"seed": 1701, "train": [1, 2, 10, 11], "test": [3, 12, 13, 1, 14], "val": []}))
    return {"metadata": metadata, "cohen": cohen, "kermany": chest_xray, "fold": fold}


def test_the_authors_frontal_images_found_locally_under_their_patient_ids(copies):
    selection = select_authors_images(copies["metadata"], cohen=copies["cohen"], kermany_root=copies["kermany"])
    found = {r.path.name: r for r in selection.records}
    assert list(found) == ["c1.png", "c2.jpg", "c3.png", "IM-0001-0001.jpeg", "person1_virus_2.jpeg",
                           "person3_bacteria_4.jpeg", "person5_virus_6.jpeg"]  # fmt: skip
    assert found["c1.png"].path == copies["cohen"] / "images" / "c1.png"
    assert found["person5_virus_6.jpeg"].path == copies["kermany"] / "test" / "PNEUMONIA" / "person5_virus_6.jpeg"
    assert {name: r.subject for name, r in found.items()} == {
        "c1.png": "authors:1", "c2.jpg": "authors:2", "c3.png": "authors:3", "IM-0001-0001.jpeg": "authors:10",
        "person1_virus_2.jpeg": "authors:11", "person3_bacteria_4.jpeg": "authors:12",
        "person5_virus_6.jpeg": "authors:13",
    }  # fmt: skip
    assert [r.sample_id for r in selection.records][:1] == ["cohen/c1.png"]  # the loaders' sample ids
    assert found["IM-0001-0001.jpeg"].sample_id == "kermany/IM-0001-0001.jpeg"
    assert {name: r.view for name, r in found.items() if r.source == "cohen"} == {
        "c1.png": "PA", "c2.jpg": "AP", "c3.png": "AP Supine"}  # fmt: skip
    labels = {name: set(r.labels) for name, r in found.items()}
    assert labels["c1.png"] == {"COVID-19", "viral", "pneumonia"}
    assert labels["c2.jpg"] == {"SARS", "viral", "pneumonia"}
    assert labels["c3.png"] == {"COVID-19", "viral", "pneumonia", "ARDS"}
    assert labels["IM-0001-0001.jpeg"] == {"healthy"}
    assert labels["person1_virus_2.jpeg"] == labels["person5_virus_6.jpeg"] == {"viral", "pneumonia"}
    assert labels["person3_bacteria_4.jpeg"] == {"bacterial", "pneumonia"}


def test_what_the_local_copies_lack_is_counted_by_the_authors_finding(copies):
    selection = select_authors_images(copies["metadata"], cohen=copies["cohen"], kermany_root=copies["kermany"])
    assert selection.missing == Counter({"COVID-19": 1, "Bacterial Pneumonia": 1, "No Finding": 1})
    assert selection.not_frontal == Counter({"L / X-ray": 1, "Axial / CT": 1})
    assert selection.repeated == 1 and selection.listed == 10
    assert selection.summary() == (
        "The authors' list: 10 frontal X-ray images (2 rows of other views or modalities and 1 repeated rows left "
        "out); 7 are in your copies, 3 are not: 1 COVID-19; 1 Bacterial Pneumonia; 1 No Finding."
    )
    # Without Kermany's copy, every Kermany row is missing; the collection's are still found.
    alone = select_authors_images(copies["metadata"], cohen=copies["cohen"])
    assert len(alone.records) == 3 and alone.missing["Viral Pneumonia"] == 2 and alone.missing["No Finding"] == 2


def test_a_table_without_the_needed_columns_or_with_unknown_findings_is_refused(copies, tmp_path):
    table = tmp_path / "no_view.csv"
    pd.read_csv(copies["metadata"], dtype=str).drop(columns=["view"]).to_csv(table, index=False)
    with pytest.raises(ValueError, match=r"needs the columns patientid, finding, view, filename; missing \['view'\]"):
        read_metadata(table)
    odd = tmp_path / "odd.csv"
    frame = pd.read_csv(copies["metadata"], dtype=str, keep_default_na=False)
    frame.loc[0, "finding"] = "Fungal Pneumonia"
    frame.to_csv(odd, index=False)
    with pytest.raises(UnknownFindingError, match=r"findings no label of the hierarchy names: \['Fungal Pneumonia'\]"):
        select_authors_images(odd, cohen=copies["cohen"])


def test_the_kermany_aliases_of_the_authors_findings():
    hierarchy = Hierarchy.load()
    assert hierarchy.canonical("Viral Pneumonia") == "viral"
    assert hierarchy.canonical("Bacterial Pneumonia") == "bacterial"


def test_a_fold_with_a_patient_on_both_sides_is_kept_as_published_with_a_warning(copies):
    with pytest.raises(ValueError, match=r"subjects on two sides of the split: \['1'\]"):
        load_split(copies["fold"])  # the package's default refuses such a split
    with pytest.warns(UserWarning, match=r"fold0.txt: 1 subjects are named on two sides of the split \(1\); kept"):
        split = load_split(copies["fold"], keep_overlap=True)
    assert named_twice(split) == {"1"} and split.val == ()
    records = select_authors_images(copies["metadata"], cohen=copies["cohen"], kermany_root=copies["kermany"]).records
    assert leakage(split, records) == {"authors:1": {"train", "test"}}  # counted, not refused
    assert [r.path.name for r in split.part(records, "train")] == ["c1.png", "c2.jpg", "IM-0001-0001.jpeg",
                                                                    "person1_virus_2.jpeg"]  # fmt: skip
    assert [r.path.name for r in split.part(records, "test")] == ["c1.png", "c3.png", "person3_bacteria_4.jpeg",
                                                                   "person5_virus_6.jpeg"]  # fmt: skip
    assert overlap_line([split, split]) == (
        "Subjects the split files name on two sides, kept as published: fold 0: 1 (1); fold 1: 1 (1)."
    )


def _warned(argv: list[str]) -> str:
    """Run the command in-process, expecting success; return its warnings, one a line (under pytest they are
    recorded rather than printed)."""
    with pytest.warns(UserWarning) as caught:
        assert main(argv) == 0
    return "\n".join(str(w.message) for w in caught)


def test_the_command_studies_the_authors_images_on_their_fold(copies, tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["data", "--cohen", str(copies["cohen"]), "--kermany", str(copies["kermany"]),
            "--authors-metadata", str(copies["metadata"]), "--split-files", str(copies["fold"]),
            "--size", "32", "--out", str(out)]  # fmt: skip
    warned = _warned(argv)
    printed = capsys.readouterr().out
    assert "7 are in your copies, 3 are not: 1 COVID-19; 1 Bacterial Pneumonia; 1 No Finding." in printed
    assert "kept as published: fold 0: 1 (1)." in printed
    assert "7 images prepared at 32 px; 1 folds" in printed
    assert "1 subjects are named on two sides of the split (1)" in warned  # load_split's warning
    assert "split 0: 1 subjects have images on two sides (e.g. ['authors:1'])" in warned  # the data stage's
    written = json.loads((out / "splits.json").read_text())
    assert "1" in written["train"] and "1" in written["test"]


_fails = functools.partial(fails_in_one_line, main)


def test_bad_authors_metadata_is_a_one_line_error(copies, tmp_path, capsys):
    common = ["data", "--cohen", str(copies["cohen"]), "--kermany", str(copies["kermany"]), "--out", str(tmp_path)]
    err = _fails([*common, "--authors-metadata", str(tmp_path / "nowhere.csv")], capsys)
    assert f"argument --authors-metadata: no file at {tmp_path / 'nowhere.csv'}" in err
    table = tmp_path / "no_filename.csv"
    table.write_text("patientid,finding,view\n1,COVID-19,PA\n")
    err = _fails([*common, "--authors-metadata", str(table)], capsys)
    assert err == (f"covid-cxr: error: {table}: the authors' metadata needs the columns patientid, finding, view, "
                   "filename; missing ['filename'].")  # fmt: skip
    err = _fails([*common, "--authors-metadata", str(copies["metadata"]), "--csv", str(tmp_path), str(table)], capsys)
    assert "leave out --csv" in err


# The real lists (../shared/diagnopp_data) over the real subsets (../shared/cxr_mini, ../shared/cxr_dev).

needs_lists = pytest.mark.skipif(not AUTHORS.is_dir(), reason="the authors' lists ../shared/diagnopp_data are absent")
#: Measured: the authors' frontal X-ray images each subset holds, by the authors' finding.
HELD = {
    "cxr_mini": {"COVID-19": 23, "No Finding": 23, "COVID-19, ARDS": 3, "Viral Pneumonia": 3,
                 "Bacterial Pneumonia": 3, "SARS": 2, "Streptococcus": 2, "E.Coli": 1, "Pneumocystis": 1},
    "cxr_dev": {"No Finding": 84, "COVID-19": 51, "Viral Pneumonia": 38, "Bacterial Pneumonia": 19},
}  # fmt: skip


def _subset(name: str) -> Path:
    root = SHARED / name
    if not (AUTHORS.is_dir() and root.is_dir()):
        pytest.skip(f"../shared/diagnopp_data or ../shared/{name} is not on this machine")
    return root


@pytest.mark.parametrize("name", ["cxr_mini", "cxr_dev"])
def test_the_authors_rows_a_real_subset_holds_map_to_their_files(name):
    root = _subset(name)
    selection = select_authors_images(AUTHORS / "metadataV2.csv", cohen=root / "covid-chestxray-dataset",
                                      kermany_root=root / "chest_xray")  # fmt: skip
    authors = read_metadata(AUTHORS / "metadataV2.csv").drop_duplicates("filename").set_index("filename")
    held = Counter(authors.loc[r.path.name, "finding"] for r in selection.records)
    assert held == Counter(HELD[name])
    assert selection.listed == 1304 and selection.repeated == 4  # 1308 frontal X-ray rows, one series listed twice
    assert sum(selection.not_frontal.values()) == 114  # 68 axial and 16 coronal CT, 29 lateral, 1 AP semi erect
    for record in selection.records:  # each image under the authors' patientid of its row
        assert record.subject == f"authors:{authors.loc[record.path.name, 'patientid']}"
    # Kermany's files: found by name in their folder, labelled alike by the authors' finding and by the file's name.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the collection loader's count of lateral and CT rows
        own = {r.path: r for r in cohen_collection(root / "covid-chestxray-dataset") + kermany(root / "chest_xray")}
    for record in selection.records:
        assert record.labels == own[record.path].labels, record.path
        if record.source == "cohen":  # the collection's rows keep the collection's own patient ids
            assert record.subject.split(":")[1] == own[record.path].subject.split(":")[1]


@needs_lists
def test_a_kermany_row_resolves_to_that_exact_file_with_the_authors_patientid():
    root = _subset("cxr_mini")
    selection = select_authors_images(AUTHORS / "metadataV2.csv", kermany_root=root / "chest_xray")
    found = {r.path.name: r for r in selection.records}
    record = found["IM-0225-0001.jpeg"]  # the authors' row: patientid 248, No Finding
    assert record.path == root / "chest_xray" / "train" / "NORMAL" / "IM-0225-0001.jpeg"
    assert (record.subject, record.source, set(record.labels)) == ("authors:248", "kermany", {"healthy"})
    assert all(r.source == "kermany" for r in selection.records)  # no collection folder given: none of its rows


@needs_lists
def test_the_authors_folds_name_these_patients_on_both_train_and_test():
    with pytest.warns(UserWarning, match="kept as published"):
        folds = [load_split(AUTHORS / f"V2_60_40_00fold{k}.txt", keep_overlap=True) for k in (0, 2, 3)]
    folds.insert(1, load_split(AUTHORS / "V2_60_40_00fold1.txt"))  # no overlap: loads without a warning
    folds.append(load_split(AUTHORS / "V2_60_40_00fold4.txt"))
    assert [sorted(named_twice(s), key=int) for s in folds] == [["117", "178"], [], ["117", "173"],
                                                               ["117", "173", "178"], []]  # fmt: skip
    assert overlap_line(folds) == ("Subjects the split files name on two sides, kept as published: fold 0: 2 "
                                   "(117, 178); fold 1: 0; fold 2: 2 (117, 173); fold 3: 3 (117, 173, 178); "
                                   "fold 4: 0.")  # fmt: skip
    assert [s.seed for s in folds] == [1701, 1801, 806, 18011993, 8061994] and all(s.val == () for s in folds)


@pytest.mark.skipif(not (AUTHORS.is_dir() and MINI.is_dir()), reason="../shared/diagnopp_data or cxr_mini is absent")
def test_the_command_runs_the_authors_folds_on_cxr_mini(tmp_path, capsys):
    folds = [str(AUTHORS / f"V2_60_40_00fold{k}.txt") for k in range(5)]
    argv = ["data", "--cohen", str(MINI / "covid-chestxray-dataset"), "--kermany", str(MINI / "chest_xray"),
            "--authors-metadata", str(AUTHORS / "metadataV2.csv"), "--split-files", *folds, "--size", "32",
            "--out", str(tmp_path)]  # fmt: skip
    warned = _warned(argv)
    printed = capsys.readouterr().out
    assert "61 are in your copies, 1243 are not: 482 No Finding; 247 Viral Pneumonia;" in printed
    assert "fold 0: 2 (117, 178); fold 1: 0; fold 2: 2 (117, 173); fold 3: 3 (117, 173, 178); fold 4: 0." in printed
    assert "61 images prepared at 32 px; 5 folds" in printed
    # Patient 173 is in cxr_mini: on the folds that name it twice its images are on both sides.
    assert "split 2: 1 subjects have images on two sides (e.g. ['authors:173'])" in warned
    assert "split 3: 1 subjects have images on two sides (e.g. ['authors:173'])" in warned
    assert "split 0: 1 subjects" not in warned
