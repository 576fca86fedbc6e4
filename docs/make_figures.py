"""Draw the figures of docs/pictures.md from the demo's store: ``python docs/make_figures.py``.

Trains the demo CNN on generated shapes (about a minute on two CPU cores), explains four held-out
images with every method into a store, and draws the pictures from that store alone.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from xai_bench import evaluate, open_maps, overlay, select_map
from xai_bench.app.demo import run_demo
from xai_bench.app.viz import metrics_table, plot_curves, plot_maps, plot_randomisation
from xai_bench.testing import make_shapes
from xai_bench.testing import train_shapes as train

OUT = Path(__file__).resolve().parent / "img"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        store = run_demo(work).store
        ds = open_maps(store)
        samples = list(ds["sample"].values[:2])
        methods = ["occlusion", "saliency", "integrated_gradients", "deeplift"]
        plot_maps(ds, samples=samples, methods=methods, scale="map").savefig(OUT / "maps_per_map.png", dpi=90)
        plot_maps(ds, samples=samples, methods=methods, scale="method").savefig(OUT / "maps_per_method.png", dpi=90)
        sample = samples[1]
        target = str(ds["target"].sel(sample=sample).values[0])
        image = ds["input"].sel(sample=sample)
        fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
        for ax, (title, rgb) in zip(
            axes,
            [
                ("input", image.values.transpose(1, 2, 0)),
                ("deeplift, alpha 0.5", overlay(image, select_map(ds, "deeplift", sample=sample, target=target))),
                ("saliency, alpha 0.7", overlay(image, select_map(ds, "saliency", sample=sample, target=target),
                                               alpha=0.7)),
            ],
            strict=True,
        ):  # fmt: skip
            ax.imshow(rgb)
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        fig.tight_layout()
        fig.savefig(OUT / "overlay.png", dpi=90)
    metric_figures()
    for name in ("maps_per_map.png", "maps_per_method.png", "overlay.png", "deletion.png", "randomisation.png"):
        print(OUT / name)
    return 0


def metric_figures() -> None:
    """Scores of the demo CNN's maps on 14 held-out shapes, whose masks are known."""
    from xai_bench import explain

    images, labels, masks = make_shapes(300, seed=0)
    model = train(images[:256], labels[:256], steps=150)
    x = images[256:270]
    methods = {"occlusion": {"window": 4, "stride": 2}, "saliency": {}, "integrated_gradients": {"n_steps": 16},
               "deeplift": {}}  # fmt: skip
    ds = explain(model, x, methods=methods, targets="predicted")
    scores = evaluate(ds, model = model, masks=masks[256:270, None], metrics={
        "deletion": {"patch": 2, "steps": 20}, "parameter_randomisation": {}, "pointing_game": {},
        "relevance_mass": {}, "relevance_rank": {},
    })  # fmt: skip
    plot_curves(scores, "deletion").savefig(OUT / "deletion.png", dpi=90)
    plot_randomisation(scores).savefig(OUT / "randomisation.png", dpi=90)
    print(metrics_table(scores).round(3).to_string())


if __name__ == "__main__":
    sys.exit(main())
