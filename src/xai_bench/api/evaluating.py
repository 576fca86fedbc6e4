"""``evaluate``: score the maps of a Dataset (or store) with metrics, every model call through the engine."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from ..core.checks import to_json
from ..core.errors import InvalidInputError, InvalidParameterError, deprecated, refuse_unknown, renamed
from ..core.provenance import result_attrs, sample_key, versions
from ..engine.entry import Budget, forward_passes
from ..engine.progress import progress_bar
from ..metrics.base import Context, Curve, Metric, Pairs, Score
from ..plugins import registry
from ..plugins.manager import plugin_info
from ..storage.datasets import INPUT, UNUSED, layout_of, map_layer, method_ids
from ..storage.zarr_io import add_to_store, check_can_score, save_maps
from .items import read_item
from .method_runs import method_maps
from .outputs import scored as scored_model
from .outputs import stored_output
from .passes import OLD_PASS_KEYWORDS, Passes, passes_from
from .preflight import check_outputs, eval_mode, on_device

MetricsArg = str | Sequence[str] | Mapping[str, Mapping[str, Any] | None]


def list_metrics() -> dict[str, dict[str, Any]]:
    """List available metric ids with their provider, what they need and their parameters."""
    flags = ("higher_is_better", "needs_masks", "needs_model", "needs_replacement")
    return {metric_id: entry.describe(flags) for metric_id, entry in sorted(registry.metrics.entries().items())}


#: evaluate's parameters besides the maps
EVALUATE_PARAMETERS = [
    "metrics", "model", "inputs", "masks", "methods", "method_params", "passes", "into", "overwrite",
]  # fmt: skip


def evaluate(
    maps: xr.Dataset,
    *legacy: Any,
    metrics: MetricsArg,
    model: nn.Module | None = None,
    inputs: Any = None,
    masks: Any = None,
    methods: Sequence[str] | None = None,
    method_params: Mapping[str, Mapping[str, Any]] | None = None,
    passes: Passes | int | str | dict | None = None,
    into: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    **deprecated_keywords: Any,
) -> xr.Dataset:
    """Score ``maps`` (a Dataset from ``explain`` or ``open_maps``, either target layout) with ``metrics``.

    ``metrics`` is an id, an instance (``Deletion(steps=20)``), a list of them or ``{id: params}``
    (see :func:`list_metrics`). ``model`` and ``inputs`` ((N, C, H, W), a map-style data set of
    images, or None to use the inputs the Dataset keeps) are needed by metrics that call the model
    (deletion, insertion, randomisation); ``masks`` by localisation metrics: (N, 1, H, W) shared by
    every target, (N, T, H, W) one per target column or slot, or a DataArray with the maps'
    ``sample`` (and ``target``) coordinates. ``methods`` limits the methods scored (default: all in
    ``maps``). Maps of a layer (a method's ``layer=``) are skipped, with the reason in the result's
    ``skipped`` attribute: metrics score maps of the input's shape. Metrics that make maps again take
    each method's parameters from the maps' provenance; ``method_params`` replaces them (needed where
    they were tensors, such as baseline sets). Every model call goes through the engine's passes
    (``passes``: as :func:`explain`).

    Returns a Dataset with a variable ``<method>_<metric>`` per method and metric (read them with
    ``scores.xai.metric(metric, method)``), dims as the maps' pairs ``(sample, target|slot)`` (NaN
    where a pair has no map), plus a curve dimension where a metric has one, and further values as
    ``<method>_<metric>_<part>``. With ``into`` (the maps' own store, or one of scores of the same
    samples), the variables are added to it, each array whole and checksummed; a path with no store
    gets a new store of the scores alone. To score again with other parameters, pass
    ``overwrite=True`` (the variables, and a curve axis only they use, are replaced) or another
    store. What the store cannot take (variables it holds without ``overwrite``, other samples, a
    curve axis other variables keep) is refused before any scoring.

    0.2's ``evaluate(model, inputs, maps, ...)``, ``store=`` (now ``into=``) and the pass keywords
    (``batch_size``, ``memory_budget``, ``device``, ``progress``) still work in 0.3, with a
    ``DeprecationWarning``.
    """
    if legacy:
        if len(legacy) != 2 or model is not None or inputs is not None:
            raise TypeError("evaluate() takes the maps as its one positional argument: evaluate(maps, metrics=...).")
        deprecated("evaluate(model, inputs, maps, ...)", "evaluate(maps, model=model, inputs=inputs, ...)")
        model, inputs, maps = maps, legacy[0], legacy[1]
    into = renamed(deprecated_keywords, "evaluate", "store", "into", into)
    passes = passes_from(passes, deprecated_keywords, "evaluate")
    refuse_unknown(deprecated_keywords, "evaluate", [*EVALUATE_PARAMETERS, *OLD_PASS_KEYWORDS])
    if not isinstance(maps, xr.Dataset):
        raise InvalidInputError(
            f"evaluate() scores a Dataset of maps (explain's, or open_maps'), got {type(maps).__name__}."
        )
    specs = registry.resolve(registry.metrics, metrics)
    scored = _methods_scored(maps, methods)
    _check_can_score(maps, specs, scored, model, into, overwrite)
    result = _score(maps, specs, scored, model, inputs, masks, method_params, passes)
    if into is not None and os.path.exists(into):
        add_to_store(result, into, overwrite=overwrite)
    elif into is not None:
        save_maps(result, into)
    return result


def _methods_scored(maps: xr.Dataset, methods: Sequence[str] | None) -> list[str]:
    available = method_ids(maps)
    scored = list(methods) if methods is not None else available
    unknown = [m for m in scored if m not in available]
    if unknown or not scored:
        raise InvalidParameterError(
            f"the maps have no method {unknown[0] if unknown else None!r}; they have {available}."
        )
    return scored


def _check_can_score(maps, specs, scored, model, into, overwrite) -> None:
    """Refuse before any scoring what cannot be scored or written."""
    if model is None and any(metric.needs_model for _, metric in specs):
        names = [entry.id for entry, metric in specs if metric.needs_model]
        raise InvalidParameterError(f"{', '.join(names)} call the model: pass it as evaluate(maps, model=...).")
    if into is not None and os.path.exists(into):
        coords = {n: maps[n].values.tolist() for n in ("sample", "target", "slot") if n in maps.coords}
        names = [f"{m}_{entry.id}" for m in scored if map_layer(maps, m) is None for entry, _ in specs]
        params = {entry.id: to_json(metric.params()) for entry, metric in specs}
        check_can_score(into, coords, names, params, overwrite=overwrite)


def _score(maps, specs, scored, model, inputs, masks, method_params, passes: Passes) -> xr.Dataset:
    """Each metric's scores of each method's maps, as one Dataset on the maps' pairs."""
    chosen = passes.chosen_device()
    x = _inputs(inputs, maps, required=any(metric.needs_model for _, metric in specs))
    table = _pairs_table(maps)
    of_input = [method for method in scored if map_layer(maps, method) is None]
    mask_rows = _masks(masks, maps, table) if of_input and any(m.needs_masks for _, m in specs) else None
    task = str(maps.attrs.get("task", "multiclass"))
    results: dict[str, xr.Variable] = {}
    curve_coords: dict[str, Sequence[Any]] = {}
    skipped: dict[str, str] = {}
    model_attrs: dict[str, Any] = {}
    with (
        eval_mode(model) if model is not None else contextlib.nullcontext(),
        on_device(model if model is not None else nn.Module(), chosen),
    ):
        if x is not None:
            x = x.to(chosen) if chosen is not None else x
            if x.is_inference():
                x = x.clone()  # made under torch.inference_mode(): it could not take part in autograd
            if model is not None:
                x = x.to(next((p.dtype for p in model.parameters() if p.is_floating_point()), x.dtype))
        budget = Budget(passes.fixed_images, passes.budget(x.device if x is not None else torch.device("cpu")))
        if model is not None:
            model_attrs = result_attrs(model)
        for method in scored:
            layer = map_layer(maps, method)
            if layer is not None:
                for entry, _ in specs:
                    skipped[f"{method}_{entry.id}"] = _layer_reason(maps, method, layer)
                continue
            pairs, column = _pairs(maps, method, table, mask_rows, method_params)
            context = _context(model, x, maps, method, pairs, budget, passes, task)
            for entry, metric in specs:
                why = _why_not(metric, pairs)
                if why:
                    skipped[f"{method}_{entry.id}"] = why
                    continue
                score = metric.score(pairs, context)
                where = (pairs.sample.numpy(), column)
                _collect(results, curve_coords, f"{method}_{entry.id}", score, table, where, entry, metric, method)
    attrs = {**(model_attrs or versions()), "metrics": to_json([entry.id for entry, _ in specs]),
             "skipped": to_json(skipped)}  # fmt: skip
    coords = {name: maps[name].variable for name in ("sample", "target", "target_index", "slot") if name in maps.coords}
    coords.update({dim: np.asarray(values) for dim, values in curve_coords.items()})
    return xr.Dataset(results, coords=coords, attrs=attrs)


