"""``profile``: stream a data set through a model and accumulate global profiles (NAPs, dead maps)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from ..core.checks import repeated_as_text, to_json
from ..core.errors import InvalidInputError, InvalidParameterError, refuse_unknown, renamed, warn
from ..core.provenance import result_attrs
from ..engine.entry import Budget, forward_passes
from ..engine.memory import is_out_of_memory
from ..engine.progress import progress_bar
from ..plugins import registry
from ..profilers.base import INPUT, GlobalProfiler
from ..storage.zarr_io import check_writable, save_maps
from .items import read_item
from .layers import Layer, LayersArg, resolve_layers
from .passes import OLD_PASS_KEYWORDS, Passes, passes_from
from .preflight import check_inputs, eval_mode, on_device

GroupsArg = Tensor | np.ndarray | Sequence[int] | Callable[[Tensor, Any], Tensor] | None


def list_profilers() -> dict[str, dict[str, Any]]:
    """List available profiler ids with their provider and parameters."""
    return {profiler_id: entry.describe(()) for profiler_id, entry in sorted(registry.profilers.entries().items())}


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
    or from an iterable of batches, each an item as :mod:`xai_bench.api.items` reads them."""
    if isinstance(data, Tensor):
        labels = groups if groups is not None and not callable(groups) else None
        if labels is not None and len(labels) != len(data):
            raise InvalidInputError(f"groups has {len(labels)} entries for {len(data)} samples.")
        yield data, labels
        return
    for k, batch in enumerate(data):
        item = read_item(batch, f"batch {k}")
        yield item.image, item.label


def _size(data: Any) -> int:
    """Samples in ``data`` where it says (a tensor, a loader of a sized data set), else 0."""
    if isinstance(data, Tensor):
        return len(data)
    inner = getattr(data, "dataset", None)
    try:
        return len(inner) if inner is not None else 0
    except TypeError:
        return 0


#: profile's parameters besides the model and the data
PROFILE_PARAMETERS = ["layers", "groups", "group_names", "profilers", "passes", "store", "overwrite"]


def profile(
    model: nn.Module,
    inputs: Any = None,
    *,
    layers: LayersArg,
    groups: GroupsArg = None,
    group_names: Sequence[str] | None = None,
    profilers: str | Sequence[str] | Mapping[str, Mapping[str, Any] | None] = ("naps", "dead_feature_maps"),
    passes: Passes | int | str | dict | None = None,
    store: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    **deprecated_keywords: Any,
) -> xr.Dataset:
    """Stream ``inputs`` through ``model`` and return global profiles of ``layers``.

    ``inputs`` is an (N, C, H, W) tensor or an iterable of batches, each a tensor, an ``(images,
    labels)`` pair or a dict with ``image`` and ``groups`` (or ``label``). ``groups`` gives each
    sample's groups: class indices (N,) for exclusive classes, a bool membership matrix (N, G) for
    multilabel groups (a sample may belong to several), or a callable ``(images, labels) -> (n,
    G)``; by default the labels in the batches are used. ``layers`` are module names, ``{label: name
    or (name, transform)}`` or a predicate; ``"input"`` profiles the input itself. ``passes`` means
    what it means for :func:`explain`: the engine splits the data (and any batch a loader yields)
    into forward-only passes, and ``device`` runs the model there for the call. Memory does not grow
    with the data set: profilers keep running sums per group.

    0.2's ``data=`` and pass keywords (``batch_size``, ``memory_budget``, ``device``, ``progress``)
    still work in 0.3, with a ``DeprecationWarning``.
    """
    inputs = renamed(deprecated_keywords, "profile", "data", "inputs", inputs)
    passes = passes_from(passes, deprecated_keywords, "profile")
    refuse_unknown(deprecated_keywords, "profile", [*PROFILE_PARAMETERS, *OLD_PASS_KEYWORDS])
    if inputs is None:
        raise InvalidInputError("profile() needs the data to stream: profile(model, inputs, layers=...).")
    if store is not None:
        check_writable(store, overwrite=overwrite)
    taps = resolve_layers(model, layers)
    names = _group_names(inputs, groups, group_names)
    instances = resolve_profilers(profilers, layers={t.label: t.module for t in taps}, groups=names)
    with eval_mode(model), on_device(model, passes.chosen_device()), torch.no_grad():
        n_samples, budget = _stream(model, inputs, groups, names, taps, instances, passes)
    ds = xr.merge([p.result() for p in instances], compat="no_conflicts", combine_attrs="drop_conflicts")
    ds.attrs.update(
        result_attrs(
            model,
            samples=n_samples,
            layers=to_json({t.label: t.module for t in taps}),
            # JSON attrs sort their keys; pictures and reports show layers in the order data flows through them.
            layer_order=json.dumps(_network_order(model, taps)),
            profilers=to_json({p.id: p.params() for p in instances}),
            batch_size=passes.fixed_images if passes.fixed_images is not None else "auto",
            memory_budget=budget,
        )
    )
    if store is not None:
        save_maps(ds, store, overwrite=overwrite)
    return ds


