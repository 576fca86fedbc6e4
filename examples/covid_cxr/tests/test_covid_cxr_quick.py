"""The quick synthetic study, small: every stage runs, the report is written, and the confound shows
where it should (and goes with the control)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from covid_cxr.cli import main
from covid_cxr.quick import QuickConfig, quick


@pytest.mark.slow
def test_the_quick_study_finds_the_padding_shortcut_and_its_control_does_not(tmp_path):
    # Two ResNets: DenseNet161's epochs alone ran past the timeout on a busy machine (it is trained and profiled
    # in its own tests); the ensembles still have two members.
    config = QuickConfig(images=80, size=80, folds=2, epochs=2, explain_images=8, ig_steps=4,
                         models=("resnet18", "resnet34"))  # fmt: skip
    report = quick(tmp_path, config, progress=False)
    text = report.read_text()
    for part in ("## Classification (Table 2)", "| ResNet18 |", "| ResNet34 |", "Ensemble (majority vote)",
                 "## The shortcut", "## Localisation on the lesions", "fig9_naps_resnet18.png"):  # fmt: skip
        assert part in text, part
    assert all(
        (tmp_path / line.split("(")[1].rstrip(")")).exists() for line in text.splitlines() if line.startswith("![")
    )
    # The input-layer profile shows the bands: the wide (Kermany) healthy images' average input is dark at the top.
    for folder, banded in ((tmp_path, True), (tmp_path / "control", False)):
        naps = xr.open_zarr(folder / "profiles" / "resnet18.zarr")
        mean = naps["input_group_mean"].mean(naps["input_group_mean"].dims[1]).load()
        top = mean.isel({mean.dims[1]: slice(0, 6)}).mean(mean.dims[1:]).to_series()
        gap = float(top["COVID-19"] - top["healthy"])
        assert (gap > 0.1) if banded else (abs(gap) < 0.1), (folder, top.to_dict())
    # Saliency puts relevance on the padding of the wide images with the confound on, far less without it.
    on, off = pd.read_csv(tmp_path / "padding.csv"), pd.read_csv(tmp_path / "control" / "padding.csv")

    def share(table, group, method="saliency"):
        rows = table[(table.model == "resnet18") & (table.method == method) & (table.group == group)]
        return float(rows["mean"].mean())

    # Measured: saliency 0.16 (healthy) vs 0.06 (COVID-19) with the confound, 0.17 vs 0.19 without it; IG with
    # the training-mean reference 0.22 vs 0.01, and 0.26 vs 0.27.
    for method, margin in (("saliency", 0.05), ("integrated_gradients (mean image reference)", 0.1)):
        assert share(on, "healthy", method) > share(on, "COVID-19", method) + margin, method
        assert abs(share(off, "healthy", method) - share(off, "COVID-19", method)) < 0.05, method
    zero_reference = on[(on.method == "integrated_gradients") & (on.model == "resnet18")]["mean"]
    assert np.allclose(zero_reference, 0.0)  # the padding equals the zero reference: IG cannot see it
    again = quick(tmp_path, config, progress=False)  # resumed: nothing trained or explained again
    assert again.read_text().split("## Timings")[1].split("##")[0] != text.split("## Timings")[1].split("##")[0]
    assert share(pd.read_csv(tmp_path / "padding.csv"), "healthy") == share(on, "healthy")


def test_the_command_line_refuses_a_study_without_data(capsys):
    assert main(["data", "--out", "nowhere"]) == 2
    assert capsys.readouterr().err.startswith("covid-cxr: error: give --cohen, --kermany and/or --csv")
