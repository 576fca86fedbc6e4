"""Pictures of results, public: maps over their inputs, neuron activation profiles, metric curves.

Everything here reads a Dataset (of :func:`~xai_bench.explain`, :func:`~xai_bench.open_maps`,
:func:`~xai_bench.profile` or :func:`~xai_bench.evaluate`) and returns a matplotlib figure or
an image array; nothing is saved unless the caller saves it.
"""

from __future__ import annotations

from .app.viz import (
    colour_limit,
    display_image,
    metrics_table,
    overlay,
    plot_curves,
    plot_dead_feature_maps,
    plot_maps,
    plot_naps,
    plot_randomisation,
    profiled_layers,
)

__all__ = [
    "colour_limit",
    "display_image",
    "metrics_table",
    "overlay",
    "plot_curves",
    "plot_dead_feature_maps",
    "plot_maps",
    "plot_naps",
    "plot_randomisation",
    "profiled_layers",
]
