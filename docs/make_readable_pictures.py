"""Draw the reference pictures of every figure type from small seeded inputs: ``python docs/make_readable_pictures.py``.

The study's figures (Figs. 1, 2, 3, 7, 8, the shortcut chart, Fig. 9's NAPs, Fig. 10) and the report's profile
charts, each from a few synthetic numbers or a tiny random CNN, into ``docs/img/readable_*.png``.
``tests/test_readable_pictures.py`` draws them again and checks that no text leaves its figure, no
two texts overlap, no legend covers the bars, and that the pictures match these files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

OUT = Path(__file__).resolve().parent / "img"
DPI = 80
MODELS = ("ResNet18", "ResNet34", "InceptionV3", "InceptionResNetV2", "DenseNet161", "Ensemble (majority vote)",
          "Ensemble (mean probability)")  # fmt: skip
LABELS = ("COVID-19", "pneumonia", "healthy")
GROUPS = ("COVID-19", "pneumonia", "pneumonia without COVID-19", "healthy")
METHODS = ("area of the padding (an even map)", "occlusion", "saliency", "input_x_gradient", "guided_backprop",
           "integrated_gradients", "deeplift", "integrated_gradients (mean image reference)",
           "deeplift (mean image reference)")  # fmt: skip


def figures() -> dict[str, plt.Figure]:
    """``{file name: figure}`` of every figure type, from seeded synthetic inputs."""
    from covid_cxr import figures as study
    from covid_cxr.labels import Hierarchy

    from xai_bench import Passes, Targets, explain, profile
    from xai_bench.testing import tiny_cnn
    from xai_bench.viz import plot_dead_feature_maps, plot_naps

    rng = np.random.default_rng(0)
    scores = study.FIG3_SCORES

    def fold() -> dict:
        # Scores near 1 for some models: the bars reach the top, where a legend inside the axes used to sit.
        micro = {f"micro_{s}": float(rng.uniform(0.6, 1.0)) for s in scores}
        return {**micro, "per_label": {label: {s: float(rng.uniform(0.6, 1.0)) for s in scores} for label in LABELS}}

    results = {m: [fold(), fold()] for m in MODELS}
    hierarchy = Hierarchy.load()
    kinds = [["COVID-19", "viral", "pneumonia"], ["SARS", "viral", "pneumonia"], ["Streptococcus", "bacterial",
             "pneumonia"], ["healthy"], ["ARDS"], ["Pneumocystis", "fungal", "pneumonia"]]  # fmt: skip
    labels = [kinds[int(i)] for i in rng.choice(len(kinds), 60, p=[0.3, 0.05, 0.2, 0.35, 0.05, 0.05])]
    sources = ["cohen" if "healthy" not in have else "kermany" for have in labels]
    padding = pd.DataFrame(
        [
            {"model": "(any)", "method": m, "group": g, "mean": float(rng.uniform(0, 0.3)), "std": 0.01, "images": 3}
            for m in METHODS
            for g in GROUPS
        ]
    )
    grey = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    images = grey.repeat(1, 3, 1, 1)  # grey, as the study's phantoms are
    images[:4, :, :3] = 0.0  # a padding band on the first group: something for the NAPs to show
    model = tiny_cnn()
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    layers = {"input": "input", "after_conv1": "conv1", "after_conv3": "conv3"}
    naps = profile(model, images, layers=layers, groups=groups, group_names=["padded", "plain"],
                   profilers={"naps": {"top_k": 3}, "dead_feature_maps": {}},
                   passes=Passes(progress=False))  # fmt: skip
    names = ["COVID-19", "pneumonia", "viral", "healthy"]
    occlusion = {"occlusion": {"window": 4, "stride": 2}}
    maps = {name: explain(model, images[:1], methods=occlusion, sample_ids=["phantom_0.png"],
                          targets=Targets([[0, 1, 2]], class_names=names))
            for name in ("resnet18", "densenet161")}  # fmt: skip
    chances = {"resnet18": 0.91, "densenet161": 0.12}
    series = {name: explain(model, images[4:7], methods=occlusion, sample_ids=["day_0.png", "day_3.png", "day_9.png"],
                            targets=Targets([0], class_names=names))
              for name in ("densenet161", "resnet18")}  # fmt: skip
    return {
        "readable_fig1_findings.png": study.findings_figure(labels, sources, list(hierarchy.parents)),
        "readable_fig2_hierarchy.png": study.hierarchy_figure(
            hierarchy.parents, hierarchy.with_outputs("paper").outputs
        ),
        "readable_fig3_scores.png": study.scores_figure(results, LABELS),
        "readable_fig7_case.png": study.case_figure(
            maps, "phantom_0.png", "COVID-19", "densenet161", "false negative", chances
        ),
        "readable_shortcut.png": study.shortcut_figure(padding, "share of |relevance| on the zero padding"),
        "readable_naps.png": plot_naps(naps, "after_conv1", top=3),
        "readable_naps_input.png": plot_naps(naps, "input", top=1),
        "readable_fig8_followup.png": study.followup_figure(
            series, ["day_0.png", "day_3.png", "day_9.png"], [0, 3, 9], "cohen:42"
        ),
        "readable_fig10_occlusion.png": study.occlusion_figure(maps, "phantom_0.png"),
        "readable_fig10_one_model.png": study.occlusion_figure(maps["resnet18"], "phantom_0.png"),
        "readable_dead_feature_maps.png": plot_dead_feature_maps(naps),
    }


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, fig in figures().items():
        fig.savefig(OUT / name, dpi=DPI)
        plt.close(fig)
        print(OUT / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
