"""The case finder behind Fig. 7: test images on which one model is wrong about an output and every
other model right (a DenseNet161 false negative for COVID-19 that the ResNets catch, say)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .scores import threshold


def single_model_errors(
    probabilities: Mapping[str, np.ndarray], truth: np.ndarray, outputs: Sequence[str], sample_ids: Sequence[str],
    t: float = 0.5,
) -> pd.DataFrame:  # fmt: skip
    """One row per (image, output) that exactly one of the models (at least two) gets wrong at threshold ``t``.

    ``probabilities`` maps a model to its (N, L) probabilities of the images ``sample_ids``; ``truth`` is
    (N, L) 0/1. Columns: sample, output, model (the wrong one), error ("false negative" or "false
    positive"), probability (the wrong model's), others (the mean probability of the right ones).
    False negatives come first, then by output in the order given and by how far the others disagree.
    """
    if len(probabilities) < 2:
        return pd.DataFrame(columns=["sample", "output", "model", "error", "probability", "others"])
    truth = np.asarray(truth).astype(bool)
    decided = {model: threshold(p, t).astype(bool) for model, p in probabilities.items()}
    wrong = np.stack([decided[m] != truth for m in probabilities])  # (M, N, L)
    records = []
    for n, label in zip(*np.nonzero(wrong.sum(0) == 1), strict=True):
        m = int(np.argmax(wrong[:, n, label]))
        model = list(probabilities)[m]
        others = [float(probabilities[o][n, label]) for o in probabilities if o != model]
        records.append({
            "sample": sample_ids[n], "output": outputs[label], "model": model,
            "error": "false negative" if truth[n, label] else "false positive",
            "probability": float(probabilities[model][n, label]), "others": float(np.mean(others)),
        })  # fmt: skip
    frame = pd.DataFrame.from_records(records, columns=["sample", "output", "model", "error", "probability", "others"])
    if frame.empty:
        return frame
    rank = {name: i for i, name in enumerate(outputs)}
    frame["_first"] = (frame["error"] != "false negative").astype(int)
    frame["_output"] = frame["output"].map(rank)
    frame["_gap"] = -(frame["probability"] - frame["others"]).abs()
    return frame.sort_values(["_first", "_output", "_gap"], kind="stable").drop(columns=["_first", "_output", "_gap"])