class _Table:
    """The maps' (sample, column) pairs: positions, class indices and which have a map."""

    def __init__(self, samples: int, columns: int, index: np.ndarray, column_dim: str) -> None:
        self.samples, self.columns, self.index, self.column_dim = samples, columns, index, column_dim


def _pairs_table(maps: xr.Dataset) -> _Table:
    layout = layout_of(maps)
    column_dim = "target" if layout == "dense" else "slot"
    n, t = maps.sizes["sample"], maps.sizes[column_dim]
    index = np.asarray(maps["target_index"].values)
    index = np.broadcast_to(index, (n, t)) if index.ndim == 1 else index
    return _Table(n, t, index.astype(np.int64), column_dim)


def _inputs(inputs: Any, maps: xr.Dataset, *, required: bool) -> Tensor | None:
    if inputs is None:
        if INPUT in maps:
            return torch.from_numpy(np.asarray(maps[INPUT].values))
        if required:
            raise InvalidInputError(
                "these metrics call the model and need the inputs: pass them, or explain with store_inputs=True."
            )
        return None
    if isinstance(inputs, (Tensor, np.ndarray)):
        x = torch.as_tensor(inputs).detach()
    elif hasattr(inputs, "__len__") and hasattr(inputs, "__getitem__"):
        x = torch.stack([torch.as_tensor(read_item(inputs[i], f"inputs item {i}").image) for i in range(len(inputs))])
    else:
        raise InvalidInputError(
            f"inputs must be a tensor (N, C, H, W), a map-style data set or None, got {type(inputs).__name__}."
        )
    n = maps.sizes["sample"]
    if x.dim() != 4 or x.shape[0] != n:
        raise InvalidInputError(f"inputs of shape {tuple(x.shape)} do not match the maps' {n} samples (N, C, H, W).")
    return x


