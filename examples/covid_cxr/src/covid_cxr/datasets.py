"""Loaders for the study's data in their published layouts, and for a user's own folder + CSV.

Each returns :class:`Record` s: an image file, its labels (with ancestors), the subject it comes
from (prefixed by the collection, so ids of two collections never meet), its view and source.
"""

from __future__ import annotations

import csv
import math
import random
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .labels import Hierarchy, UnknownFindingError

FRONTAL_VIEWS = ("PA", "AP", "AP Supine")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Record:
    path: Path
    labels: frozenset[str]
    subject: str
    view: str
    source: str
    #: Days since the subject's first image (the collection's ``offset``), where known: follow-up series.
    offset: float | None = None

    @property
    def sample_id(self) -> str:
        return f"{self.source}/{self.path.name}"


def frontal_xray(view: str, modality: str) -> bool:
    """Whether a row of the collection's table is one the study keeps: a frontal X-ray (PA, AP, AP
    Supine). A blank modality counts as X-ray: the collection's older rows leave it out."""
    return view.strip() in FRONTAL_VIEWS and modality.strip() in ("X-ray", "")


def finding_labels(finding: str, hierarchy: Hierarchy) -> frozenset[str]:
    """The labels, ancestors included, of a finding cell of the collection's table: findings separated by
    commas (``COVID-19, ARDS``), each a label, an alias or a path (``Pneumonia/Viral/COVID-19``)."""
    return hierarchy.closure(part for part in finding.split(",") if part.strip())


def offset_of(cell: str | None) -> float | None:
    """The collection's ``offset`` cell as days, or None where blank or not a number."""
    try:
        days = float(cell) if cell is not None and cell.strip() else None
    except ValueError:
        return None
    return days if days is not None and math.isfinite(days) else None


def cohen_collection(root: str | Path, hierarchy: Hierarchy | None = None) -> list[Record]:
    """The COVID-19 image data collection (``metadata.csv`` + ``images/``): frontal X-rays only.

    Findings in the old spelling (``COVID-19, ARDS``, ``No Finding``, ...) and the newer path
    spelling (``Pneumonia/Viral/COVID-19``) both map onto the hierarchy. Rows of other views (L,
    CT), other modalities or findings the hierarchy lacks are left out, and counted in a warning.
    """
    hierarchy = hierarchy or Hierarchy.load()
    root = Path(root)
    table = root / "metadata.csv"
    if not table.is_file():
        raise FileNotFoundError(f"no metadata.csv in {root} (the COVID-19 image data collection's layout).")
    records, skipped = [], Counter()
    with table.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            view, modality = row.get("view", "").strip(), row.get("modality", "").strip()
            if not frontal_xray(view, modality):
                skipped[f"view {view or '?'} / {modality or '?'}"] += 1
                continue
            path = root / (row.get("folder") or "images") / row["filename"]
            if not path.is_file():
                skipped["missing file"] += 1
                continue
            try:
                labels = finding_labels(row["finding"], hierarchy)
            except UnknownFindingError:
                skipped[f"finding {row['finding']!r}"] += 1
                continue
            records.append(Record(path, labels, f"cohen:{row['patientid'].strip()}", view, "cohen",
                                  offset_of(row.get("offset"))))  # fmt: skip
    if skipped:
        warnings.warn(f"{root}: left out {sum(skipped.values())} rows: {dict(skipped)}", stacklevel=2)
    return records


_PERSON = re.compile(r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)")


def kermany(root: str | Path, splits: Sequence[str] = ("train", "test")) -> list[Record]:
    """Kermany et al.'s Chest X-ray Images (Pneumonia): ``{train,test}/{NORMAL,PNEUMONIA}/*.jpeg``.

    NORMAL is healthy; PNEUMONIA files say ``bacteria`` or ``virus`` in their names; the person id
    (``person1052``, ``IM-0115``, ``NORMAL2-IM-0007``) starts the name. The published train/test
    split is ignored: the study splits by subject itself.
    """
    hierarchy = Hierarchy.load()
    root = Path(root)
    records = []
    for split in splits:
        for folder, default in (("NORMAL", "healthy"), ("PNEUMONIA", None)):
            for path in sorted((root / split / folder).glob("*")):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                kind = "bacterial" if "bacteria" in path.name else "viral" if "virus" in path.name else default
                if kind is None:
                    raise ValueError(f"{path}: a PNEUMONIA file should say 'bacteria' or 'virus' in its name.")
                person = _PERSON.match(path.name)
                subject = person.group(1) if person else path.stem
                records.append(Record(path, hierarchy.closure([kind]), f"kermany:{subject}", "PA", "kermany"))
    if not records:
        raise FileNotFoundError(f"no images under {root}/{{train,test}}/{{NORMAL,PNEUMONIA}} (Kermany's layout).")
    return records


def study_sample(
    records: Sequence[Record], *, healthy: int = 500, viral: int = 250, bacterial: int = 250, seed: int = 0
) -> list[Record]:
    """The study's draw from Kermany's images: ``healthy``, ``viral`` and ``bacterial`` images, by seed
    (all of a kind where there are fewer, with a warning)."""
    rng = random.Random(seed)
    chosen: list[Record] = []
    for kind, count in (("healthy", healthy), ("viral", viral), ("bacterial", bacterial)):
        pool = sorted((r for r in records if kind in r.labels), key=lambda r: r.sample_id)
        if len(pool) < count:
            warnings.warn(f"only {len(pool)} {kind} images, {count} asked for: taking all.", stacklevel=2)
        chosen += rng.sample(pool, min(count, len(pool)))
    return chosen


def csv_folder(root: str | Path, table: str | Path, hierarchy: Hierarchy | None = None) -> list[Record]:
    """A user's own data: images under ``root`` and a CSV with ``file``, ``labels`` (separated by ``;``),
    optional ``patient_id`` (else each image is its own subject) and optional ``view``.

    Labels are the hierarchy's names or aliases; a hierarchy :meth:`~Hierarchy.with_labels` reads one's
    own. Labels it cannot read are an :class:`UnknownFindingError` that lists them all, with a line of each.
    """
    hierarchy = hierarchy or Hierarchy.load()
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder {root} (the folder the CSV's file column is relative to).")
    records, unknown = [], {}
    with open(table, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", "labels"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{table}: the CSV needs the columns file and labels; missing {sorted(missing)}.")
        for line, row in enumerate(reader, start=2):
            path = root / row["file"]
            if not path.is_file():
                raise FileNotFoundError(f"{table}:{line}: no image {path}.")
            findings = [p for p in (row["labels"] or "").split(";") if p.strip()]
            missed = hierarchy.unknown(findings)
            for finding in missed:
                unknown.setdefault(finding, line)
            if missed:
                continue
            subject = (row.get("patient_id") or "").strip() or row["file"]
            labels = hierarchy.closure(findings)
            records.append(Record(path, labels, f"csv:{subject}", (row.get("view") or "").strip(), "csv"))
    if unknown:
        listed = ", ".join(f"{name!r} (line {line})" for name, line in list(unknown.items())[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise UnknownFindingError(
            f"{table}: unknown labels {listed}{more}; the labels are {hierarchy.names()}; map yours "
            "onto them with a label map (covid-cxr --labels FILE: a JSON object such as "
            '{"covid pneumonia": "COVID-19", "clear": "healthy"}).'
        )
    return records
