"""The study's figures and its report, from the stages' outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from xai_bench import overlay, select_map
from xai_bench.app.viz import colour_limit, display_image, plot_naps
from xai_bench.storage.datasets import method_ids, targets_of

from .interpret import GROUPS
from .models import NAMES


def scores_by_label(results: Mapping[str, list[dict]], labels: Sequence[str], path: Path) -> Path:
    """Fig. 3: F1 per model and pathology, mean over folds with its spread (the legend below the bars)."""
    return _saved(scores_figure(results, labels), path, 110)


def scores_figure(results: Mapping[str, list[dict]], labels: Sequence[str]):
    """The figure of :func:`scores_by_label`."""
    fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    width = 0.8 / len(results)
    for i, (model, folds) in enumerate(results.items()):
        values = np.array([[fold["per_label"][label]["f1"] for label in labels] for fold in folds])
        ax.bar(np.arange(len(labels)) + i * width, values.mean(0), width,
               yerr=values.std(0, ddof=1) if len(folds) > 1 else None, label=model, capsize=2)  # fmt: skip
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
    ax.set_ylabel("F1 (test folds)")
    ax.set_ylim(0, 1)
    # Outside the axes: inside, the legend hid the tallest bars.
    fig.legend(loc="outside lower center", ncol=min(4, len(results)), fontsize=7, frameon=False)
    return fig


def method_grid(maps: Mapping[str, xr.Dataset], sample: str, target: str, path: Path) -> Path:
    """Figs. 4-6: one image, a row per model and a column per method, each map over the image."""
    models = list(maps)
    methods = method_ids(next(iter(maps.values())))
    fig, axes = plt.subplots(len(models), len(methods) + 1, figsize=(1.6 * (len(methods) + 1), 1.7 * len(models)),
                             squeeze=False)  # fmt: skip
    for row, model in enumerate(models):
        ds = maps[model]
        image = display_image(ds, sample)
        axes[row, 0].imshow(image.transpose(1, 2, 0) if image.shape[0] == 3 else image[0], cmap="gray")
        axes[row, 0].set_ylabel(NAMES.get(model, model), fontsize=7)
        for col, method in enumerate(methods, start=1):
            try:
                axes[row, col].imshow(overlay(image, select_map(ds, method, sample=sample, target=target), alpha=0.6))
            except KeyError:
                axes[row, col].text(0.5, 0.5, "no map", ha="center", va="center", fontsize=7)
            if row == 0:
                axes[row, col].set_title(method.replace("_", " "), fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{sample}: maps of {target} (each map on its own scale, 99th percentile)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def occlusion_targets(ds: xr.Dataset, sample: str, path: Path) -> Path:
    """Fig. 10: occlusion for each of one image's targets (e.g. COVID-19 and pneumonia), on one colour scale."""
    return _saved(occlusion_figure(ds, sample), path, 110)


def occlusion_figure(ds: xr.Dataset, sample: str):
    """The figure of :func:`occlusion_targets`."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    targets = targets_of(ds, sample)
    image = display_image(ds, sample)
    maps = [select_map(ds, "occlusion", sample=sample, target=t).values.sum(0) for t in targets]
    limit = colour_limit(maps)
    fig, axes = plt.subplots(1, len(targets) + 1, figsize=(2.2 * (len(targets) + 1) + 0.8, 2.6), squeeze=False,
                             layout="constrained")  # fmt: skip
    axes[0, 0].imshow(image.transpose(1, 2, 0), cmap="gray")
    axes[0, 0].set_title(sample, fontsize=7)
    for ax, target, values in zip(axes[0, 1:], targets, maps, strict=True):
        ax.imshow(overlay(image, values, alpha=0.6, signed=True, limit=limit))
        ax.set_title(f"occlusion: {target}", fontsize=7)
    for ax in axes.flat:
        ax.set_axis_off()
    bar = fig.colorbar(ScalarMappable(Normalize(-limit, limit), "RdBu_r"), ax=axes[0, 1:], shrink=0.85, pad=0.02)
    bar.set_label("drop in the score when occluded", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    return fig


def naps(profile: xr.Dataset, layer: str, path: Path, top: int = 3) -> Path:
    """Fig. 9: the groups' average inputs and the NAPs of a layer's most distinctive feature maps.

    The study's images are grey, copied into three channels, so the input layer has one distinct map.
    """
    return _saved(plot_naps(profile, layer, top=1 if layer == "input" else top), path, 100)


def shortcut_chart(table: pd.DataFrame, path: Path, title: str) -> Path:
    """The share of |relevance| on the padding, per method and group (mean over images).

    Methods run down the side (their names are long), the groups' legend sits below the bars.
    """
    return _saved(shortcut_figure(table, title), path, 110)


def shortcut_figure(table: pd.DataFrame, title: str):
    """The figure of :func:`shortcut_chart`."""
    pivot = table.pivot_table(index="method", columns="group", values="mean", aggfunc="mean", sort=False)
    pivot = pivot[[g for g in GROUPS if g in pivot.columns] + [g for g in pivot.columns if g not in GROUPS]]
    fig, ax = plt.subplots(figsize=(7, 1.4 + 0.12 * pivot.size), layout="constrained")
    pivot.iloc[::-1].plot.barh(ax=ax, width=0.8, legend=False)
    ax.set_xlabel("share of |relevance| on the padding")
    ax.set_ylabel("")
    ax.set_xlim(0, max(1e-9, float(np.nanmax(pivot.values))) * 1.05 if np.isfinite(pivot.values).any() else 1)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(title, fontsize=9)
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=len(names), fontsize=7, frameon=False)
    return fig


def _saved(fig, path: Path, dpi: int) -> Path:
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def by_group(table: pd.DataFrame) -> pd.DataFrame:
    """A long model x method x group table as rows (model, method) and a "mean ± std (n)" column per group."""
    cells = table.assign(
        cell=[f"{m:.3f} ± {s:.3f} ({n})" if np.isfinite(s) else f"{m:.3f} ({n})"
              for m, s, n in zip(table["mean"], table["std"], table["images"], strict=True)]
    )  # fmt: skip
    keys = [k for k in ("model", "method", "metric") if k in table.columns]
    wide = cells.pivot(index=keys, columns="group", values="cell")
    order = [g for g in ("COVID-19", "pneumonia", "pneumonia without COVID-19", "healthy") if g in wide.columns]
    return wide[order].reset_index().rename_axis(columns=None)


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a Markdown table (no extra dependency)."""
    frame = table.reset_index() if table.index.name else table
    cells = [
        [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)
    ]
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    return "\n".join([header, rule, *("| " + " | ".join(row) + " |" for row in cells)])