def _masks(masks: Any, maps: xr.Dataset, table: _Table) -> Tensor:
    """Masks as (N, T, H, W) booleans aligned with the maps' columns."""
    h, w = maps.sizes["y"], maps.sizes["x"]
    if masks is None:
        raise InvalidInputError("localisation metrics need masks: (N, 1, H, W), (N, T, H, W) or a DataArray.")
    if isinstance(masks, xr.DataArray):
        aligned = masks.sel(sample=maps["sample"].values)
        if "target" in aligned.dims and table.column_dim == "target":
            aligned = aligned.sel(target=maps["target"].values)
        elif "target" in aligned.dims:  # slot layout: pick each slot's target
            names = np.asarray(maps["target"].values)
            aligned = xr.concat(
                [aligned.isel(sample=i).sel(target=names[i]) for i in range(table.samples)], dim="sample"
            )
        values = torch.as_tensor(np.asarray(aligned.transpose("sample", ..., "y", "x").values))
        values = values if values.dim() == 4 else values[:, None]
    else:
        values = torch.as_tensor(masks.detach().cpu().numpy() if isinstance(masks, Tensor) else np.asarray(masks))
    if (
        values.dim() != 4
        or values.shape[0] != table.samples
        or values.shape[2:] != (h, w)
        or values.shape[1]
        not in (
            1,
            table.columns,
        )
    ):
        raise InvalidInputError(
            f"masks of shape {tuple(values.shape)} do not fit the maps: give (N, 1, H, W) or (N, T, H, W) with "
            f"N = {table.samples}, T = {table.columns}, H, W = {h}, {w}."
        )
    return values.to(torch.bool).expand(-1, table.columns, -1, -1)


def _pairs(
    maps: xr.Dataset, method: str, table: _Table, masks: Tensor | None, overrides: Mapping[str, Any] | None
) -> tuple[Pairs, np.ndarray]:
    """The method's pairs with a map, and the column of each."""
    values = np.asarray(maps[method].values)
    have = ~np.isnan(values[:, :, 0, 0, 0]) & (table.index != UNUSED)
    sample, column = np.nonzero(have)
    delta = None
    if f"{method}_delta" in maps:
        delta = torch.from_numpy(np.asarray(maps[f"{method}_delta"].values)[sample, column])
    params = dict(overrides[method]) if overrides and method in overrides else _stored_params(maps, method)
    pairs = Pairs(
        maps=torch.from_numpy(values[sample, column]),
        sample=torch.from_numpy(sample),
        target=torch.from_numpy(table.index[sample, column]),
        method=method,
        params=params,
        masks=masks[torch.from_numpy(sample), torch.from_numpy(column)] if masks is not None else None,
        delta=delta,
    )
    return pairs, column


def _stored_params(maps: xr.Dataset, method: str) -> dict[str, Any]:
    params = json.loads(maps[method].attrs.get("params", "{}"))
    return {k: v for k, v in params.items() if v is not None}


def _layer_reason(maps: xr.Dataset, method: str, layer: str) -> str:
    """Why the metrics skip ``method``'s maps of ``layer``."""
    shape = tuple(maps[method].shape[2:])
    return (
        f"maps of layer {layer!r} ({' x '.join(map(str, shape))} per pair), not of the input: metrics score maps "
        "of the input's shape"
    )


def _why_not(metric: Metric, pairs: Pairs) -> str | None:
    if not len(pairs.sample):
        return "no maps"
    return metric.applies_to(pairs)


