"""``explain``: run local attribution methods on a batch of inputs and label the results."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn
from tqdm import tqdm

from . import registry
from .attributors.base import Attribution, Attributor
from .errors import InvalidInputError, InvalidParameterError, PluginError
from .plugins import plugin_info
from .preflight import check_inputs, eval_mode, forward_scores, probe
from .provenance import model_fingerprint, to_json, versions
from .results import build_dataset, save_maps
from .targets import Task, check_labels, resolve_targets

MethodsArg = str | Sequence[str] | Mapping[str, Mapping[str, Any] | None]


@dataclass(frozen=True)
class MethodSpec:
    entry: registry.Entry
    attributor: Attributor


def resolve_methods(methods: MethodsArg) -> list[MethodSpec]:
    """Turn ``methods`` (an id, a list of ids, or ``{id: params}``) into instantiated attributors."""
    if isinstance(methods, str):
        methods = [methods]
    if isinstance(methods, Mapping):
        pairs = list(methods.items())
    elif isinstance(methods, Sequence):
        pairs = [(m, None) for m in methods]
    else:
        raise InvalidParameterError(
            f"methods must be an id, a list of ids or a dict {{id: params}}, got {type(methods).__name__}."
        )
    if not pairs:
        raise InvalidParameterError("methods is empty; list the ids with xai_bench.methods().")
    specs = []
    seen = set()
    for method_id, params in pairs:
        entry = registry.attributors.get(method_id)
        if method_id in seen:
            raise InvalidParameterError(f"method {method_id!r} is listed twice.")
        seen.add(method_id)
        if params is not None and not isinstance(params, Mapping):
            raise InvalidParameterError(
                f"parameters of {method_id!r} must be a dict of keyword arguments, got {type(params).__name__}."
            )
        specs.append(MethodSpec(entry, entry.create(params)))
    return specs


def _check_batch_size(batch_size: object) -> int | None:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be a positive int or None, got {batch_size!r}.")
    return batch_size


def _check_sample_ids(sample_ids: Sequence[Any] | None, n: int) -> list[Any]:
    if sample_ids is None:
        return list(range(n))
    ids = list(sample_ids)
    if len(ids) != n:
        raise InvalidInputError(f"sample_ids has {len(ids)} entries for {n} inputs.")
    if len(set(ids)) != n:
        raise InvalidInputError("sample_ids must be unique.")
    return ids


def _split(method_id: str, out: object, expected: torch.Size) -> Attribution:
    if isinstance(out, Attribution):
        result = out
    elif isinstance(out, tuple) and len(out) == 2:
        result = Attribution(out[0], delta=out[1])
    else:
        result = Attribution(out)  # type: ignore[arg-type]
    if not isinstance(result.maps, Tensor) or result.maps.shape != expected:
        got = tuple(result.maps.shape) if isinstance(result.maps, Tensor) else type(result.maps).__name__
        raise PluginError(f"method {method_id!r} returned maps of shape {got}, expected {tuple(expected)}.")
    return result


class _Scores:
    """The model's logits per sample, taken from the methods' own forward passes where they have them."""

    def __init__(self, n: int, num_classes: int, device: torch.device, dtype: torch.dtype) -> None:
        self.values = torch.zeros(n, num_classes, device=device, dtype=dtype)
        self.known = torch.zeros(n, dtype=torch.bool)

    def offer(self, samples: Tensor, outputs: Tensor | None) -> None:
        if outputs is None or outputs.shape != (len(samples), self.values.shape[1]):
            return
        fresh = ~self.known[samples]
        if fresh.any():
            idx = samples[fresh]
            self.values[idx.to(self.values.device)] = outputs.detach()[fresh.to(outputs.device)].to(self.values.dtype)
            self.known[idx] = True

    def complete(self, model: nn.Module, inputs: Tensor, batch_size: int | None) -> Tensor:
        missing = (~self.known).nonzero().flatten()
        if len(missing):
            self.offer(missing, forward_scores(model, inputs[missing.to(inputs.device)], batch_size))
        return self.values


def explain(
    model: nn.Module,
    inputs: Tensor,
    *,
    methods: MethodsArg,
    targets: object = "predicted",
    labels: Sequence[str] | None = None,
    task: Task = "multiclass",
    threshold: float = 0.5,
    batch_size: int | None = None,
    sample_ids: Sequence[Any] | None = None,
    store: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> xr.Dataset:
    """Explain ``model``'s outputs for ``inputs`` (N, C, H, W) with each of ``methods``.

    ``targets`` is an int, a list of ints or label names, ``"all"``, or ``"predicted"`` (the arg-max
    for ``task="multiclass"``; every label whose sigmoid exceeds ``threshold`` for ``"multilabel"``,
    other pairs left NaN). ``batch_size`` caps the images in one forward pass; results do not depend
    on it. Returns a Dataset with one (sample, target, channel, y, x) variable per method, the
    target logits as ``score``, ``<method>_delta`` where the method has a completeness delta, and
    provenance in attrs. With ``store``, the Dataset is also written there as zarr.
    """
    specs = resolve_methods(methods)
    batch_size = _check_batch_size(batch_size)
    with eval_mode(model):
        inputs = check_inputs(model, inputs).detach()
        ids = _check_sample_ids(sample_ids, inputs.shape[0])
        # One image checks that the model takes these inputs and returns logits; the scores of
        # all images come from the methods' own forward passes unless targets depend on them.
        num_classes = probe(model, inputs)
        names = check_labels(labels, num_classes)
        n = inputs.shape[0]
        scores = _Scores(n, num_classes, inputs.device, inputs.dtype)
        if isinstance(targets, str) and targets == "predicted":
            scores.offer(torch.arange(n), forward_scores(model, inputs, batch_size))
        resolved = resolve_targets(targets, scores.values, labels=names, task=task, threshold=threshold)
        pairs = resolved.mask.nonzero()
        target_index = torch.tensor(resolved.indices, device=inputs.device)
        t = len(resolved.indices)
        dtype = np.float64 if inputs.dtype == torch.float64 else np.float32
        maps: dict[str, np.ndarray] = {}
        deltas: dict[str, np.ndarray] = {}
        method_attrs: dict[str, dict[str, Any]] = {}
        plan = [(spec, _items_per_chunk(spec.attributor, inputs, batch_size, len(pairs))) for spec in specs]
        total = sum(math.ceil(len(pairs) / step) for _, step in plan)
        bar = tqdm(total=total, desc="explain", unit="batch", disable=not progress)
        for spec, step in plan:
            method_id = spec.entry.id
            bar.set_postfix_str(method_id)
            prepared = spec.attributor.prepare(model, inputs[:1])
            out = np.full((n, t, *inputs.shape[1:]), np.nan, dtype=dtype)
            delta_out = np.full((n, t), np.nan, dtype=dtype) if spec.attributor.has_delta else None
            for start in range(0, len(pairs), step):
                chunk = pairs[start : start + step]
                s, k = chunk[:, 0], chunk[:, 1]
                x = inputs[s.to(inputs.device)]
                raw = spec.attributor.attribute(
                    prepared.model, x, target_index[k.to(inputs.device)], batch_size=batch_size
                )
                result = _split(method_id, raw, x.shape)
                out[s.numpy(), k.numpy()] = result.maps.detach().cpu().numpy()
                if delta_out is not None and result.delta is not None:
                    delta_out[s.numpy(), k.numpy()] = result.delta.detach().cpu().numpy()
                scores.offer(s, result.outputs)
                bar.update(1)
            maps[method_id] = out
            if delta_out is not None:
                deltas[method_id] = delta_out
            method_attrs[method_id] = _method_attrs(spec, prepared.surgery)
        bar.close()
        all_scores = scores.complete(model, inputs, batch_size)
        fingerprint = model_fingerprint(model)
    picked = all_scores.gather(1, target_index.view(1, -1).expand(n, -1)).detach().cpu().numpy().astype(dtype)
    attrs = {
        **versions(),
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_fingerprint": fingerprint,
        "task": task,
        "threshold": float(threshold),
        "targets": targets if isinstance(targets, str) else to_json(resolved.indices),
        "batch_size": batch_size if batch_size is not None else "none",
        "methods": to_json([spec.entry.id for spec in specs]),
    }
    ds = build_dataset(
        maps=maps,
        deltas=deltas,
        method_attrs=method_attrs,
        scores=picked,
        sample_ids=ids,
        target_coords=resolved.coords,
        target_indices=resolved.indices,
        attrs=attrs,
    )
    if store is not None:
        save_maps(ds, store)
    return ds


def _items_per_chunk(attributor: Attributor, inputs: Tensor, batch_size: int | None, n_items: int) -> int:
    if batch_size is None:
        return max(1, n_items)
    per_item = max(1, math.ceil(attributor.cost(tuple(inputs.shape[1:])).forward))
    # Methods that expand an item past the cap split it themselves (steps, windows).
    return max(1, batch_size // per_item)


def _method_attrs(spec: MethodSpec, surgery: tuple[str, ...]) -> dict[str, Any]:
    info = plugin_info(spec.entry.provider)
    cls = spec.entry.cls
    return {
        "method": spec.entry.id,
        "provider": spec.entry.provider,
        "provider_distribution": info.distribution or "unknown",
        "provider_version": info.version or "unknown",
        "params": to_json(spec.attributor.params()),
        "surgery": to_json(list(surgery)),
        "multiplies_by_inputs": int(cls.multiplies_by_inputs),
        "has_delta": int(cls.has_delta),
    }


def methods() -> dict[str, dict[str, Any]]:
    """List available method ids with their provider, capabilities and parameters."""
    listing = {}
    for method_id, entry in sorted(registry.attributors.entries().items()):
        cls = entry.cls
        listing[method_id] = {
            "provider": entry.provider,
            "needs_baseline": cls.needs_baseline,
            "needs_surgery": cls.needs_surgery,
            "multiplies_by_inputs": cls.multiplies_by_inputs,
            "has_delta": cls.has_delta,
            "parameters": {
                name: (None if p.default is p.empty else p.default) for name, p in entry.parameters().items()
            },
            "summary": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
        }
    return listing
