"""Pictures of attribution maps (matplotlib)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..api.outputs import stored_output
from ..core.normalization import Normalization
from ..storage.datasets import INPUT, layout_of, map_layer, method_ids, select_map

SCALES = ("map", "sample", "method")
_SCALE_TEXT = {
    "map": "each map on its own scale",
    "sample": "one scale per row (sample), shared by its methods",
    "method": "one scale per column (method), shared by its samples",
}


def overlay(
    image: Any,
    attribution: Any,
    *,
    alpha: float = 0.5,
    signed: bool | None = None,
    cmap: str | None = None,
    percentile: float | None = 99.0,
    limit: float | None = None,
) -> np.ndarray:
    """Blend a map over its image: an RGB array (H, W, 3) in [0, 1], no figure needed.

    ``image`` is (C, H, W), (H, W, C) or (H, W) with values in [0, 1] (grey is repeated to RGB);
    ``attribution`` is (C, H, W) or (H, W), a tensor, array or DataArray, summed over channels.
    Signed maps (``signed=None``: any negative value) use a diverging colormap centred at zero
    (red raises the score, blue lowers it); unsigned ones a sequential colormap from zero. Colour
    limits clip at ``percentile`` of |map| (``None``: the maximum), so a few extreme pixels do
    not wash out the rest; ``limit`` sets them instead. ``alpha`` is the map's weight in the blend.
    """
    from matplotlib import colormaps

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}.")
    rgb = _as_rgb(_as_array(image))
    m = _channel_sum(attribution)
    if m.shape != rgb.shape[:2]:
        raise ValueError(f"the map is {m.shape} but the image is {rgb.shape[:2]}; they must have the same size.")
    signed = bool((m < 0).any()) if signed is None else signed
    limit = limit if limit is not None else colour_limit([m], percentile)
    name = cmap or ("RdBu_r" if signed else "magma")
    colours = colormaps[name](_unit(m, signed, limit))[..., :3]
    return np.clip((1.0 - alpha) * rgb + alpha * colours, 0.0, 1.0)


def colour_limit(maps: Sequence[np.ndarray], percentile: float | None = 99.0) -> float:
    """The colour limit of ``maps`` (channel-summed, one shared scale): ``percentile`` of |values|."""
    values = np.abs(np.concatenate([np.ravel(m) for m in maps]))
    values = values[np.isfinite(values)]
    if not len(values):
        return 1.0
    return float(np.percentile(values, percentile) if percentile is not None else values.max()) or 1.0


def _unit(m: np.ndarray, signed: bool, limit: float) -> np.ndarray:
    """Map values to [0, 1] for a colormap: zero at 0.5 when signed, at 0 otherwise."""
    if signed:
        return 0.5 + 0.5 * np.clip(m / limit, -1.0, 1.0)
    return np.clip(m / limit, 0.0, 1.0)


def _channel_sum(attribution: Any) -> np.ndarray:
    m = _as_array(attribution)
    return np.nan_to_num(m.sum(0) if m.ndim == 3 else m)


def _as_array(value: Any) -> np.ndarray:
    """A float64 numpy array from a tensor (any device), a DataArray or an array."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    elif isinstance(value, xr.DataArray):
        value = value.values
    return np.asarray(value, dtype=np.float64)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = image[..., None]
    elif image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.transpose(1, 2, 0)
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"image must be (C, H, W), (H, W, C) or (H, W) with 1 or 3 channels, got {image.shape}.")
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def display_image(ds: xr.Dataset, sample: Any, images: Any = None) -> np.ndarray | None:
    """The input of ``sample`` as it looked before normalisation, in [0, 1], from ``images`` or the Dataset."""
    if images is not None:
        image = _as_array(images)[list(ds["sample"].values).index(sample)]
    elif INPUT in ds:
        image = np.asarray(ds[INPUT].sel(sample=sample).values, dtype=np.float64)
    else:
        return None
    if "input_normalization" in ds.attrs:
        image = Normalization.from_json(ds.attrs["input_normalization"]).undo(image)
    return np.clip(image, 0.0, 1.0)


@dataclass(frozen=True)
class _Panel:
    method: str
    target: Any
    values: np.ndarray | None  # channel-summed map; None where the pair has no map
    score: float
    why: str = ""
    output: str = "logit"  # what the score is: the store's explained output
    layer: str | None = None  # the layer the map is of (drawn at its own resolution, without the input); None: input


