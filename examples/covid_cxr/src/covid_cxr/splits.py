"""Subject-wise splits: no subject's images on both sides, 60/40 train/test over folds, a validation part
carved from train for choosing checkpoints; or the study authors' split files."""

from __future__ import annotations

import json
import random
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .datasets import Record


@dataclass(frozen=True)
class Split:
    seed: int
    train: tuple[str, ...]  # subjects
    val: tuple[str, ...]
    test: tuple[str, ...]

    def part(self, records: Sequence[Record], name: str) -> list[Record]:
        """The records of ``name`` ("train", "val" or "test"), matched as :func:`identifiers` says."""
        wanted = set(getattr(self, name))
        return [r for r in records if wanted & identifiers(r.subject, r.sample_id)]

    def to_json(self) -> str:
        """The study authors' one-line format."""
        return json.dumps(
            {"seed": self.seed, "train": list(self.train), "test": list(self.test), "val": list(self.val)}
        )


def identifiers(subject: str, sample_id: str) -> set[str]:
    """The ids a split may name an image by: its subject with or without the collection prefix
    (``cohen:6`` or ``6``), or the image's file name with or without its suffix. Split files that
    name images rather than subjects are read too; :func:`leakage` tells what that costs."""
    name = sample_id.split("/", 1)[-1]
    return {subject, subject.split(":", 1)[-1], name, Path(name).stem}


def leakage(split: Split, records: Sequence[Record]) -> dict[str, set[str]]:
    """Subjects with images on more than one side of ``split`` (train, val, test), and those sides.

    An image named on two sides by different ids (its subject on one, its file on the other) is an
    error: that is no split. One whose id the split itself names on two sides (:func:`named_twice`, as
    the study authors' folds do) is counted as leaked. Ids that name no image here are counted by
    :func:`unmatched` (the loaders leave out lateral views, missing files and unknown findings, so a
    split made on the full collection may name images this data lacks)."""
    sides: dict[str, set[str]] = defaultdict(set)
    twice = named_twice(split)
    for record in records:
        ids = identifiers(record.subject, record.sample_id)
        found = [part for part in ("train", "val", "test") if ids & set(getattr(split, part))]
        if len(found) > 1 and not ids & twice:
            raise ValueError(f"{record.sample_id} is named on two sides of the split ({', '.join(found)}).")
        sides[record.subject].update(found)
    return {subject: found for subject, found in sides.items() if len(found) > 1}


def named_twice(split: Split) -> set[str]:
    """The ids ``split`` names on more than one side (train, val, test)."""
    train, val, test = set(split.train), set(split.val), set(split.test)
    return train & test | val & (train | test)


def overlap_line(splits: Sequence[Split]) -> str:
    """One line for the log and the report: per fold, the ids it names on two sides (kept as given)."""
    folds = [sorted(named_twice(split)) for split in splits]
    parts = [f"fold {k}: {len(ids)}" + (f" ({', '.join(ids[:10])})" if ids else "") for k, ids in enumerate(folds)]
    return f"Subjects the split files name on two sides, kept as published: {'; '.join(parts)}."


def unmatched(split: Split, records: Sequence[Record]) -> set[str]:
    """The ids of ``split`` that name no image of ``records``."""
    known: set[str] = set()
    for record in records:
        known |= identifiers(record.subject, record.sample_id)
    return (set(split.train) | set(split.val) | set(split.test)) - known


def subject_splits(
    records: Sequence[Record], *, folds: int = 5, test: float = 0.4, val: float = 0.1, seed: int = 0
) -> list[Split]:
    """``folds`` random subject-wise splits (seed ``seed + fold``), stratified by each subject's label set:
    ``test`` of the subjects to test, ``val`` of the rest to validation, the others to training."""
    if not 0 < test < 1 or not 0 <= val < 1:
        raise ValueError(f"test must be in (0, 1) and val in [0, 1), got {test} and {val}.")
    by_stratum: dict[str, list[str]] = defaultdict(list)
    labels_of: dict[str, set[str]] = defaultdict(set)
    for record in records:
        labels_of[record.subject].update(record.labels)
    for subject, labels in sorted(labels_of.items()):
        by_stratum[";".join(sorted(labels))].append(subject)
    result = []
    for fold in range(folds):
        rng = random.Random(seed + fold)
        train, val_part, test_part = [], [], []
        for stratum in sorted(by_stratum):
            subjects = list(by_stratum[stratum])
            rng.shuffle(subjects)
            n_test = round(len(subjects) * test)
            rest = subjects[n_test:]
            n_val = round(len(rest) * val)
            test_part += subjects[:n_test]
            val_part += rest[:n_val]
            train += rest[n_val:]
        result.append(Split(seed + fold, tuple(sorted(train)), tuple(sorted(val_part)), tuple(sorted(test_part))))
    return result


def load_split(path: str | Path, *, keep_overlap: bool = False) -> Split:
    """A split in the study authors' format: one JSON line ``{"seed", "train", "test", "val"}`` of subject ids.

    Subjects named on two sides are an error, unless ``keep_overlap``: the authors' own folds name a few
    patients in both train and test, and reproducing their study means keeping that (with a warning
    that counts them; their images are then trained and tested on)."""
    data = json.loads(Path(path).read_text())
    missing = {"seed", "train", "test"} - set(data)
    if missing:
        raise ValueError(f"{path}: a split file needs seed, train and test (and val); missing {sorted(missing)}.")
    train, test_part, val_part = (tuple(str(s) for s in data.get(k, [])) for k in ("train", "test", "val"))
    split = Split(int(data["seed"]), train, val_part, test_part)
    both = sorted(named_twice(split))
    if both and not keep_overlap:
        raise ValueError(f"{path}: subjects on two sides of the split: {both[:10]} (keep_overlap=True keeps "
                         "them, as reproducing the study authors' folds needs).")  # fmt: skip
    if both:
        warnings.warn(f"{path}: {len(both)} subjects are named on two sides of the split ({', '.join(both[:10])}); "
                      "kept as published, so their images are trained and tested on.", stacklevel=2)  # fmt: skip
    return split


def image_split_leak(records: Sequence[Record], *, test: float = 0.4, seed: int = 0) -> float:
    """The share of test images whose subject also has an image in training when ``records`` are split
    by image rather than by subject (``test`` of the images to test, drawn with ``seed``): what an
    image-wise split leaks."""
    order = list(records)
    random.Random(seed).shuffle(order)
    n_test = round(len(order) * test)
    trained = {r.subject for r in order[n_test:]}
    tested = order[:n_test]
    return sum(r.subject in trained for r in tested) / max(1, len(tested))
