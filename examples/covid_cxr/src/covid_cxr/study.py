"""The study's stages over one output folder, each resumable: data, train, evaluate (explain, profile,
figures and report build on what these leave behind).

    folder/
      data/prepared-<size>.pt        every image at the study's size, labels, padding and lesion masks
      splits.json                    the subject-wise folds
      checkpoints/fold<k>/<model>.pt the trained models (chosen on validation)
      predictions/fold<k>.npz        test probabilities per model
      table2.csv, table2.md          the scores beside the paper's
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .datasets import Record
from .models import ARCHITECTURES, NAMES
from .prepared import PreparedSet, prepare_set
from .scores import majority_vote, mean_probability, multilabel_scores, threshold, write_table2
from .splits import Split, subject_splits
from .train import TrainConfig, predict, train


@dataclass(frozen=True)
class StudyConfig:
    size: int = 512
    folds: int = 5
    models: tuple[str, ...] = ARCHITECTURES
    epochs: int = 20
    batch_size: int = 16
    seed: int = 0
    pretrained: bool = False
    device: str = "cpu"
    threshold: float = 0.5

    def training(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, seed=self.seed,
                           pretrained=self.pretrained, device=self.device)  # fmt: skip


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)

    def measure(self, stage: str, work: Callable[[], object]) -> object:
        start = time.perf_counter()
        result = work()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
        return result


def data_stage(records: Sequence[Record], folder: Path, config: StudyConfig, *, lesions=None,
               progress: bool = True) -> tuple[PreparedSet, list[Split]]:  # fmt: skip
    """Prepare the images and draw the folds (both kept in ``folder``; a second call reads them)."""
    prepared = prepare_set(records, config.size, folder / "data" / f"prepared-{config.size}.pt", lesions=lesions,
                           progress=progress)  # fmt: skip
    path = folder / "splits.json"
    splits = subject_splits(records, folds=config.folds, seed=config.seed)
    lines = "\n".join(split.to_json() for split in splits) + "\n"
    if not path.exists() or path.read_text() != lines:
        path.write_text(lines)
    return prepared, splits


def train_stage(prepared: PreparedSet, splits: Sequence[Split], folder: Path, config: StudyConfig, *,
                progress: bool = True) -> dict[tuple[int, str], torch.nn.Module]:  # fmt: skip
    """Every model on every fold, checkpoints in ``folder/checkpoints`` (resumed, never trained twice)."""
    trained = {}
    for k, split in enumerate(splits):
        train_rows, val_rows = prepared.rows_of(split.train), prepared.rows_of(split.val)
        train_xy = (prepared.float_images(train_rows), prepared.targets[train_rows])
        val_xy = (prepared.float_images(val_rows), prepared.targets[val_rows])
        for name in config.models:
            result = train(name, train_xy, val_xy, config.training(),
                           folder / "checkpoints" / f"fold{k}" / f"{name}.pt", progress=progress)  # fmt: skip
            trained[(k, name)] = result.model
    return trained


def evaluate_stage(prepared: PreparedSet, splits: Sequence[Split], trained, folder: Path,
                   config: StudyConfig) -> dict[str, list[dict]]:  # fmt: skip
    """Test probabilities per fold and model (kept as ``predictions/fold<k>.npz``), the scores of each model
    and of both ensembles, and Table 2 (``table2.csv``, ``table2.md``)."""
    results: dict[str, list[dict]] = {}
    for k, split in enumerate(splits):
        rows = prepared.rows_of(split.test)
        path = folder / "predictions" / f"fold{k}.npz"
        if path.exists():
            stored = np.load(path)
            probs = {name: stored[name] for name in config.models}
        else:
            x = prepared.float_images(rows)
            probs = {name: predict(trained[(k, name)], x, device=config.device).numpy() for name in config.models}
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **probs, rows=np.asarray(rows))
        truth = prepared.targets[rows].numpy().astype(np.int64)
        labels = list(prepared.outputs)
        decisions = {NAMES[name]: threshold(p, config.threshold) for name, p in probs.items()}
        for model, pred in decisions.items():
            results.setdefault(model, []).append(multilabel_scores(truth, pred, labels))
        stacked = np.stack([probs[name] for name in config.models])
        ensembles = {
            "Ensemble (majority vote)": majority_vote(np.stack(list(decisions.values()))),
            "Ensemble (mean probability)": mean_probability(stacked, config.threshold),
        }
        for model, pred in ensembles.items():
            results.setdefault(model, []).append(multilabel_scores(truth, pred, labels))
    write_table2(results, folder)
    (folder / "config.json").write_text(json.dumps(asdict(config), indent=1))
    return results
