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

from xai_bench.viz import colour_limit, display_image, overlay, plot_naps

from .interpret import GROUPS
from .models import NAMES

#: Fig. 3's scores, in the order of its panels' bar groups.
FIG3_SCORES = ("precision", "recall", "f1", "accuracy", "specificity")
_SCORE_NAMES = {"precision": "precision", "recall": "recall", "f1": "F1", "accuracy": "accuracy",
                "specificity": "specificity"}  # fmt: skip


def scores_by_label(results: Mapping[str, list[dict]], labels: Sequence[str], path: Path) -> Path:
    """Fig. 3: (a) the micro scores of every model, then one panel per output; mean over folds with its spread."""
    return _saved(scores_figure(results, labels), path, 110)


def scores_figure(results: Mapping[str, list[dict]], labels: Sequence[str]):
    """The figure of :func:`scores_by_label`: panel (a) micro-averaged over the outputs, (b) on one per output,
    each with a group of bars (one per model) for every score; the legend below the panels."""
    panels: list[tuple[str, str | None]] = [("(a) micro average over the outputs", None)]
    panels += [(f"({chr(ord('a') + i)}) {label}", label) for i, label in enumerate(labels, start=1)]

    def read(fold: Mapping, score: str, label: str | None) -> float:
        return fold[f"micro_{score}"] if label is None else fold["per_label"][label][score]

    columns = 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(7.2, 0.6 + 2.1 * rows), squeeze=False, sharey=True,
                             layout="constrained")  # fmt: skip
    width = 0.8 / len(results)
    for ax, (title, label) in zip(axes.flat, panels, strict=False):
        for i, (model, folds) in enumerate(results.items()):
            values = np.array([[read(fold, score, label) for score in FIG3_SCORES] for fold in folds])
            ax.bar(np.arange(len(FIG3_SCORES)) + i * width, values.mean(0), width, label=model, capsize=1.5,
                   yerr=values.std(0, ddof=1) if len(folds) > 1 else None, error_kw={"linewidth": 0.6})  # fmt: skip
        ax.set_xticks(np.arange(len(FIG3_SCORES)) + 0.4 - width / 2, [_SCORE_NAMES[s] for s in FIG3_SCORES],
                      fontsize=7)  # fmt: skip
        ax.set_ylim(0, 1)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(title, fontsize=8)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("mean ± sd over test folds", fontsize=7)
    handles, names = axes.flat[0].get_legend_handles_labels()
    # Outside the axes: inside, the legend hid the tallest bars.
    fig.legend(handles, names, loc="outside lower center", ncol=min(4, len(results)), fontsize=7, frameon=False)
    return fig


def findings_chart(labels: Sequence[Sequence[str]], sources: Sequence[str], order: Sequence[str], path: Path) -> Path:
    """Fig. 1: images per finding (every label an image has, its ancestors included), by data source."""
    return _saved(findings_figure(labels, sources, order), path, 110)


def findings_figure(labels: Sequence[Sequence[str]], sources: Sequence[str], order: Sequence[str]):
    """The figure of :func:`findings_chart`; ``order`` lists the labels in the order drawn (others left out)."""
    present = [name for name in order if any(name in have for have in labels)]
    kinds = sorted(set(sources))
    counts = np.array([[sum(1 for have, s in zip(labels, sources, strict=True) if name in have and s == kind)
                        for name in present] for kind in kinds])  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.22 * len(present)), layout="constrained")
    left = np.zeros(len(present))
    for kind, row in zip(kinds, counts, strict=True):
        ax.barh(np.arange(len(present)), row, left=left, label=kind)
        left += row
    for y, total in enumerate(left):
        ax.text(total, y, f" {int(total)}", va="center", fontsize=7)
    ax.set_yticks(np.arange(len(present)), present, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.0, float(left.max())) * 1.15)
    ax.set_xlabel("images (an image counts for each of its findings)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    fig.legend(loc="outside lower center", ncol=len(kinds), fontsize=7, frameon=False, title="source",
               title_fontsize=7)  # fmt: skip
    return fig


def hierarchy_chart(parents: Mapping[str, str | None], outputs: Sequence[str], path: Path) -> Path:
    """Fig. 2: the label hierarchy (``labels.json``), the models' outputs in bold."""
    return _saved(hierarchy_figure(parents, outputs), path, 110)


