"""``explain``: run local attribution methods on a batch of inputs and label the results."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn
from tqdm import tqdm

from . import registry
from .attributors.base import Attributor
from .errors import InvalidInputError, InvalidParameterError, PluginError, XaiBenchWarning
from .memory import image_cost, images_per_pass, is_out_of_memory, parse_budget
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
    if batch_size == "auto":
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be 'auto' or a positive int, got {batch_size!r}.")
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
    batch_size: int | str = "auto",
    memory_budget: int | str | None = None,
    sample_ids: Sequence[Any] | None = None,
    store: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> xr.Dataset:
    """Explain ``model``'s outputs for ``inputs`` (N, C, H, W) with each of ``methods``.

    ``targets`` is an int, a list of ints or label names, ``"all"``, or ``"predicted"`` (the arg-max
    for ``task="multiclass"``; every label whose sigmoid exceeds ``threshold`` for ``"multilabel"``,
    other pairs left NaN). ``batch_size`` caps the images in one forward pass; ``"auto"`` sizes it
    per method from a measurement of the model within ``memory_budget`` (bytes or a string such as
    ``"4GiB"``; default half the free GPU memory, or of the available RAM on CPU), halving it if an
    allocation still fails. Results do not depend on it. Returns a Dataset with one
    (sample, target, channel, y, x) variable per method, the target logits as ``score``,
    ``<method>_delta`` where the method has a completeness delta, and provenance in attrs.
    With ``store``, the Dataset is also written there as zarr.
    """
    specs = resolve_methods(methods)
    fixed = _check_batch_size(batch_size)
    with eval_mode(model):
        inputs = check_inputs(model, inputs).detach()
        budget = parse_budget(memory_budget, inputs.device)
        ids = _check_sample_ids(sample_ids, inputs.shape[0])
        # One image checks that the model takes these inputs and returns logits; the scores of
        # all images come from the methods' own forward passes unless targets depend on them.
        num_classes = probe(model, inputs)
        names = check_labels(labels, num_classes)
        n = inputs.shape[0]
        scores = _Scores(n, num_classes, inputs.device, inputs.dtype)
        # Forward passes without autograd (scores the methods did not provide) use this many images.
        scan = fixed or images_per_pass(image_cost(model, inputs), budget, backward=False, device=inputs.device)
        if isinstance(targets, str) and targets == "predicted":
            scores.offer(torch.arange(n), forward_scores(model, inputs, scan))
        resolved = resolve_targets(targets, scores.values, labels=names, task=task, threshold=threshold)
        target_index = torch.tensor(resolved.indices, device=inputs.device)
        dtype = np.float64 if inputs.dtype == torch.float64 else np.float32
        maps: dict[str, np.ndarray] = {}
        deltas: dict[str, np.ndarray] = {}
        method_attrs: dict[str, dict[str, Any]] = {}
        samples = resolved.mask.any(1).nonzero().flatten()
        bar = tqdm(total=len(specs) * len(samples), desc="explain", unit="sample", disable=not progress)
        for spec in specs:
            bar.set_postfix_str(spec.entry.id)
            prepared = spec.attributor.prepare(model, inputs[:1])
            run = MethodRun(spec, prepared.model, inputs, fixed, budget)
            out = np.full((n, len(target_index), *inputs.shape[1:]), np.nan, dtype=dtype)
            delta_out = np.full(resolved.mask.shape, np.nan, dtype=dtype) if spec.attributor.has_delta else None
            for chunk, result in run.chunks(samples, target_index, resolved.mask):
                out[chunk.numpy()] = result.maps.detach().cpu().numpy()
                if delta_out is not None and result.delta is not None:
                    delta_out[chunk.numpy()] = result.delta.detach().cpu().numpy()
                scores.offer(chunk, result.outputs)
                bar.update(len(chunk))
            maps[spec.entry.id] = out
            if delta_out is not None:
                deltas[spec.entry.id] = delta_out
            method_attrs[spec.entry.id] = {**_method_attrs(spec, prepared.surgery), "images_per_pass": run.settled}
        bar.close()
        all_scores = scores.complete(model, inputs, scan)
        fingerprint = model_fingerprint(model)
    picked = all_scores.gather(1, target_index.view(1, -1).expand(n, -1)).detach().cpu().numpy().astype(dtype)
    attrs = {
        **versions(),
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_fingerprint": fingerprint,
        "task": task,
        "threshold": float(threshold),
        "targets": targets if isinstance(targets, str) else to_json(resolved.indices),
        "batch_size": fixed if fixed is not None else "auto",
        "memory_budget": budget,
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


class MethodRun:
    """Feeds one method chunks of samples sized to the budget, halving them when memory runs out."""

    def __init__(self, spec: MethodSpec, model: nn.Module, inputs: Tensor, fixed: int | None, budget: int) -> None:
        self.spec = spec
        self.model = model
        self.inputs = inputs
        cost = spec.attributor.cost(tuple(inputs.shape[1:]))
        self.expansion = max(1, math.ceil(cost.forward))
        self.unit = max(1, cost.unit)
        if fixed is not None:
            self.per_pass = fixed
        else:
            measured = image_cost(model, inputs, images=self.unit)
            self.per_pass = images_per_pass(measured, budget, backward=cost.backward > 0, device=inputs.device)
            if self.per_pass < self.unit:
                need = self.unit * (
                    (measured.saved if cost.backward > 0 else measured.forward_peak) + 2 * measured.input
                )
                warnings.warn(
                    f"{spec.entry.id}: its smallest pass ({self.unit} images, about {need / 2**30:.1f} GiB) is "
                    f"larger than memory_budget ({budget / 2**30:.1f} GiB); running it anyway. Raise the budget "
                    "or use smaller images to stay within it.",
                    XaiBenchWarning,
                    stacklevel=4,
                )
        self.per_pass = max(self.per_pass, self.unit)
        self.settled = self.per_pass

    def chunks(self, samples: Tensor, target_index: Tensor, mask: Tensor):
        """Yield (sample indices, Attribution over all targets) until every sample is done."""
        done = 0
        device = self.inputs.device
        while done < len(samples):
            # Methods that expand a sample past one pass (steps, windows) split it themselves.
            take = max(1, self.per_pass // self.expansion)
            chunk = samples[done : done + take]
            x = self.inputs[chunk.to(device)]
            targets = target_index.view(1, -1).expand(len(chunk), -1)
            try:
                result = self.spec.attributor.attribute_many(
                    self.model, x, targets, mask[chunk].to(device), batch_size=self.per_pass
                )
            except Exception as exc:
                if not is_out_of_memory(exc) or self.per_pass <= self.unit:
                    raise
                # Finished chunks are kept; this one is retried with half the images per pass.
                self.per_pass = max(self.unit, self.per_pass // 2)
                self.settled = self.per_pass
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            expected = (len(chunk), len(target_index), *x.shape[1:])
            if result.maps.shape != expected:
                raise PluginError(
                    f"method {self.spec.entry.id!r} returned maps of shape {tuple(result.maps.shape)} "
                    f"from attribute_many, expected {expected}."
                )
            done += len(chunk)
            yield chunk, result


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
