"""``profile``: stream a data set through a model and accumulate global profiles (NAPs, dead maps)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn
from tqdm import tqdm

from . import registry
from .errors import InvalidInputError, InvalidParameterError
from .layers import INPUT, Layer, LayersArg, resolve_layers
from .preflight import check_inputs, eval_mode
from .profilers.base import GlobalProfiler
from .provenance import model_fingerprint, to_json, versions
from .results import save_maps

GroupsArg = Tensor | np.ndarray | Sequence[int] | Callable[[Tensor, Any], Tensor] | None


def resolve_profilers(profilers: str | Sequence[str] | Mapping[str, Mapping[str, Any] | None]) -> list[GlobalProfiler]:
    if isinstance(profilers, str):
        profilers = [profilers]
    pairs = list(profilers.items()) if isinstance(profilers, Mapping) else [(p, None) for p in profilers]
    if not pairs:
        raise InvalidParameterError("profilers is empty; use e.g. ['naps', 'dead_feature_maps'].")
    return [registry.profilers.get(pid).create(params) for pid, params in pairs]


def _membership(labels: Any, num_groups: int | None, where: str) -> Tensor:
    """Turn class indices (N,) or a membership matrix (N, G) into a bool (N, G) tensor."""
    t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
    if t.dim() == 2:
        if num_groups is not None and t.shape[1] != num_groups:
            raise InvalidInputError(f"{where}: membership has {t.shape[1]} groups, expected {num_groups}.")
        return t.to(torch.bool)
    if t.dim() == 1 and not t.is_floating_point():
        if num_groups is None:
            raise InvalidInputError(f"{where}: class indices need group_names=[...] to know how many groups exist.")
        if len(t) and (t.min() < 0 or t.max() >= num_groups):
            raise InvalidInputError(f"{where}: class index out of range 0..{num_groups - 1}.")
        return torch.nn.functional.one_hot(t.long(), num_groups).to(torch.bool)
    raise InvalidInputError(
        f"{where}: groups must be class indices (N,) or a membership matrix (N, G), got shape {tuple(t.shape)}."
    )


def _batches(data: Any, groups: GroupsArg, batch_size: int) -> Iterable[tuple[Tensor, Any]]:
    """Yield (images, labels-or-None) from a tensor, or from an iterable of tensors, pairs or dicts."""
    if isinstance(data, Tensor):
        labels = groups if groups is not None and not callable(groups) else None
        if labels is not None and len(labels) != len(data):
            raise InvalidInputError(f"groups has {len(labels)} entries for {len(data)} samples.")
        for start in range(0, len(data), batch_size):
            yield data[start : start + batch_size], None if labels is None else labels[start : start + batch_size]
        return
    for batch in data:
        if isinstance(batch, Tensor):
            yield batch, None
        elif isinstance(batch, Mapping):
            image = batch.get("image", batch.get("images"))
            yield image, batch.get("groups", batch.get("label", batch.get("labels")))
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
            yield batch[0], batch[1]
        else:
            raise InvalidInputError(
                "each batch must be a tensor, (images, labels) or a dict with 'image' and 'label'/'groups'; "
                f"got {type(batch).__name__}."
            )


def _size(data: Any) -> int | None:
    try:
        return len(data) if not isinstance(data, Tensor) else None
    except TypeError:
        return None


def profile(
    model: nn.Module,
    data: Any,
    *,
    layers: LayersArg,
    groups: GroupsArg = None,
    group_names: Sequence[str] | None = None,
    profilers: str | Sequence[str] | Mapping[str, Mapping[str, Any] | None] = ("naps", "dead_feature_maps"),
    batch_size: int = 32,
    store: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> xr.Dataset:
    """Stream ``data`` through ``model`` and return global profiles of ``layers``.

    ``data`` is an (N, C, H, W) tensor or an iterable of batches (tensors, ``(images, labels)``
    pairs, or dicts with ``image`` and ``label``/``groups``). ``groups`` gives each sample's groups:
    class indices (N,) for exclusive classes, a bool membership matrix (N, G) for multilabel groups
    (a sample may belong to several), or a callable ``(images, labels) -> (n, G)``; by default the
    labels in the batches are used. ``layers`` are module names, ``{label: name or (name,
    transform)}`` or a predicate; ``"input"`` profiles the input itself. Memory does not grow with
    the data set: profilers keep running sums per group.
    """
    instances = resolve_profilers(profilers)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be a positive int, got {batch_size!r}.")
    taps = resolve_layers(model, layers)
    names = list(group_names) if group_names is not None else None
    if isinstance(data, Tensor) and names is None and groups is not None and not callable(groups):
        g = torch.as_tensor(np.asarray(groups) if not isinstance(groups, Tensor) else groups)
        names = [str(i) for i in range(g.shape[1] if g.dim() == 2 else int(g.max()) + 1)]
    if names is None:
        raise InvalidParameterError("pass group_names=[...] so profiles can be labelled by group.")
    for p in instances:
        p.bind([t.label for t in taps], names)
    captured: dict[str, Tensor] = {}
    n_samples = 0
    with eval_mode(model), torch.no_grad():
        handles = [_tap(model, tap, captured) for tap in taps if tap.module != INPUT]
        try:
            bar = tqdm(total=_size(data), desc="profile", unit="batch", disable=not progress)
            for images, labels in _batches(data, groups, batch_size):
                images = check_inputs(model, images)
                membership = groups(images, labels) if callable(groups) else labels
                if membership is None:
                    raise InvalidInputError("no groups for this batch: pass groups=... or batches with labels.")
                membership = _membership(membership, len(names), "groups")
                if len(membership) != len(images):
                    raise InvalidInputError(f"groups cover {len(membership)} samples of a batch of {len(images)}.")
                captured.clear()
                model(images)
                for tap in taps:
                    if tap.module == INPUT:
                        captured[tap.label] = tap.transform(images) if tap.transform else images
                    elif tap.label not in captured:
                        raise InvalidParameterError(f"module {tap.module!r} was not called in the forward pass.")
                for p in instances:
                    p.update(captured, membership)
                n_samples += len(images)
                bar.update(1)
            bar.close()
        finally:
            for h in handles:
                h.remove()
    if n_samples == 0:
        raise InvalidInputError("data held no samples.")
    ds = xr.merge([p.result() for p in instances], compat="no_conflicts", combine_attrs="drop_conflicts")
    ds.attrs.update(
        {
            **versions(),
            "model": f"{type(model).__module__}.{type(model).__qualname__}",
            "model_fingerprint": model_fingerprint(model),
            "samples": n_samples,
            "layers": to_json({t.label: t.module for t in taps}),
            "profilers": to_json({p.id: p.params() for p in instances}),
        }
    )
    if store is not None:
        save_maps(ds, store)
    return ds


def _tap(model: nn.Module, tap: Layer, captured: dict[str, Tensor]):
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            raise InvalidParameterError(f"module {tap.module!r} returns {type(output).__name__}, not a tensor.")
        captured[tap.label] = tap.transform(output) if tap.transform else output

    return model.get_submodule(tap.module).register_forward_hook(hook)
