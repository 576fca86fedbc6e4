"""The study's classification scores: multilabel precision, recall, F1, accuracy and specificity (micro and
macro), the two
ensembles, the mean and spread over the subject-wise folds, and Table 2 beside the paper's numbers.

numpy only, so that the scores are read here and not trusted to a library's defaults; the tests hold them
to scikit-learn's ``precision_recall_fscore_support``. pandas only for the table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas

SCORES = ("precision", "recall", "f1", "accuracy", "specificity")
#: The scores of the paper's Table 2.
PAPER_SCORES = ("precision", "recall", "f1")
AVERAGES = ("micro", "macro")
MODELS = ("DenseNet161", "InceptionResNetV2", "InceptionV3", "ResNet18", "ResNet34")
ENSEMBLES = ("Ensemble (majority vote)", "Ensemble (mean probability)")

# Chatterjee et al., J. Imaging 2024, Table 2: micro precision, recall and F1 on the test folds.
PAPER_TABLE2: dict[str, dict[str, float]] = {
    "DenseNet161": {"micro_precision": 0.864, "micro_recall": 0.845, "micro_f1": 0.854},
    "InceptionResNetV2": {"micro_precision": 0.844, "micro_recall": 0.787, "micro_f1": 0.814},
    "InceptionV3": {"micro_precision": 0.802, "micro_recall": 0.792, "micro_f1": 0.796},
    "ResNet18": {"micro_precision": 0.824, "micro_recall": 0.824, "micro_f1": 0.824},
    "ResNet34": {"micro_precision": 0.815, "micro_recall": 0.800, "micro_f1": 0.807},
    "Ensemble": {"micro_precision": 0.889, "micro_recall": 0.851, "micro_f1": 0.869},
}

_SHORT = {"precision": "P", "recall": "R", "f1": "F1", "accuracy": "Acc", "specificity": "Spec"}


def threshold(probabilities, t: float = 0.5) -> np.ndarray:
    """1 where a probability is above ``t`` (strictly, as the authors' code compared ``outputs > confidence``),
    else 0: each output of a multilabel model is its own yes/no."""
    return (np.asarray(probabilities, dtype=np.float64) > t).astype(np.int64)


def majority_vote(preds) -> np.ndarray:
    """(M, N, L) 0/1 decisions of M models -> (N, L): a label is on where more than half of the models say so.

    The study has five models, so there are no ties; for an even M a tie (exactly half) is off, so that an
    ensemble never claims a finding its models are split on.
    """
    votes = _binary(preds, "preds", ndim=3)
    return (2 * votes.sum(axis=0) > votes.shape[0]).astype(np.int64)


def mean_probability(probs, t: float = 0.5) -> np.ndarray:
    """(M, N, L) probabilities of M models -> (N, L): their mean, thresholded at ``t``.

    This is what the authors' code did (``ModelEnsamble`` averages the sigmoid outputs), as against the
    majority vote; both are kept because they can disagree where a confident model outweighs two unsure ones.
    """
    stack = np.asarray(probs, dtype=np.float64)
    if stack.ndim != 3 or stack.shape[0] == 0:
        raise ValueError(f"probs should be (models, images, labels) with at least one model, got {stack.shape}.")
    return threshold(stack.mean(axis=0), t)


def multilabel_scores(y_true, y_pred, labels: Sequence[str]) -> dict:
    """Precision, recall, F1, accuracy and specificity of (N, L) 0/1 predictions against (N, L) 0/1 targets.

    - ``micro_*``: from the true and false positives and negatives pooled over all labels (each
      image-label decision counts once, so common labels weigh more): accuracy is the share of right
      decisions, specificity TN / (TN + FP), the recall of the negatives.
    - ``macro_*``: the mean of the per-label scores over the labels WITH support, i.e. at least one positive
      in ``y_true``. A label no test image has (a fold without COVID-19, say) would add a precision and
      recall of 0 that says nothing about the model; leaving it out equals scikit-learn's macro average
      with ``labels=`` those labels. ``macro_labels`` names them; with none, the macro scores are NaN.
    - ``per_label``: label -> the five scores and support (positives in ``y_true``).

    0/0 is 0 (scikit-learn's ``zero_division=0``): a label never predicted has precision 0, one never
    true has recall 0. F1 is 2 TP / (2 TP + FP + FN), which equals the harmonic mean where that is defined.
    """
    truth, guess = _binary(y_true, "y_true", ndim=2), _binary(y_pred, "y_pred", ndim=2)
    if truth.shape != guess.shape:
        raise ValueError(f"y_true {truth.shape} and y_pred {guess.shape} differ in shape.")
    labels = tuple(labels)
    if len(labels) != truth.shape[1]:
        raise ValueError(f"{len(labels)} labels for {truth.shape[1]} columns.")
    tp, fp, fn, tn = _counts(truth, guess)
    support = tp + fn
    per_label = {name: {**_prf(tp[i], fp[i], fn[i], tn[i]), "support": int(support[i])}
                 for i, name in enumerate(labels)}  # fmt: skip
    micro = _prf(tp.sum(), fp.sum(), fn.sum(), tn.sum())
    supported = [name for name, s in zip(labels, support, strict=True) if s > 0]
    macro = {score: _mean([per_label[name][score] for name in supported]) for score in SCORES}
    return {
        **{f"micro_{score}": micro[score] for score in SCORES},
        **{f"macro_{score}": macro[score] for score in SCORES},
        "macro_labels": tuple(supported),
        "per_label": per_label,
    }


def over_folds(per_fold: Sequence[Mapping]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof=1) over folds of every scalar score.

    Nested scores are flattened with ``/`` (``per_label/COVID-19/f1``); what is not a number (the names in
    ``macro_labels``) is left out. The std is that of the folds' scores, the spread the paper's ± reports; with
    one fold it is NaN. Every fold must have the same scores.
    """
    if not per_fold:
        raise ValueError("no folds to aggregate.")
    flat = [_flatten(fold) for fold in per_fold]
    keys = list(flat[0])
    for i, fold in enumerate(flat[1:], start=1):
        if set(fold) != set(keys):
            raise ValueError(f"fold {i} has other scores than fold 0: {sorted(set(fold) ^ set(keys))[:5]}.")
    result = {}
    for key in keys:
        values = np.array([fold[key] for fold in flat], dtype=np.float64)
        std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        result[key] = {"mean": float(values.mean()), "std": std}
    return result


def table2(results: Mapping[str, Sequence[Mapping]]) -> pandas.DataFrame:
    """The paper's Table 2 from our folds: one row per model (in the order given), micro and macro P/R/F1,
    accuracy and specificity.

    ``results`` maps a model's name ("DenseNet161", ..., "Ensemble (majority vote)") to its per-fold
    :func:`multilabel_scores`. Columns ``micro P`` ... ``macro F1`` hold "mean ± std" to three decimals (the
    paper's precision; the mean alone with one fold), ``micro P mean`` / ``micro P std`` ... the numbers, and
    ``folds`` how many folds each row averages.
    """
    import pandas as pd

    rows = {}
    for model, folds in results.items():
        agg = over_folds(folds)
        row: dict[str, object] = {}
        for average in AVERAGES:
            for score in SCORES:
                column, key = _column(average, score), f"{average}_{score}"
                row[column] = _pm(agg[key]["mean"], agg[key]["std"])
                row[f"{column} mean"], row[f"{column} std"] = agg[key]["mean"], agg[key]["std"]
        row["folds"] = len(folds)
        rows[model] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "model"
    return frame


def write_table2(
    results: Mapping[str, Sequence[Mapping]], folder: str | Path, *, beside_paper: bool = True
) -> tuple[Path, Path]:
    """Write ``table2.csv`` (all columns) and ``table2.md`` (the "mean ± std" columns under a one-line caption)
    into ``folder``; with ``beside_paper``, the paper's micro scores stand in a column beside each of ours.

    The paper reports one ensemble; its numbers stand beside every row whose name starts with "Ensemble".
    Returns the two paths.
    """
    frame = table2(results)
    if beside_paper:
        frame = _with_paper(frame)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = folder / "table2.csv", folder / "table2.md"
    frame.to_csv(csv_path)
    md_path.write_text(_markdown(frame, results, beside_paper), encoding="utf-8")
    return csv_path, md_path


def paper_row(model: str) -> dict[str, float] | None:
    """The paper's micro scores for ``model``: by name, the paper's one ensemble for any "Ensemble ..." row,
    None for a model the paper lacks."""
    if model in PAPER_TABLE2:
        return PAPER_TABLE2[model]
    if model.startswith("Ensemble"):
        return PAPER_TABLE2["Ensemble"]
    return None


def _binary(values, name: str, *, ndim: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != ndim:
        raise ValueError(f"{name} should have {ndim} dimensions, got shape {array.shape}.")
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} should hold only 0 and 1 (threshold probabilities first).")
    return array.astype(np.int64)


def _counts(truth: np.ndarray, guess: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per label: true positives, false positives, false negatives, true negatives."""
    tp = (truth & guess).sum(axis=0)
    fp = ((1 - truth) & guess).sum(axis=0)
    fn = (truth & (1 - guess)).sum(axis=0)
    tn = ((1 - truth) & (1 - guess)).sum(axis=0)
    return tp, fp, fn, tn


def _prf(tp, fp, fn, tn) -> dict[str, float]:
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "specificity": _ratio(tn, tn + fp),
    }


def _ratio(num, den) -> float:
    """num / den, with 0/0 as 0 (scikit-learn's zero_division=0)."""
    return float(num) / float(den) if den else 0.0


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _flatten(scores: Mapping, prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in scores.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}/"))
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def _column(average: str, score: str) -> str:
    return f"{average} {_SHORT[score]}"


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def _with_paper(frame: pandas.DataFrame) -> pandas.DataFrame:
    """Insert ``micro P (paper)`` ... right after our ``micro P`` ... for the scores the paper's Table 2 has
    (precision, recall, F1); NaN where the paper has no such model."""
    frame = frame.copy()
    for score in PAPER_SCORES:
        column = _column("micro", score)
        values = [(paper_row(model) or {}).get(f"micro_{score}", math.nan) for model in frame.index]
        frame.insert(frame.columns.get_loc(column) + 1, f"{column} (paper)", values)
    return frame


def _markdown(frame: pandas.DataFrame, results: Mapping[str, Sequence[Mapping]], beside_paper: bool) -> str:
    # The macro accuracy and specificity stay in the CSV: the table is wide enough.
    hidden = {_column("macro", score) for score in SCORES if score not in PAPER_SCORES}
    columns = [c for c in frame.columns
               if c.startswith(AVERAGES) and not c.endswith((" mean", " std")) and c not in hidden]  # fmt: skip
    lines = [_caption(results, beside_paper), ""]
    lines.append("| model | " + " | ".join(columns) + " |")
    lines.append("|---|" + "---:|" * len(columns))
    for model, row in frame.iterrows():
        cells = [_cell(row[c]) for c in columns]
        lines.append(f"| {_escape(str(model))} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _caption(results: Mapping[str, Sequence[Mapping]], beside_paper: bool) -> str:
    counts = sorted({len(folds) for folds in results.values()})
    span = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]} (per model)"
    labels = list(
        dict.fromkeys(name for folds in results.values() for fold in folds for name in fold.get("per_label", {}))
    )
    caption = (
        f"Table 2: multilabel precision (P), recall (R), F1, accuracy (Acc) and specificity (Spec) over the "
        f"outputs {', '.join(labels)}; "
        f"mean ± sample standard deviation (ddof=1) over {span} subject-wise test folds; "
        "macro averages only the labels present in a fold's test set"
    )
    if beside_paper:
        caption += "; columns marked (paper): Chatterjee et al., J. Imaging 2024, Table 2"
        caption += " (its one ensemble by each Ensemble row)"
    return caption + "."


def _cell(value) -> str:
    if isinstance(value, str):
        return value
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")
