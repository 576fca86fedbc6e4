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

from xai_bench import open_maps, overlay, select_map
from xai_bench.app.demo import run_demo
from xai_bench.app.viz import plot_maps

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
    for name in ("maps_per_map.png", "maps_per_method.png", "overlay.png"):
        print(OUT / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