def _context(
    model: nn.Module | None,
    x: Tensor | None,
    maps: xr.Dataset,
    method: str,
    pairs: Pairs,
    budget: Budget,
    passes: Passes,
    task: str,
) -> Context:
    ids = [str(i) for i in np.asarray(maps["sample"].values).tolist()]
    explained = stored_output(maps.attrs)  # maps made again explain what the stored ones explain

    def forward(total: int, images, name: str) -> Tensor:
        assert model is not None and x is not None
        out: list[Tensor] = []
        bar = progress_bar(passes.progress, planned_images=total, total=total, desc=f"{name} ({method})",
                           unit="image")  # fmt: skip

        def consume(logits: Tensor, start: int, count: int) -> None:
            out.append(check_outputs(logits, count))
            bar.update(count)

        forward_passes(model, total, images, owner=model, name=f"metric:{name}", example=x[:1], budget=budget,
                       consume=consume)  # fmt: skip
        bar.close()
        return torch.cat(out)

    # The pairs as the engine takes them: one row per sample with a pair, a column per pair of it.
    rows, row_of = torch.unique(pairs.sample, return_inverse=True)
    column_of = torch.zeros_like(row_of)
    for k in range(1, len(row_of)):
        column_of[k] = column_of[k - 1] + 1 if row_of[k] == row_of[k - 1] else 0
    width = int(column_of.max()) + 1 if len(column_of) else 1
    index = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    index[row_of, column_of] = pairs.target
    mask[row_of, column_of] = True

    def remake(private: nn.Module, sample: Tensor, target: Tensor, inputs: Tensor | None = None) -> Tensor:
        """The method's maps of ``private`` (a private copy, in eval mode) for the pairs, in their order; or, given
        ``inputs`` (len(sample), C, H, W), of each of those images for its ``target``, keyed as its ``sample``."""
        assert x is not None
        private.to(x.device)
        if inputs is not None:
            maps = method_maps(
                scored_model(private, explained), method, pairs.params, inputs.to(x.device, x.dtype),
                target[:, None].to(torch.long), torch.ones((len(sample), 1), dtype=torch.bool),
                [ids[int(s)] for s in sample], budget=budget, positions=sample, call_inputs=x,
            )  # fmt: skip
            return maps[:, 0].detach().cpu()
        assert torch.equal(sample, pairs.sample) and torch.equal(target, pairs.target)
        maps = method_maps(
            scored_model(private, explained), method, pairs.params, x[rows.to(x.device)], index, mask,
            [ids[int(r)] for r in rows], budget=budget, positions=rows, call_inputs=x,
        )  # fmt: skip
        return maps[row_of.to(maps.device), column_of.to(maps.device)].detach().cpu()

    keys = torch.tensor([sample_key(i) for i in ids], dtype=torch.int64)
    return Context(inputs=x, model=model, forward=forward, explain=remake, task=task, progress=passes.progress,
                   keys=keys, output=explained)  # fmt: skip


def _collect(
    results: dict[str, xr.Variable],
    curve_coords: dict[str, Sequence[Any]],
    name: str,
    score: Score,
    table: _Table,
    where: tuple[np.ndarray, np.ndarray],
    entry: registry.Entry,
    metric: Metric,
    method: str,
) -> None:
    info = plugin_info(entry.provider)
    attrs = {
        "metric": entry.id, "method": method, "params": to_json(metric.params()),
        "higher_is_better": int(metric.higher_is_better), "provider": entry.provider,
        "provider_version": info.version or "unknown",
    }  # fmt: skip
    for suffix, value in {"": score.value, **score.extra}.items():
        results[name + (f"_{suffix}" if suffix else "")] = _spread(value, table, where, curve_coords, attrs)


def _spread(
    value: Tensor | Curve,
    table: _Table,
    where: tuple[np.ndarray, np.ndarray],
    curve_coords: dict[str, Sequence[Any]],
    attrs: dict[str, Any],
) -> xr.Variable:
    """Per-pair values back onto the maps' (sample, column) grid, NaN where a pair has no map."""
    dims: tuple[str, ...] = ("sample", table.column_dim)
    values = value.values if isinstance(value, Curve) else value
    values = values.detach().to(torch.float64).cpu().numpy()
    if isinstance(value, Curve):
        known = curve_coords.get(value.dim)
        if known is not None and [str(v) for v in known] != [str(v) for v in value.coords]:
            raise InvalidParameterError(
                f"two metrics use the curve axis {value.dim!r} with different points; evaluate them in separate calls."
            )
        curve_coords[value.dim] = list(value.coords)
        dims = (*dims, value.dim)
    grid = np.full((table.samples, table.columns, *values.shape[1:]), np.nan)
    grid[where] = values
    return xr.Variable(dims, grid, attrs=attrs)
