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


#: Methods of each family beyond the study's six, picked by id as `--methods` does.
OTHER_METHODS = ("saliency", "deconvolution", "gradient_shap", "lrp", "grad_cam", "feature_ablation")


@pytest.mark.slow
def test_the_study_explains_with_any_installed_method_and_reports_each(tmp_path):
    from covid_cxr.cli import build_parser
    from covid_cxr.quick import synthetic_study

    assert build_parser().parse_args(["quick", "--methods", ",".join(OTHER_METHODS)]).methods == OTHER_METHODS
    config = QuickConfig(images=40, size=76, folds=2, epochs=1, explain_images=4, models=("resnet18",),
                         methods=OTHER_METHODS)  # fmt: skip
    report = synthetic_study(tmp_path, config, config.study(), confound=True, title="any method", progress=False)
    text = report.report().read_text()
    maps = xr.open_zarr(tmp_path / "maps" / "resnet18.zarr")
    assert set(maps.xai.methods) == set(OTHER_METHODS)
    for method in OTHER_METHODS:
        values = maps[method].values
        assert np.isfinite(values[~np.isnan(values)]).all() and np.nanmax(np.abs(values)) > 0, method
    padding = pd.read_csv(tmp_path / "padding.csv")
    assert set(OTHER_METHODS) <= set(padding.method)
    assert not (tmp_path / "maps_mean_reference").exists()  # neither IG nor DeepLIFT was chosen
    assert "fig10_occlusion.png" not in text  # occlusion's own figures need occlusion
    html = (tmp_path / "html" / "index.html").read_text()
    for method in OTHER_METHODS:
        assert method in html, method
