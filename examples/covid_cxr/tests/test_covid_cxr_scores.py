"""The study's scores: multilabel precision/recall/F1 against scikit-learn, the two ensembles, fold
aggregation and Table 2."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from covid_cxr.scores import (
    ENSEMBLES,
    MODELS,
    PAPER_TABLE2,
    majority_vote,
    mean_probability,
    multilabel_scores,
    over_folds,
    table2,
    threshold,
    write_table2,
)
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, recall_score

OUTPUTS = ("COVID-19", "pneumonia", "healthy")


@st.composite
def pairs(draw):
    """(N, L) 0/1 targets and predictions; L >= 2, since scikit-learn reads one column as binary, not multilabel."""
    n, n_labels = draw(st.integers(1, 25)), draw(st.integers(2, 5))
    matrix = arrays(np.int64, (n, n_labels), elements=st.integers(0, 1))
    return draw(matrix), draw(matrix)


def _sklearn(y_true, y_pred, **kwargs):
    return precision_recall_fscore_support(y_true, y_pred, zero_division=0, **kwargs)


# Profile "ci" of tests/conftest.py: 20 derandomised examples, no deadline.
@given(pairs())
def test_scores_match_sklearn(pair):
    y_true, y_pred = pair
    labels = [f"l{i}" for i in range(y_true.shape[1])]
    got = multilabel_scores(y_true, y_pred, labels)

    p, r, f, _ = _sklearn(y_true, y_pred, average="micro")
    assert (got["micro_precision"], got["micro_recall"], got["micro_f1"]) == pytest.approx((p, r, f), abs=1e-12)

    supported = np.flatnonzero(y_true.sum(axis=0) > 0)
    assert got["macro_labels"] == tuple(labels[i] for i in supported)
    if supported.size:
        p, r, f, _ = _sklearn(y_true, y_pred, average="macro", labels=supported)
        assert (got["macro_precision"], got["macro_recall"], got["macro_f1"]) == pytest.approx((p, r, f), abs=1e-12)
    else:
        assert all(math.isnan(got[f"macro_{s}"]) for s in ("precision", "recall", "f1"))

    p, r, f, support = _sklearn(y_true, y_pred, average=None)
    for i, name in enumerate(labels):
        row = got["per_label"][name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p[i], r[i], f[i]), abs=1e-12)
        assert row["support"] == support[i]


@given(pairs())
def test_accuracy_and_specificity_match_sklearn(pair):
    y_true, y_pred = pair
    labels = [f"l{i}" for i in range(y_true.shape[1])]
    got = multilabel_scores(y_true, y_pred, labels)
    # Micro: every image-label decision pooled; specificity is the negatives' recall.
    assert got["micro_accuracy"] == pytest.approx(accuracy_score(y_true.ravel(), y_pred.ravel()), abs=1e-12)
    spec = recall_score(y_true.ravel(), y_pred.ravel(), pos_label=0, zero_division=0)
    assert got["micro_specificity"] == pytest.approx(spec, abs=1e-12)
    for i, name in enumerate(labels):
        row = got["per_label"][name]
        assert row["accuracy"] == pytest.approx(accuracy_score(y_true[:, i], y_pred[:, i]), abs=1e-12)
        spec = recall_score(y_true[:, i], y_pred[:, i], pos_label=0, labels=[0, 1], zero_division=0)
        assert row["specificity"] == pytest.approx(spec, abs=1e-12)


def test_a_label_without_support_is_left_out_of_macro_but_not_micro():
    y_true = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    y_pred = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 1], [1, 0, 0]])
    got = multilabel_scores(y_true, y_pred, OUTPUTS)
    # COVID-19: tp 1, fp 1, fn 1 -> P 1/2, R 1/2, F1 1/2; pneumonia: tp 1, fp 0, fn 1 -> P 1, R 1/2, F1 2/3;
    # healthy: no positive (support 0), two false positives -> 0 / 0 / 0, and out of the macro mean.
    assert got["macro_labels"] == ("COVID-19", "pneumonia")
    assert got["per_label"]["healthy"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.5,
                                           "specificity": 0.5, "support": 0}  # fmt: skip
    assert got["macro_precision"] == pytest.approx((1 / 2 + 1) / 2)
    assert got["macro_recall"] == pytest.approx(1 / 2)
    assert got["macro_f1"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # micro pools tp 2, fp 3 (healthy's two included), fn 2.
    assert got["micro_precision"] == pytest.approx(2 / 5)
    assert got["micro_recall"] == pytest.approx(2 / 4)
    assert got["micro_f1"] == pytest.approx(4 / 9)
    # ... and 5 true negatives: 7 of 12 decisions right, 5 of 8 negatives said no.
    assert got["micro_accuracy"] == pytest.approx(7 / 12)
    assert got["micro_specificity"] == pytest.approx(5 / 8)


def test_zero_over_zero_is_zero():
    got = multilabel_scores(np.zeros((3, 3), int), np.zeros((3, 3), int), OUTPUTS)
    assert got["micro_precision"] == got["micro_recall"] == got["micro_f1"] == 0.0
    assert got["macro_labels"] == ()
    assert math.isnan(got["macro_f1"])


def test_scores_refuse_what_is_not_0_1_or_does_not_fit():
    ones = np.ones((2, 3), int)
    with pytest.raises(ValueError, match="only 0 and 1"):
        multilabel_scores(ones, np.full((2, 3), 0.7), OUTPUTS)
    with pytest.raises(ValueError, match="differ in shape"):
        multilabel_scores(ones, np.ones((3, 3), int), OUTPUTS)
    with pytest.raises(ValueError, match="2 labels for 3 columns"):
        multilabel_scores(ones, ones, OUTPUTS[:2])


def test_threshold_is_strict():
    assert threshold([[0.2, 0.5, 0.51]]).tolist() == [[0, 0, 1]]
    assert threshold([0.2, 0.5, 0.51], t=0.3).tolist() == [0, 1, 1]


def test_majority_vote_of_three_models():
    preds = np.array(
        [
            [[1, 0, 0], [0, 1, 1]],
            [[1, 1, 0], [0, 0, 1]],
            [[0, 1, 0], [1, 0, 1]],
        ]
    )  # 3 models, 2 images, 3 labels
    assert majority_vote(preds).tolist() == [[1, 1, 0], [0, 0, 1]]


def test_majority_vote_ties_are_off():
    preds = np.array([[[1, 1, 0]], [[0, 1, 0]]])  # 2 models: a tie on the first label
    assert majority_vote(preds).tolist() == [[0, 1, 0]]
    with pytest.raises(ValueError, match="3 dimensions"):
        majority_vote(preds[0])


def test_mean_probability_can_disagree_with_the_vote():
    probs = np.array(
        [
            [[0.95, 0.2, 0.6]],
            [[0.40, 0.2, 0.6]],
            [[0.40, 0.9, 0.2]],
        ]
    )
    # means: 0.583, 0.433, 0.467
    assert mean_probability(probs).tolist() == [[1, 0, 0]]
    assert majority_vote(threshold(probs)).tolist() == [[0, 0, 1]]
    assert mean_probability(probs, t=0.45).tolist() == [[1, 0, 1]]


def _folds(n_folds: int, seed: int, n: int = 40) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [multilabel_scores(rng.integers(0, 2, (n, 3)), rng.integers(0, 2, (n, 3)), OUTPUTS) for _ in range(n_folds)]


def test_over_folds_is_numpy_mean_and_sample_std():
    folds = _folds(5, seed=0)
    agg = over_folds(folds)
    for key in ("micro_precision", "macro_f1"):
        values = np.array([fold[key] for fold in folds])
        assert agg[key]["mean"] == pytest.approx(values.mean())
        assert agg[key]["std"] == pytest.approx(values.std(ddof=1))
    supports = np.array([fold["per_label"]["healthy"]["support"] for fold in folds])
    assert agg["per_label/healthy/support"]["std"] == pytest.approx(supports.std(ddof=1))
    assert "macro_labels" not in agg
    assert math.isnan(over_folds(folds[:1])["micro_f1"]["std"])
    with pytest.raises(ValueError, match="no folds"):
        over_folds([])


RESULTS_ORDER = (*MODELS, *ENSEMBLES)


def _results() -> dict[str, list[dict]]:
    return {name: _folds(5, seed=i) for i, name in enumerate(RESULTS_ORDER)}


def test_table2_rows_and_columns():
    results = _results()
    frame = table2(results)
    assert list(frame.index) == list(RESULTS_ORDER)
    agg = over_folds(results["ResNet18"])
    row = frame.loc["ResNet18"]
    assert row["micro F1 mean"] == pytest.approx(agg["micro_f1"]["mean"])
    assert row["macro R std"] == pytest.approx(agg["macro_recall"]["std"])
    assert row["micro F1"] == f"{agg['micro_f1']['mean']:.3f} ± {agg['micro_f1']['std']:.3f}"
    assert (frame["folds"] == 5).all()


def test_write_table2_puts_the_paper_beside_ours(tmp_path):
    results = {**_results(), "VGG16": _folds(5, seed=99)}
    csv_path, md_path = write_table2(results, tmp_path / "out")
    frame = pd.read_csv(csv_path, index_col="model")
    assert list(frame.index) == [*RESULTS_ORDER, "VGG16"]
    assert frame.loc["DenseNet161", "micro P (paper)"] == pytest.approx(0.864)
    for name in ENSEMBLES:
        assert frame.loc[name, "micro F1 (paper)"] == pytest.approx(PAPER_TABLE2["Ensemble"]["micro_f1"])
    assert math.isnan(frame.loc["VGG16", "micro R (paper)"])

    lines = md_path.read_text(encoding="utf-8").splitlines()
    assert "standard deviation" in lines[0] and "5 subject-wise test folds" in lines[0]
    assert lines[1] == ""
    header = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert header[:4] == ["model", "micro P", "micro P (paper)", "micro R"]
    assert header[-5:] == ["micro Acc", "micro Spec", "macro P", "macro R", "macro F1"]  # macro Acc, Spec: CSV
    assert "specificity (Spec)" in lines[0] and "micro Acc (paper)" not in frame.columns
    assert frame.loc["ResNet18", "macro Spec mean"] == pytest.approx(over_folds(results["ResNet18"])[
        "macro_specificity"]["mean"])  # fmt: skip
    rows = {line.split("|")[1].strip(): line for line in lines[4:]}
    assert list(rows) == [*RESULTS_ORDER, "VGG16"]
    assert "| 0.864 |" in rows["DenseNet161"] and "| – |" in rows["VGG16"]
    assert all(line.count("|") == lines[2].count("|") for line in lines[3:])


def test_write_table2_without_the_paper(tmp_path):
    _, md_path = write_table2({"ResNet18": _folds(3, seed=1)}, tmp_path, beside_paper=False)
    text = md_path.read_text(encoding="utf-8")
    assert "paper" not in text and "3 subject-wise test folds" in text
    assert (tmp_path / "table2.csv").is_file()
