"""``profile``: stream a data set through a model and accumulate global profiles (NAPs, dead maps)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn
from tqdm import tqdm

from ..core.checks import batch_size_arg, to_json
from ..core.errors import InvalidInputError, InvalidParameterError, warn
from ..core.provenance import result_attrs
from ..engine.memory import is_out_of_memory, parse_budget
from ..engine.runner import plan_forward, run_passes
from ..plugins import registry
from ..profilers.base import INPUT, GlobalProfiler
from ..storage.zarr_io import check_writable, save_maps
from .layers import Layer, LayersArg, resolve_layers
from .preflight import check_device, check_inputs, eval_mode, on_device

GroupsArg = Tensor | np.ndarray | Sequence[int] | Callable[[Tensor, Any], Tensor] | None


def resolve_profilers(
    profilers: str | Sequence[str] | Mapping[str, Mapping[str, Any] | None],
    *,
    layers: Mapping[str, str],
    groups: Sequence[str],
) -> list[GlobalProfiler]:
    """Create the profilers named by ``profilers`` (ids, or ``{id: params}``) for these layers and groups."""
    return [p for _, p in registry.resolve(registry.profilers, profilers, layers=dict(layers), groups=list(groups))]


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


def _batches(data: Any, groups: GroupsArg) -> Iterable[tuple[Tensor, Any]]:
    """Yield (images, labels-or-None) from a tensor (one batch: the engine splits it into passes),
    or from an iterable of tensors, pairs or dicts."""
    if isinstance(data, Tensor):
        labels = groups if groups is not None and not callable(groups) else None
        if labels is not None and len(labels) != len(data):
            raise InvalidInputError(f"groups has {len(labels)} entries for {len(data)} samples.")
        yield data, labels
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
    batch_size: int | str = "auto",
    memory_budget: int | str | None = None,
    store: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> xr.Dataset:
    """Stream ``data`` through ``model`` and return global profiles of ``layers``.

    ``data`` is an (N, C, H, W) tensor or an iterable of batches (tensors, ``(images, labels)``
    pairs, or dicts with ``image`` and ``label``/``groups``). ``groups`` gives each sample's groups:
    class indices (N,) for exclusive classes, a bool membership matrix (N, G) for multilabel groups
    (a sample may belong to several), or a callable ``(images, labels) -> (n, G)``; by default the
    labels in the batches are used. ``layers`` are module names, ``{label: name or (name,
    transform)}`` or a predicate; ``"input"`` profiles the input itself. ``batch_size`` and
    ``memory_budget`` mean what they mean for :func:`explain`: the engine splits the data (and
    any batch a loader yields) into passes. Memory does not grow with the data set: profilers keep
    running sums per group. ``device`` runs the model there for the call (batches are moved to it)
    and puts it back where it was afterwards, as in :func:`explain`.
    """
    fixed = batch_size_arg(batch_size)
    if store is not None:
        check_writable(store, overwrite=overwrite)
    chosen = check_device(device)
    taps = resolve_layers(model, layers)
    names = list(group_names) if group_names is not None else None
    if isinstance(data, Tensor) and names is None and groups is not None and not callable(groups):
        g = torch.as_tensor(np.asarray(groups) if not isinstance(groups, Tensor) else groups)
        names = [str(i) for i in range(g.shape[1] if g.dim() == 2 else int(g.max()) + 1)]
    if names is None:
        raise InvalidParameterError("pass group_names=[...] so profiles can be labelled by group.")
    as_text = [str(name) for name in names]
    if len(set(as_text)) != len(as_text):
        twice = sorted({t for t in as_text if as_text.count(t) > 1})
        raise InvalidParameterError(f"group_names must be unique (also as text); these repeat: {twice}.")
    instances = resolve_profilers(profilers, layers={t.label: t.module for t in taps}, groups=names)
    captured: dict[str, Tensor] = {}
    armed = [True]  # the taps record only the passes of the data, not the memory probe
    left_out: dict[str, list[int]] = {}
    n_samples = 0
    with eval_mode(model), on_device(model, chosen), torch.no_grad():
        handles = [_tap(model, tap, captured, armed) for tap in taps if tap.module != INPUT]
        try:
            bar = tqdm(total=len(data) if isinstance(data, Tensor) else None, desc="profile", unit="sample",
                       disable=not progress)  # fmt: skip
            budget = None
            for images, labels in _batches(data, groups):
                if chosen is not None and isinstance(images, Tensor):
                    images = images.to(chosen)
                images = check_inputs(model, images)
                membership = groups(images, labels) if callable(groups) else labels
                if membership is None:
                    raise InvalidInputError("no groups for this batch: pass groups=... or batches with labels.")
                membership = _membership(membership, len(names), "groups")
                if len(membership) != len(images):
                    raise InvalidInputError(f"groups cover {len(membership)} samples of a batch of {len(images)}.")
                budget = parse_budget(memory_budget, images.device) if budget is None else budget
                # Measuring the pass size runs the model once: the taps must not record that pass.
                armed[0] = False
                sizer = plan_forward(
                    owner=model, name="profile", model=model, example=images, fixed_images=fixed, budget=budget,
                    total=len(images),
                )  # fmt: skip
                armed[0] = True

                def do_pass(start: int, size: int, images=images, membership=membership, seen=n_samples) -> None:
                    chunk = images[start : start + size]
                    captured.clear()
                    model(chunk)
                    for tap in taps:
                        if tap.module == INPUT:
                            captured[tap.label] = tap.transform(chunk) if tap.transform else chunk
                        elif tap.label not in captured:
                            raise InvalidParameterError(f"module {tap.module!r} was not called in the forward pass.")
                    members = membership[start : start + size]
                    finite = _finite_samples(captured, seen + start, left_out)
                    if finite is not None:  # profiles of the finite samples stay exact
                        chosen = {k: v[finite.to(v.device)] for k, v in captured.items()}
                        captured.clear()
                        captured.update(chosen)
                        members = members[finite.to(members.device)]
                    if len(members):
                        try:
                            for p in instances:
                                p.update(captured, members)
                        except Exception as exc:
                            if not is_out_of_memory(exc):
                                raise
                            # Some profilers may hold this pass already: a retry would count it twice.
                            raise RuntimeError(
                                "profile(): out of memory while adding a pass to the profiles; pass a smaller "
                                "batch_size or memory_budget."
                            ) from exc
                    bar.update(len(chunk))

                run_passes(len(images), sizer, do_pass, images.device)
                n_samples += len(images)
            bar.close()
        finally:
            for h in handles:
                h.remove()
    _warn_left_out(left_out)
    if n_samples == 0:
        raise InvalidInputError("data held no samples.")
    ds = xr.merge([p.result() for p in instances], compat="no_conflicts", combine_attrs="drop_conflicts")
    ds.attrs.update(
        result_attrs(
            model,
            samples=n_samples,
            layers=to_json({t.label: t.module for t in taps}),
            # JSON attrs sort their keys; pictures and reports show layers in the order data flows through them.
            layer_order=json.dumps(_network_order(model, taps)),
            profilers=to_json({p.id: p.params() for p in instances}),
            batch_size=fixed if fixed is not None else "auto",
            memory_budget=budget,
        )
    )
    if store is not None:
        save_maps(ds, store, overwrite=overwrite)
    return ds


def _finite_samples(captured: dict[str, Tensor], offset: int, left_out: dict[str, list[int]]) -> Tensor | None:
    """None when every activation is finite; else note the others in ``left_out`` and return the finite mask."""
    bad = {label: ~torch.isfinite(act.flatten(1)).all(1).cpu() for label, act in captured.items()}
    if not any(b.any() for b in bad.values()):
        return None
    for label, b in bad.items():
        left_out.setdefault(label, []).extend((b.nonzero().flatten() + offset).tolist())
    return ~torch.stack(list(bad.values())).any(0)


def _warn_left_out(left_out: dict[str, list[int]]) -> None:
    for label, samples in left_out.items():
        if samples:
            warn(
                f"layer {label!r} produced NaN or Inf activations for samples {samples[:10]}"
                f"{' and more' if len(samples) > 10 else ''}; those samples are left out of every profile.",
            )


def _tap(model: nn.Module, tap: Layer, captured: dict[str, Tensor], armed: list[bool]):
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if not armed[0]:
            return
        if not isinstance(output, Tensor):
            raise InvalidParameterError(f"module {tap.module!r} returns {type(output).__name__}, not a tensor.")
        if tap.label in captured:
            raise InvalidParameterError(
                f"module {tap.module!r} is called more than once in one forward pass (a shared module, such as "
                "the relu of a torchvision ResNet block), so its output is ambiguous. Tap the module before each "
                "call instead, e.g. layers={'bn1': ('layer1.0.bn1', 'relu')}."
            )
        value = tap.transform(output) if tap.transform else output
        # Copy now: a later in-place op (the ReLU(inplace=True) after a BatchNorm) would rewrite the
        # tensor before the profilers read it at the end of the pass.
        if value.untyped_storage().data_ptr() == output.untyped_storage().data_ptr():
            value = value.clone()
        captured[tap.label] = value

    return model.get_submodule(tap.module).register_forward_hook(hook)


def _network_order(model: nn.Module, taps: Sequence[Layer]) -> list[str]:
    """The taps' labels in the order of their modules in the model (the input first), ties as given."""
    position = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return [
        t.label for t in sorted(taps, key=lambda t: -1 if t.module == INPUT else position.get(t.module, len(position)))
    ]