def plot_maps(
    ds: xr.Dataset,
    *,
    samples: Sequence[Any] | None = None,
    target: Any | None = None,
    methods: Sequence[str] | None = None,
    images: Any = None,
    scale: str = "map",
    percentile: float | None = 99.0,
    alpha: float = 0.6,
):
    """Return a figure with one row per sample: its input, then each method's map over it.

    The input is ``images`` (N, C, H, W) if given, else the Dataset's ``input`` variable (see
    ``explain(store_inputs=...)``), shown un-normalised when the Dataset records its
    normalisation; without either, maps are drawn alone. Maps are summed over channels; signed
    maps use a diverging colormap centred on zero (red raises the score, blue lowers it),
    non-negative ones a sequential one; each panel has a colourbar and a title with the method,
    the target and its score (the logit, or the sigmoid or softmax the store's ``output`` names).
    ``scale`` picks which maps share colour limits: ``"map"``
    (each its own), ``"sample"`` (a row's methods) or ``"method"`` (a column's samples); limits
    clip at ``percentile`` of |map|, and the figure says which scaling it uses. Columns follow
    the order the methods were asked for. ``target`` defaults to each sample's highest-scoring
    target among those with maps; a (sample, target) pair without a map gets a panel that says so.
    Maps of a layer (a method's ``layer=``) are drawn as their channel sum at the layer's resolution,
    on their own (not over the input, which has another size); a layer whose output is not
    (channels, height, width) per sample gets a panel that says it is not drawn.
    """
    import matplotlib.pyplot as plt

    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(map(repr, SCALES))}, got {scale!r}.")
    available = method_ids(ds)
    methods = list(methods) if methods is not None else available
    unknown = [m for m in methods if m not in available]
    if unknown or not methods:
        raise KeyError(f"no method {unknown[0] if unknown else None!r} in the dataset; it has {available}.")
    samples = list(samples if samples is not None else ds["sample"].values)
    pictures = [display_image(ds, sample, images) for sample in samples]
    with_input = any(p is not None for p in pictures)
    grid = [[_panel(ds, sample, method, target) for method in methods] for sample in samples]
    limits = _limits(grid, scale, percentile)
    cols = len(methods) + with_input
    fig, axes = plt.subplots(len(samples), cols, figsize=(2.6 * cols, 2.6 * len(samples) + 0.4), squeeze=False)
    for row, (sample, picture) in enumerate(zip(samples, pictures, strict=True)):
        if with_input:
            ax = axes[row, 0]
            if picture is not None:
                rgb = _as_rgb(picture)
                ax.imshow(rgb[..., 0] if picture.shape[0] == 1 else rgb, cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{sample}\ninput", fontsize=8)
        for col, panel in enumerate(grid[row]):
            _draw(fig, axes[row, col + with_input], panel, picture, limits[row][col], alpha)
        if not with_input:  # the sample's id has no input panel to sit on
            axes[row, 0].set_ylabel(str(sample), fontsize=8)
    clip = f"the {percentile:g}th percentile of |map|" if percentile is not None else "the largest |value|"
    heading = f"colour scale: {_SCALE_TEXT[scale]}, clipped at {clip}"
    fig.suptitle(heading if cols > 2 else heading.replace(", clipped", ",\nclipped"), fontsize=8)
    return _finish(fig, axes)


def _panel(ds: xr.Dataset, sample: Any, method: str, target: Any) -> _Panel:
    chosen = target if target is not None else _best_target(ds, sample, method)
    if chosen is None:
        return _Panel(method, None, None, np.nan, "no maps for this sample")
    layer = map_layer(ds, method)
    try:
        picked = select_map(ds, method, sample=sample, target=chosen)
    except KeyError:
        return _Panel(method, chosen, None, np.nan, f"no map for target {chosen}", layer=layer)
    if layer is not None and picked.ndim != 3:
        shape = " x ".join(map(str, picked.shape))
        why = f"layer {layer!r}: maps of {shape} per pair, not (channels, height, width); not drawn"
        return _Panel(method, chosen, None, np.nan, why, layer=layer)
    values = _channel_sum(picked)
    return _Panel(method, chosen, values, _score(ds, sample, chosen), output=stored_output(ds.attrs), layer=layer)


def _limits(grid: list[list[_Panel]], scale: str, percentile: float | None) -> list[list[tuple[float, bool]]]:
    """(limit, signed) per panel: the panels a scale groups share both."""

    def shared(panels: list[_Panel]) -> tuple[float, bool]:
        maps = [p.values for p in panels if p.values is not None]
        if not maps:
            return 1.0, False
        return colour_limit(maps, percentile), any(bool((m < 0).any()) for m in maps)

    rows, cols = len(grid), len(grid[0])
    if scale == "map":
        return [[shared([p]) for p in line] for line in grid]
    if scale == "sample":
        return [[shared(line)] * cols for line in grid]
    per_column = [shared([grid[r][c] for r in range(rows)]) for c in range(cols)]
    return [list(per_column) for _ in range(rows)]


def _draw(fig, ax, panel: _Panel, picture: np.ndarray | None, limit_signed: tuple[float, bool], alpha: float) -> None:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    name = panel.method.replace("_", " ") + (f" @ {panel.layer}" if panel.layer is not None else "")
    if panel.values is None:
        ax.text(0.5, 0.5, panel.why, ha="center", va="center", fontsize=8, wrap=True, transform=ax.transAxes)
        ax.set_title(name, fontsize=8)
        ax.set_frame_on(False)
        return
    limit, signed = limit_signed
    cmap = "RdBu_r" if signed else "magma"
    if picture is not None and panel.layer is None:
        ax.imshow(overlay(picture, panel.values, alpha=alpha, signed=signed, cmap=cmap, limit=limit))
    else:
        ax.imshow(colormaps[cmap](_unit(panel.values, signed, limit)))
    norm = Normalize(-limit if signed else 0.0, limit)
    bar = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, fraction=0.046, pad=0.03)
    bar.ax.tick_params(labelsize=6)
    bar.formatter.set_powerlimits((-2, 3))
    bar.ax.yaxis.get_offset_text().set_fontsize(6)
    ax.set_title(f"{name}\n{panel.target} ({panel.output} {panel.score:.3g})", fontsize=8)