def hierarchy_figure(parents: Mapping[str, str | None], outputs: Sequence[str]):
    """The figure of :func:`hierarchy_chart`: a tree from left (roots) to right, a row per leaf."""
    children: dict[str | None, list[str]] = {}
    for name, parent in parents.items():
        children.setdefault(parent, []).append(name)
    place: dict[str, tuple[int, float]] = {}
    next_row = [0.0]

    def lay(name: str, depth: int) -> float:
        kids = children.get(name, [])
        rows = [lay(kid, depth + 1) for kid in kids]
        row = sum(rows) / len(rows) if rows else next_row[0]
        if not rows:
            next_row[0] += 1
        place[name] = (depth, row)
        return row

    for root in children.get(None, []):
        lay(root, 0)
    depth = max(d for d, _ in place.values()) + 1
    fig, ax = plt.subplots(figsize=(2.3 * depth + 0.4, 0.5 + 0.24 * next_row[0]), layout="constrained")
    for name, (d, row) in place.items():
        parent = parents[name]
        if parent is not None:
            pd_, prow = place[parent]
            ax.plot([pd_ + 0.05, d - 0.05], [prow, row], color="0.6", linewidth=0.7)
        bold = name in outputs
        ax.text(d, row, name, ha="center", va="center", fontsize=7, fontweight="bold" if bold else "normal",
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "#fde0c5" if bold else "white",
                      "edgecolor": "0.5", "linewidth": 0.5})  # fmt: skip
    ax.set_xlim(-0.5, depth - 0.5)
    ax.set_ylim(next_row[0] - 0.5, -0.5)
    ax.set_axis_off()
    ax.set_title("label hierarchy: a finding implies its ancestors (bold: the models' outputs)", fontsize=8)
    return fig


def method_grid(maps: Mapping[str, xr.Dataset], sample: str, target: str, path: Path) -> Path:
    """Figs. 4-6: one image, a row per model and a column per method, each map over the image."""
    models = list(maps)
    methods = next(iter(maps.values())).xai.methods
    fig, axes = plt.subplots(len(models), len(methods) + 1, figsize=(1.6 * (len(methods) + 1), 1.7 * len(models)),
                             squeeze=False)  # fmt: skip
    for row, model in enumerate(models):
        ds = maps[model]
        image = display_image(ds, sample)
        axes[row, 0].imshow(image.transpose(1, 2, 0) if image.shape[0] == 3 else image[0], cmap="gray")
        axes[row, 0].set_ylabel(NAMES.get(model, model), fontsize=7)
        for col, method in enumerate(methods, start=1):
            try:
                axes[row, col].imshow(overlay(image, ds.xai.select(method, sample, target), alpha=0.6))
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


def _drop(ds: xr.Dataset, sample: str, target: str) -> np.ndarray:
    """The occlusion map of ``target`` as the drop in its score: a window covers every channel, so each
    channel holds the same drop, and their mean (not their sum) is it."""
    return ds.xai.select("occlusion", sample, target).values.mean(0)


def occlusion_targets(maps: xr.Dataset | Mapping[str, xr.Dataset], sample: str, path: Path,
                      targets: Sequence[str] | None = None) -> Path:  # fmt: skip
    """Fig. 10: occlusion for each of one image's targets (e.g. COVID-19, pneumonia and viral), a row per model."""
    return _saved(occlusion_figure(maps, sample, targets), path, 110)


def occlusion_figure(maps: xr.Dataset | Mapping[str, xr.Dataset], sample: str, targets: Sequence[str] | None = None):
    """The figure of :func:`occlusion_targets`: ``maps`` one store or ``{model: store}``; ``targets`` those of the
    first store for the sample by default. Each row (model) on one colour scale with its own colour bar."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    stores = {"": maps} if isinstance(maps, xr.Dataset) else dict(maps)
    targets = list(targets or next(iter(stores.values())).xai.targets(sample))
    fig, axes = plt.subplots(len(stores), len(targets) + 1, figsize=(2.2 * (len(targets) + 1) + 0.8,
                             0.3 + 2.3 * len(stores)), squeeze=False, layout="constrained")  # fmt: skip
    for row, (model, ds) in enumerate(stores.items()):
        image = display_image(ds, sample)
        present = set(ds.xai.targets(sample))
        values = {t: _drop(ds, sample, t)
                  for t in targets if t in present}  # fmt: skip
        limit = colour_limit(list(values.values())) if values else 1.0
        axes[row, 0].imshow(image.transpose(1, 2, 0), cmap="gray")
        axes[row, 0].set_title(NAMES.get(model, model) or sample, fontsize=7)
        for ax, target in zip(axes[row, 1:], targets, strict=True):
            if target in values:
                ax.imshow(overlay(image, values[target], alpha=0.6, signed=True, limit=limit))
            else:
                ax.text(0.5, 0.5, "not explained", ha="center", va="center", fontsize=7, transform=ax.transAxes)
            ax.set_title(f"occlusion: {target}", fontsize=7)
        bar = fig.colorbar(ScalarMappable(Normalize(-limit, limit), "RdBu_r"), ax=axes[row, 1:], shrink=0.85,
                           pad=0.02)  # fmt: skip
        bar.set_label("drop in the score", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    for ax in axes.flat:
        ax.set_axis_off()
    if len(stores) > 1:
        fig.suptitle(sample, fontsize=8)
    return fig


def case_chart(maps: Mapping[str, xr.Dataset], sample: str, output: str, wrong: str, error: str,
               probabilities: Mapping[str, float], path: Path) -> Path:  # fmt: skip
    """Fig. 7: the case one model gets wrong, with every model's occlusion map (:func:`case_figure`)."""
    return _saved(case_figure(maps, sample, output, wrong, error, probabilities), path, 110)