def _group_names(data: Any, groups: GroupsArg, group_names: Sequence[str] | None) -> list[str]:
    names = list(group_names) if group_names is not None else None
    if isinstance(data, Tensor) and names is None and groups is not None and not callable(groups):
        g = torch.as_tensor(np.asarray(groups) if not isinstance(groups, Tensor) else groups)
        names = [str(i) for i in range(g.shape[1] if g.dim() == 2 else int(g.max()) + 1)]
    if names is None:
        raise InvalidParameterError("pass group_names=[...] so profiles can be labelled by group.")
    twice = repeated_as_text(names)
    if twice:
        raise InvalidParameterError(f"group_names must be unique (also as text); these repeat: {twice}.")
    return names


def _stream(
    model: nn.Module,
    data: Any,
    groups: GroupsArg,
    names: list[str],
    taps: list[Layer],
    instances: list[GlobalProfiler],
    passes: Passes,
) -> tuple[int, int | None]:
    """Feed every batch through the taps into the profilers; return the samples seen and the budget used."""
    captured: dict[str, Tensor] = {}
    armed = [True]  # the taps record only the passes of the data, not the memory probe
    left_out: dict[str, list[int]] = {}
    n_samples, budget = 0, None
    chosen = passes.chosen_device()

    @contextlib.contextmanager
    def disarmed() -> Iterator[None]:
        armed[0] = False
        try:
            yield
        finally:
            armed[0] = True

    handles = [_tap(model, tap, captured, armed) for tap in taps if tap.module != INPUT]
    bar = progress_bar(passes.progress, planned_images=_size(data), total=_size(data) or None, desc="profile",
                       unit="sample")  # fmt: skip
    try:
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
            budget = Budget(passes.fixed_images, passes.budget(images.device)) if budget is None else budget

            def chunk_of(start: int, count: int, images=images) -> Tensor:
                captured.clear()  # a pass retried smaller starts from nothing
                return images[start : start + count]

            def consume(_: Tensor, start: int, count: int, images=images, membership=membership, seen=n_samples):
                chunk = images[start : start + count]
                for tap in taps:
                    if tap.module == INPUT:
                        captured[tap.label] = tap.transform(chunk) if tap.transform else chunk
                    elif tap.label not in captured:
                        raise InvalidParameterError(f"module {tap.module!r} was not called in the forward pass.")
                _update(instances, captured, membership[start : start + count], seen + start, left_out)
                bar.update(count)

            forward_passes(model, len(images), chunk_of, owner=model, name="profile", example=images, budget=budget,
                           consume=consume, probing=disarmed)  # fmt: skip
            n_samples += len(images)
        bar.close()
    finally:
        for h in handles:
            h.remove()
    _warn_left_out(left_out)
    if n_samples == 0:
        raise InvalidInputError("data held no samples.")
    return n_samples, budget.bytes if budget is not None else None


def _update(instances, captured: dict[str, Tensor], members: Tensor, offset: int, left_out) -> None:
    """Add one pass's activations to every profiler, leaving out samples with non-finite activations."""
    finite = _finite_samples(captured, offset, left_out)
    if finite is not None:  # profiles of the finite samples stay exact
        chosen = {k: v[finite.to(v.device)] for k, v in captured.items()}
        captured.clear()
        captured.update(chosen)
        members = members[finite.to(members.device)]
    if not len(members):
        return
    try:
        for p in instances:
            p.update(captured, members)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        # Some profilers may hold this pass already: a retry would count it twice.
        raise RuntimeError(
            "profile(): out of memory while adding a pass to the profiles; pass a smaller "
            "batch_size or memory_budget in passes=Passes(...)."
        ) from exc


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
