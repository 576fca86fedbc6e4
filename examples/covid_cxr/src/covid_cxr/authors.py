"""The study authors' own image list (``metadataV2.csv`` of their repository) over a user's copies of the
two collections: exactly their images, under their patient ids, so that their split files apply as published.

Their list is the COVID-19 image data collection's ``metadata.csv`` rows for the images they used, with the
Kermany images they drew appended (``finding`` ``No Finding``, ``Viral Pneumonia`` or ``Bacterial Pneumonia``,
``filename`` Kermany's file name, ``patientid`` their own renumbering). A row's image is looked up in the
collection's folder first (``folder/filename``, as the collection's table says), then by name among
Kermany's images.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .datasets import Record, finding_labels, frontal_xray, kermany, offset_of
from .labels import Hierarchy, UnknownFindingError

#: The columns a row needs; ``modality`` and ``folder`` are read where present, as the collection's loader does.
NEEDED_COLUMNS = ("patientid", "finding", "view", "filename")
#: The prefix of the subjects: one id space for both collections, as the authors numbered them.
SUBJECT_PREFIX = "authors"
#: Where Kermany's layout may hold an authors' file (their draw may come from any of its parts).
KERMANY_PARTS = ("train", "test", "val")


@dataclass(frozen=True)
class AuthorsSelection:
    """The authors' frontal X-ray images found in the local copies, and what those copies lack."""

    records: list[Record]
    #: The authors' finding (as they spell it) -> their frontal X-ray images with no local file.
    missing: Counter[str]
    #: The rows the study leaves out (lateral views, CT, other modalities), by view / modality.
    not_frontal: Counter[str]
    #: Rows naming a file an earlier row names (the list repeats one patient's series): studied once.
    repeated: int

    @property
    def listed(self) -> int:
        """The authors' distinct frontal X-ray images."""
        return len(self.records) + sum(self.missing.values())

    def summary(self) -> str:
        """One line for the log and the report: what was taken and what the local copies lack."""
        text = (f"The authors' list: {self.listed} frontal X-ray images ({sum(self.not_frontal.values())} rows of "
                f"other views or modalities and {self.repeated} repeated rows left out); {len(self.records)} are in "
                "your copies")  # fmt: skip
        lacking = sum(self.missing.values())
        if not lacking:
            return text + "."
        by_finding = "; ".join(f"{n} {finding}" for finding, n in self.missing.most_common())
        return f"{text}, {lacking} are not: {by_finding}."


def read_metadata(path: str | Path) -> pd.DataFrame:
    """The authors' table as text (ids such as ``117`` stay as written), with a ``ValueError`` naming the
    columns it lacks."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    missing = [column for column in NEEDED_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: the authors' metadata needs the columns {', '.join(NEEDED_COLUMNS)}; missing "
                         f"{missing}.")  # fmt: skip
    blank = table.index[table["patientid"].str.strip() == ""]
    if len(blank):
        raise ValueError(f"{path}: {len(blank)} rows have no patientid (e.g. the one of {table.filename[blank[0]]!r}); "
                         "the split files name patients by it.")  # fmt: skip
    return table


def frontal_rows(table: pd.DataFrame) -> tuple[pd.DataFrame, Counter[str], int]:
    """The rows of frontal X-rays, each file once; the others counted by view / modality; the repeats counted."""
    modality = table["modality"] if "modality" in table.columns else pd.Series("", index=table.index)
    keep = [frontal_xray(v, m) for v, m in zip(table["view"], modality, strict=True)]
    others = Counter(f"{v or '?'} / {m or '?'}" for v, m, k in zip(table["view"], modality, keep, strict=True) if not k)
    frontal = table[keep]
    repeated = frontal["filename"].duplicated()
    return frontal[~repeated], others, int(repeated.sum())


def kermany_files(root: str | Path | None) -> dict[str, Path]:
    """Kermany's local images by file name (found by the package's loader, so its layout checks apply)."""
    if root is None:
        return {}
    return {record.path.name: record.path for record in kermany(root, splits=KERMANY_PARTS)}


def local_image(row: pd.Series, cohen_root: Path | None, kermany_by_name: dict[str, Path]) -> tuple[Path, str] | None:
    """The local file of one of the authors' rows and its collection ("cohen" or "kermany", the sources the
    package's loaders give, so sample ids agree with theirs); None when neither copy holds it."""
    if cohen_root is not None:
        path = cohen_root / (row.get("folder") or "images") / row["filename"]
        if path.is_file():
            return path, "cohen"
    path = kermany_by_name.get(row["filename"])
    return (path, "kermany") if path is not None else None


def select_authors_images(
    metadata: str | Path, *, cohen: str | Path | None = None, kermany_root: str | Path | None = None,
    hierarchy: Hierarchy | None = None,
) -> AuthorsSelection:  # fmt: skip
    """The authors' frontal X-ray images that the local copies hold (``cohen``: the collection's folder,
    ``kermany_root``: Kermany's ``chest_xray``), each labelled by the authors' finding and with the authors'
    ``patientid`` as its subject (``authors:117``); and, by finding, the ones the copies lack."""
    hierarchy = hierarchy or Hierarchy.load()
    rows, not_frontal, repeated = frontal_rows(read_metadata(metadata))
    check_findings(rows["finding"], hierarchy, metadata)
    cohen_root = Path(cohen) if cohen is not None else None
    by_name = kermany_files(kermany_root)
    records, missing = [], Counter()
    for _, row in rows.iterrows():
        found = local_image(row, cohen_root, by_name)
        if found is None:
            missing[row["finding"].strip()] += 1
            continue
        path, source = found
        subject = f"{SUBJECT_PREFIX}:{row['patientid'].strip()}"
        records.append(Record(path, finding_labels(row["finding"], hierarchy), subject, row["view"].strip(), source,
                              offset_of(row.get("offset"))))  # fmt: skip
    return AuthorsSelection(records, missing, not_frontal, repeated)


def check_findings(findings: pd.Series, hierarchy: Hierarchy, metadata: str | Path) -> None:
    """Every finding of the authors' frontal rows must name labels: a finding left out silently would
    change their data set. Raise one :class:`UnknownFindingError` listing them all."""
    parts = {part for cell in findings.unique() for part in ([p for p in cell.split(",") if p.strip()] or [cell])}
    unknown = hierarchy.unknown(sorted(parts))  # a blank finding is one too: it would give an image no label
    if unknown:
        raise UnknownFindingError(f"{metadata}: findings no label of the hierarchy names: {unknown}; the labels are "
                                  f"{hierarchy.names()}.")  # fmt: skip
