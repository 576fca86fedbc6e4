"""The study's settings: which outputs the models have, which fold is explained, and occlusion's
window, stride and fill; each on the command line with one-line errors."""

from __future__ import annotations

import pytest
from covid_cxr.cli import main
from covid_cxr.interpret import study_methods
from covid_cxr.labels import Hierarchy
from covid_cxr.phantoms import generate, to_records
from covid_cxr.splits import Split
from covid_cxr.study import Study, StudyConfig, data_stage

PAPER = ("COVID-19", "pneumonia", "viral", "bacterial", "healthy")


def test_output_sets_by_name_and_by_labels():
    hierarchy = Hierarchy.load()
    assert hierarchy.outputs == ("COVID-19", "pneumonia", "healthy")  # labels.json's own
    assert hierarchy.with_outputs("paper").outputs == PAPER
    assert len(hierarchy.with_outputs("authors-code").outputs) == 14
    assert hierarchy.with_outputs(["SARS", "healthy"]).outputs == ("SARS", "healthy")
    with pytest.raises(ValueError, match="no output set 'papers'; the sets are paper, three, authors-code"):
        hierarchy.with_outputs("papers")
    with pytest.raises(ValueError, match=r"\['Covid'\] are no labels of the hierarchy"):
        hierarchy.with_outputs(["Covid", "healthy"])
    with pytest.raises(ValueError, match="expected distinct labels"):
        hierarchy.with_outputs(["healthy", "healthy"])


def test_the_real_study_trains_the_papers_five_outputs_by_default(tmp_path):
    phantoms = generate(10, seed=0, base=40)
    records = to_records(phantoms, tmp_path / "phantoms")
    prepared, _ = data_stage(records, tmp_path / "paper", StudyConfig(size=32, folds=2), progress=False)
    assert prepared.outputs == PAPER and prepared.targets.shape == (10, 5)
    viral = [i for i, labels in enumerate(prepared.labels) if "viral" in labels and "COVID-19" not in labels]
    assert viral and all(prepared.targets[i].tolist() == [0, 1, 1, 0, 0] for i in viral)
    three, _ = data_stage(records, tmp_path / "three", StudyConfig(size=32, folds=2, outputs="three"), progress=False)
    assert three.outputs == ("COVID-19", "pneumonia", "healthy") and three.targets.shape == (10, 3)


class _Evaluated(Study):
    """A study whose folds and scores are given: explain_fold reads only those."""

    def __init__(self, config: StudyConfig, f1: list[float]) -> None:
        super().__init__([], "unused", config)
        self._f1 = f1

    def data(self):
        return None, [Split(0, (), (), ()) for _ in self._f1]

    def evaluate(self):
        return {"Ensemble (majority vote)": [{"micro_f1": f} for f in self._f1]}


def test_the_best_fold_is_the_ensembles_best_micro_f1_and_a_number_is_taken_as_given():
    assert _Evaluated(StudyConfig(), [0.80, 0.91, 0.91, 0.85]).explain_fold() == 1  # the first of equals
    assert _Evaluated(StudyConfig(explain_fold=3), [0.80, 0.91, 0.91, 0.85]).explain_fold() == 3
    with pytest.raises(ValueError, match="explain_fold 4: expected 'best' or a fold from 0 to 3"):
        _Evaluated(StudyConfig(explain_fold=4), [0.8] * 4).explain_fold()


def test_occlusion_window_stride_and_fill():
    assert study_methods(512)["occlusion"] == {"window": 32, "stride": 16, "fill": 0.0}
    assert study_methods(512, window=50, stride=4, fill=0.5)["occlusion"] == {"window": 50, "stride": 4, "fill": 0.5}
    assert study_methods(128, windows=8)["occlusion"] == {"window": 16, "stride": 8, "fill": 0.0}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--outputs", "papers"], "argument --outputs: no output set 'papers'; the sets are paper, three,"),
        (["--outputs", "COVID-19,Covid"], "argument --outputs: outputs: ['Covid'] are no labels of the hierarchy"),
        (["--explain-fold", "first"], "argument --explain-fold: expected 'best' or a fold number from 0, got 'first'"),
        (["--explain-fold", "2", "--folds", "2"], "--explain-fold 2: the study has 2 folds, 0 to 1; or give 'best'."),
        (["--occlusion-fill", "2"], "argument --occlusion-fill: expected a number from 0 to 1, got '2'"),
        (["--occlusion-window", "600"], "--occlusion-window 600 is larger than --size 512."),
        (["--occlusion-window", "20", "--occlusion-stride", "30"], "--occlusion-stride 30 is larger than the window"),
    ],
)  # fmt: skip
def test_bad_settings_are_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "chest_xray" / "train" / "NORMAL").mkdir(parents=True)
    try:
        code = main(["explain", "--kermany", str(tmp_path / "chest_xray"), "--out", str(tmp_path / "out"), *argv])
    except SystemExit as exit_:  # argparse's usage errors exit rather than return
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_another_fold_explained_in_the_same_folder_makes_the_stores_again(tmp_path):
    import numpy as np
    import torch
    from covid_cxr.interpret import explain_models
    from covid_cxr.models import build
    from covid_cxr.prepared import PreparedSet

    from xai_bench import open_maps

    n, size = 6, 32
    prepared = PreparedSet(
        images=torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)),
        targets=torch.zeros(n, 3), padding=torch.zeros(n, size, size, dtype=torch.bool), lesions=None,
        sample_ids=[f"s{i}" for i in range(n)], subjects=[f"p{i}" for i in range(n)], sources=["x"] * n,
        labels=[["healthy"]] * n, outputs=("COVID-19", "pneumonia", "healthy"),
    )  # fmt: skip
    torch.manual_seed(0)
    models = {"resnet18": build("resnet18", 3).eval()}
    methods = {"saliency": {}}

    def explain(rows: list[int], key: str, output: str = "logit"):
        probs = {"resnet18": np.full((len(rows), 3), 0.9)}
        return explain_models(models, prepared, rows, probs, tmp_path, methods=methods, progress=False,
                              keys={"resnet18": key}, output=output)["resnet18"]  # fmt: skip

    store = explain([0, 1, 2], "fold 0")
    written = (store / "zarr.json").stat().st_mtime_ns
    assert explain([0, 1, 2], "fold 0") == store and (store / "zarr.json").stat().st_mtime_ns == written  # resumed
    explain([3, 4, 5], "fold 1")  # the store held fold 0's images: made again, not refused as another run
    assert list(open_maps(store)["sample"].values) == ["s3", "s4", "s5"]
    assert open_maps(store).attrs["output"] == "logit"
    # The sigmoid explained instead: made again, recorded, its scores probabilities.
    explain([3, 4, 5], "fold 1", output="sigmoid")
    sigmoid = open_maps(store)
    assert sigmoid.attrs["output"] == "sigmoid" and np.nanmax(sigmoid["score"].values) < 1