def case_figure(maps: Mapping[str, xr.Dataset], sample: str, output: str, wrong: str, error: str,
                probabilities: Mapping[str, float]):  # fmt: skip
    """Fig. 7: one image that one model gets wrong and the others right: each model's occlusion map of ``output``
    (each on its own scale), titled with its probability; the wrong model marked."""
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(1.75 * (len(maps) + 1), 2.5), squeeze=False,
                             layout="constrained")  # fmt: skip
    first = next(iter(maps.values()))
    image = display_image(first, sample)
    axes[0, 0].imshow(image.transpose(1, 2, 0), cmap="gray")
    axes[0, 0].set_title("input", fontsize=7)
    for ax, (model, ds) in zip(axes[0, 1:], maps.items(), strict=True):
        try:
            values = _drop(ds, sample, output)
            ax.imshow(overlay(image, values, alpha=0.6, signed=True))
        except KeyError:
            ax.text(0.5, 0.5, "not explained", ha="center", va="center", fontsize=7, transform=ax.transAxes)
        mark = f"\n{error}" if model == wrong else ""
        ax.set_title(f"{NAMES.get(model, model)}\np {probabilities[model]:.2f}{mark}", fontsize=7,
                     color="#b2182b" if model == wrong else "black")  # fmt: skip
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(f"{sample}: occlusion of {output}", fontsize=8)
    return fig


def followup_chart(maps: Mapping[str, xr.Dataset], samples: Sequence[str], days: Sequence[float], path: Path,
                   subject: str = "", target: str = "COVID-19") -> Path:  # fmt: skip
    """Fig. 8: one subject's follow-up images, a row per day, with each model's occlusion map of ``target``."""
    return _saved(followup_figure(maps, samples, days, subject, target), path, 110)


def followup_figure(maps: Mapping[str, xr.Dataset], samples: Sequence[str], days: Sequence[float],
                    subject: str = "", target: str = "COVID-19"):  # fmt: skip
    """The figure of :func:`followup_chart`: each model's maps on one colour scale over the series, so that
    the days can be compared."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig, axes = plt.subplots(len(samples), len(maps) + 1, figsize=(2.0 * (len(maps) + 1) + 0.9,
                             0.4 + 1.9 * len(samples)), squeeze=False, layout="constrained")  # fmt: skip
    for col, (model, ds) in enumerate(maps.items(), start=1):
        values = {}
        for sample in samples:
            try:
                values[sample] = _drop(ds, sample, target)
            except KeyError:
                continue
        limit = colour_limit(list(values.values())) if values else 1.0
        for row, sample in enumerate(samples):
            image = display_image(ds, sample)
            if col == 1:
                axes[row, 0].imshow(image.transpose(1, 2, 0), cmap="gray")
                axes[row, 0].set_title(f"day {days[row]:g}", fontsize=7)
            if sample in values:
                axes[row, col].imshow(overlay(image, values[sample], alpha=0.6, signed=True, limit=limit))
            else:
                axes[row, col].text(0.5, 0.5, "not explained", ha="center", va="center", fontsize=7,
                                    transform=axes[row, col].transAxes)  # fmt: skip
            if row == 0:
                axes[row, col].set_title(NAMES.get(model, model), fontsize=7)
        bar = fig.colorbar(ScalarMappable(Normalize(-limit, limit), "RdBu_r"), ax=axes[:, col], shrink=0.6,
                           location="bottom", pad=0.02)  # fmt: skip
        bar.set_label(f"drop in {target}", fontsize=7)
        bar.set_ticks([-limit, 0, limit], labels=[f"{-limit:.2g}", "0", f"{limit:.2g}"])
        bar.ax.tick_params(labelsize=6)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(f"follow-up of {subject or 'one subject'}: occlusion of {target}", fontsize=8)
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
