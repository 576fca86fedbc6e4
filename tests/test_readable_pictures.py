"""Every figure type is readable at the size it is written: no text leaves the figure, no two texts overlap,
no legend covers the bars, and the pictures match the committed ones in docs/img."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.patches import Rectangle
from PIL import Image

matplotlib.use("Agg")

import matplotlib.pyplot as plt

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _builder():
    spec = importlib.util.spec_from_file_location("make_readable_pictures", DOCS / "make_readable_pictures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _in_view(axis, tick) -> bool:
    low, high = sorted(axis.get_view_interval())
    return low - 1e-9 <= tick.get_loc() <= high + 1e-9


def _texts(fig) -> list:
    """The texts drawn: the figure's, the legends', and each visible axes' titles, labels and tick labels."""
    found = [*fig.texts, fig._suptitle, *(t for legend in fig.legends for t in legend.get_texts())]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        found += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        if ax.get_legend() is not None:
            found += ax.get_legend().get_texts()
        if not ax.axison:
            continue
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.get_visible():
                continue
            found += [axis.label, axis.get_offset_text()]
            found += [t.label1 for t in axis.get_major_ticks() if t.label1.get_visible() and _in_view(axis, t)]
            found += [t.label2 for t in axis.get_major_ticks() if t.label2.get_visible() and _in_view(axis, t)]
    unique = {id(t): t for t in found if t is not None}  # the suptitle is also one of the figure's texts
    return [t for t in unique.values() if t.get_visible() and t.get_text().strip()]


def layout_problems(fig) -> list[str]:
    """What makes ``fig`` hard to read: texts outside the figure or over each other, legends over bars."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in _texts(fig)]
    problems = [
        f"{text!r} is clipped by the figure"
        for text, box in boxes
        if box.x0 < frame.x0 - 1 or box.y0 < frame.y0 - 1 or box.x1 > frame.x1 + 1 or box.y1 > frame.y1 + 1
    ]
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        if box_a.padded(-1).overlaps(box_b.padded(-1)):
            problems.append(f"{a!r} overlaps {b!r}")
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    bars = [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle) and p.get_height() * p.get_width()]
    for legend, bar in itertools.product(legends, bars):
        if legend.get_window_extent(renderer).overlaps(bar.get_window_extent(renderer)):
            problems.append(f"a legend covers the bar {bar.get_label()!r}")
            break
    return problems


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """``{name: (figure, path of its picture drawn now)}``, each figure at the resolution it is written at."""
    builder, folder = _builder(), tmp_path_factory.mktemp("pictures")
    plt.close("all")  # figures other tests left open count towards matplotlib's warning at 20
    figures = builder.figures()
    for name, fig in figures.items():
        fig.set_dpi(builder.DPI)  # constrained layout depends on it: check the layout that is written
        fig.savefig(folder / name, dpi=builder.DPI)
    yield {name: (fig, folder / name) for name, fig in figures.items()}
    for fig in figures.values():
        plt.close(fig)


def test_every_figure_type_has_a_committed_picture(drawn):
    assert len(drawn) >= 6
    for name in drawn:
        assert (DOCS / "img" / name).exists(), f"run python docs/make_readable_pictures.py to draw {name}"


def test_the_pictures_match_the_committed_ones(drawn):
    for name, (_, path) in drawn.items():
        now = Image.open(path).convert("L")
        committed = Image.open(DOCS / "img" / name).convert("L")
        assert now.size == committed.size, name
        # Coarse: fonts render a little differently from machine to machine, the layout does not.
        small = (max(1, now.size[0] // 8), max(1, now.size[1] // 8))
        a = np.asarray(now.resize(small, Image.Resampling.BOX), dtype=float) / 255
        b = np.asarray(committed.resize(small, Image.Resampling.BOX), dtype=float) / 255
        assert np.abs(a - b).mean() < 0.02, name


def test_no_text_is_clipped_or_overlaps_and_no_legend_covers_the_bars(drawn):
    problems = {name: layout_problems(fig) for name, (fig, _) in drawn.items()}
    assert problems == {name: [] for name in drawn}


def test_the_checks_catch_the_old_layouts():
    # The shortcut chart as it was: rotated long labels under the bars and the legend inside the axes.
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = ["area of the padding (an even map)", "deeplift", "deeplift (mean image reference)", "guided_backprop"]
    for offset, group in enumerate(("COVID-19", "healthy", "pneumonia")):
        ax.bar(np.arange(4) + 0.25 * offset, [0.25, 0.26, 0.22, 0.2], 0.25, label=group)
    ax.set_xticks(np.arange(4), names, rotation=30)
    ax.set_xlabel("method")
    ax.legend(fontsize=7)
    fig.tight_layout()
    problems = layout_problems(fig)
    plt.close(fig)
    assert any("overlaps" in p for p in problems) and any("legend covers" in p for p in problems)