def _score(ds: xr.Dataset, sample: Any, target: Any) -> float:
    row = ds.sel(sample=sample)
    by_index = isinstance(target, (int, np.integer)) and not isinstance(target, bool)
    names = np.atleast_1d(row["target_index" if by_index else "target"].values)
    hits = np.flatnonzero(names == target)
    return float(np.atleast_1d(row["score"].values)[hits[0]]) if len(hits) else float("nan")


def _finish(fig, axes):
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def _best_target(ds: xr.Dataset, sample: Any, method: str) -> Any:
    """The highest-scoring target of ``sample`` that has a map (either layout); None if none has."""
    row = ds.sel(sample=sample)
    first = row[method].isel({dim: 0 for dim in ds[method].dims[2:]})  # a pair not computed is NaN throughout
    have = ~np.isnan(np.atleast_1d(first.values))
    if not have.any():
        return None
    scores = np.where(have, np.atleast_1d(row["score"].values), -np.inf)
    column = int(np.argmax(scores))
    key = "target_index" if layout_of(ds) == "slot" and ds["target"].dtype.kind in "iu" else "target"
    return np.atleast_1d(row[key].values)[column]


def plot_naps(ds: xr.Dataset, layer: str, *, top: int | None = None, input_layer: str | None = "input"):
    """Return a figure of one layer's profiles, a row per group, like the NAP figures of Krug et al.

    First column: the group's average input (if the input was profiled); then the NAPs of the
    layer's ``top`` highest-scoring feature maps, those whose NAPs differ most between groups
    (score: the mean over groups and positions of NAP squared), best first. The NAPs share one
    diverging colour scale centred on zero, shown by the colourbar (red: the group activates the
    map more than the average group; blue: less); the heading says what the columns are.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    if layer not in ds:
        profiled = sorted(json.loads(ds.attrs["layers"])) if "layers" in ds.attrs else []
        raise KeyError(f"no profile for layer {layer!r}; profiled: {profiled}")
    ranked = ds[f"{layer}_top"].values
    channels = [int(c) for c in ranked[: top or len(ranked)]]
    show_input = input_layer is not None and f"{input_layer}_group_mean" in ds
    groups = ds["group"].values
    channel_dim = ds[layer].dims[1]
    naps = {
        (g, c): np.atleast_2d(ds[layer].sel(group=g).isel({channel_dim: c}).values) for g in groups for c in channels
    }
    limit = colour_limit(list(naps.values()))
    cols = len(channels) + show_input
    fig, axes = plt.subplots(len(groups), cols, figsize=(2.1 * cols + 0.9, 2.0 * len(groups) + 0.9), squeeze=False,
                             layout="constrained")  # fmt: skip
    for row, group in enumerate(groups):
        if show_input:
            mean = ds[f"{input_layer}_group_mean"].sel(group=group).mean(ds[f"{input_layer}_group_mean"].dims[1])
            axes[row, 0].imshow(mean.values, cmap="gray")
            axes[row, 0].set_ylabel(str(group), fontsize=8)
        for col, channel in enumerate(channels, start=show_input):
            shown = axes[row, col].imshow(naps[group, channel], cmap="RdBu_r", norm=Normalize(-limit, limit))
            if not show_input and col == 0:
                axes[row, col].set_ylabel(str(group), fontsize=8)
    if show_input:
        axes[0, 0].set_title("average input", fontsize=8)
    for rank, channel in enumerate(channels, start=1):
        score = float(ds[f"{layer}_score"].values[channel])
        axes[0, rank - 1 + show_input].set_title(f"map {channel} (#{rank})\nscore {score:.2g}", fontsize=8)
    bar = fig.colorbar(shown, ax=axes[:, show_input:], shrink=0.6, pad=0.02)
    bar.set_label("NAP: group mean minus mean of groups", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    module = json.loads(ds.attrs["layers"]).get(layer, layer) if "layers" in ds.attrs else layer
    where = f"{layer!r}" + (f" (module {module!r})" if module != layer else "")
    heading = (
        f"Rows: groups. NAPs of the {_count(len(channels), 'feature map')} of {where} whose NAPs differ most "
        "between the groups (score: mean of NAP² over groups and positions), best first; red: above the mean of groups"
    )
    # About 15 characters of 8-point text per inch: wrapped to the figure's width, never clipped by it.
    fig.suptitle(textwrap.fill(heading, int(15 * fig.get_figwidth())), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _count(n: int, thing: str) -> str:
    return f"{thing}" if n == 1 else f"{n} {thing}s"


def profiled_layers(ds: xr.Dataset) -> list[str]:
    """The layers of a profile in the order data flows through them (as recorded by ``profile``), the input first."""
    have = [str(name)[: -len("_top")] for name in ds.data_vars if str(name).endswith("_top")]
    have += [str(v) for v in ds["layer"].values if str(v) not in have] if "layer" in ds.coords else []
    order = json.loads(ds.attrs["layer_order"]) if "layer_order" in ds.attrs else []
    # Older profiles have no recorded order: the input, then the dead-share coordinate's (the order named in).
    known = [str(v) for v in ds["layer"].values] if "layer" in ds.coords else []
    fallback = {name: i for i, name in enumerate(["input", *known])}
    return sorted(
        have, key=lambda name: (order.index(name) if name in order else len(order), fallback.get(name, len(fallback)))
    )


def plot_dead_feature_maps(ds: xr.Dataset):
    """Return a bar chart of the share of dead feature maps per layer, in network order."""
    import matplotlib.pyplot as plt

    shares = ds["dead_share"]
    shares = shares.sel(layer=[name for name in profiled_layers(ds) if name in shares["layer"].values])
    fig, ax = plt.subplots(figsize=(max(3.6, 1.2 + 0.9 * shares.sizes["layer"]), 3))
    bars = ax.bar([str(v) for v in shares["layer"].values], 100 * shares.values, color="#555")
    ax.bar_label(bars, labels=[f"{100 * v:.1f}%" for v in shares.values], fontsize=7)  # a 0% bar is no bar
    ax.set_ylabel("dead feature maps (%)")
    ax.set_ylim(0, 100)
    if not (shares.values > 0).any():  # an empty box reads as a failed plot
        ax.text(0.5, 0.5, "none\n(every feature map was active)", ha="center", va="center", transform=ax.transAxes,
                fontsize=9, wrap=True)  # fmt: skip
    threshold = ds.attrs.get("dead_threshold", 0.0)
    ax.set_title(
        f"never above {threshold:g}; overall {100 * ds.attrs.get('dead_share_overall', np.nan):.1f}%", fontsize=9
    )
    fig.tight_layout()
    return fig


def _metric_variables(scores: xr.Dataset, metric: str, suffix: str = "") -> dict[str, xr.DataArray]:
    """``{method: variable}`` of ``metric`` (with ``suffix``) in an ``evaluate`` result."""
    found = {}
    for name, var in scores.data_vars.items():
        if var.attrs.get("metric") == metric and str(name).endswith(f"_{metric}{suffix}"):
            found[var.attrs["method"]] = var
    if not found:
        have = sorted({str(v.attrs.get("metric")) for v in scores.data_vars.values()})
        raise KeyError(f"no {metric!r} scores{' (' + suffix + ')' if suffix else ''} here; the metrics are {have}.")
    return found


def plot_curves(scores: xr.Dataset, metric: str = "deletion"):
    """Return a figure of a perturbation metric's curves: the mean over pairs per method, the area in the legend.

    ``scores`` is what :func:`xai_bench.evaluate` returns (or a store holding it).
    """
    import matplotlib.pyplot as plt

    curves = _metric_variables(scores, metric, "_curve")
    areas = _metric_variables(scores, metric)
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for method, var in curves.items():
        dim = var.dims[-1]
        mean = var.mean([d for d in var.dims if d != dim], skipna=True)
        ax.plot(var[dim].values, mean.values, label=f"{method} ({float(areas[method].mean(skipna=True)):.3f})")
    first = next(iter(curves.values()))
    params = json.loads(first.attrs.get("params", "{}"))
    better = "lower" if not first.attrs.get("higher_is_better", 1) else "higher"
    ax.set_xlabel(f"share of patches {'put back' if metric == 'insertion' else 'removed'}")
    ax.set_ylabel("target score" if params.get("output") != "logit" else "target logit")
    ax.set_title(f"{metric} (area in brackets; {better} is better)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_randomisation(scores: xr.Dataset, metric: str = "parameter_randomisation", similarity: str = "spearman"):
    """Return a figure of the maps' similarity to the trained model's maps as layers are randomised,
    the mean over pairs per method (``similarity``: ``"spearman"`` or ``"ssim"``)."""
    import matplotlib.pyplot as plt

    variables = _metric_variables(scores, metric, "" if similarity == "spearman" else f"_{similarity}")
    fig, ax = plt.subplots(figsize=(max(4.8, 0.35 * len(next(iter(variables.values()))[-1]) + 2), 3.6))
    for method, var in variables.items():
        dim = var.dims[-1]
        mean = var.mean([d for d in var.dims if d != dim], skipna=True)
        ax.plot(range(var.sizes[dim]), mean.values, marker="o", ms=3, label=method)
        ax.set_xticks(range(var.sizes[dim]), [str(v) for v in var[dim].values], rotation=60, ha="right", fontsize=6)
    ax.axhline(0, color="#999", lw=0.5)
    ax.set_ylabel(f"{similarity} to the trained maps")
    ax.set_xlabel("layers randomised, from the top down to")
    ax.set_title("parameter randomisation (a method that passes falls towards 0)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def metrics_table(results: xr.Dataset | dict[str, xr.Dataset]):
    """A table of each method's mean score per metric (over pairs; curves left out), as a pandas DataFrame.

    Given ``{model name: evaluate result}``, the columns are (model, metric), so models sit side by side.
    """
    import pandas as pd

    def one(scores: xr.Dataset) -> pd.DataFrame:
        rows: dict[str, dict[str, float]] = {}
        for name, var in scores.data_vars.items():
            metric, method = var.attrs.get("metric"), var.attrs.get("method")
            if metric is None or var.ndim != 2 or not str(name).endswith(f"_{metric}"):
                continue
            rows.setdefault(method, {})[metric] = float(var.mean(skipna=True))
        return pd.DataFrame.from_dict(rows, orient="index")

    if isinstance(results, xr.Dataset):
        return one(results)
    return pd.concat({model: one(scores) for model, scores in results.items()}, axis=1)
