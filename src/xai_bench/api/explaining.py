"""``explain``: run local attribution methods on a batch of inputs and label the results."""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn
from tqdm import tqdm

from ..attributors.base import Attributor, Cost, Prepared
from ..core.checks import batch_size_arg, to_json
from ..core.errors import InvalidInputError, ModelOutputError, PluginError, SurgeryError, XaiBenchError, warn
from ..core.normalization import check_normalization
from ..core.provenance import model_fingerprint, module_state, result_attrs, sample_key
from ..engine.attribution import MethodResult, attribute_all, work_samples
from ..engine.memory import is_out_of_memory, parse_budget
from ..engine.progress import Progress, check_progress, progress_bar
from ..engine.runner import plan_forward, plan_sizer, run_passes
from ..engine.tuning import PassSizer
from ..plugins import registry
from ..plugins.manager import plugin_info
from ..storage.datasets import build_dataset
from ..storage.zarr_io import check_writable, save_maps
from ..surgery import forget as forget_rewrites
from .outputs import check_output, score_description, scored, user_model
from .preflight import batch_statistics, check_device, check_inputs, check_outputs, eval_mode, on_device, probe
from .targets import (
    Resolved,
    Task,
    check_labels,
    check_max_targets,
    check_task,
    check_threshold,
    resolve_targets,
    slot_width,
    warn_wide,
)

MethodsArg = str | Sequence[str] | Mapping[str, Mapping[str, Any] | None]


def resolve_methods(methods: MethodsArg) -> list[tuple[registry.Entry, Attributor]]:
    """Turn ``methods`` (an id, a list of ids, or ``{id: params}``) into (entry, attributor) pairs."""
    return registry.resolve(registry.attributors, methods)


def check_sample_ids(sample_ids: Sequence[Any] | None, n: int) -> list[Any]:
    """Return ids for ``n`` samples (0..n-1 by default), refusing ids that collide once stored as text."""
    if sample_ids is None:
        return list(range(n))
    ids = list(sample_ids)
    if len(ids) != n:
        raise InvalidInputError(f"sample_ids has {len(ids)} entries for {n} inputs.")
    as_text = [str(i) for i in ids]
    if len(set(as_text)) != n:
        twice = sorted({t for t in as_text if as_text.count(t) > 1})
        raise InvalidInputError(f"sample_ids must be unique (also as text); these repeat: {twice[:10]}.")
    return ids


def forward_logits(
    owner: nn.Module, model: nn.Module, inputs: Tensor, fixed: int | None, budget: int, rows: Tensor
) -> Tensor:
    """Logits of ``inputs[rows]`` without autograd, in passes sized like every other pass."""
    out: list[Tensor] = []
    sizer = plan_forward(
        owner=owner, name="scores", model=model, example=inputs, fixed_images=fixed, budget=budget, total=len(rows)
    )

    def do_pass(start: int, size: int) -> None:
        chunk = inputs[rows[start : start + size].to(inputs.device)]
        with torch.no_grad():
            try:
                logits = model(chunk)
            except RuntimeError as exc:
                if is_out_of_memory(exc):
                    raise  # the runner retries the pass smaller
                raise InvalidInputError(f"the model failed on inputs of shape {tuple(chunk.shape)}: {exc}") from exc
        out.append(check_outputs(logits, len(chunk)))

    run_passes(len(rows), sizer, do_pass, inputs.device)
    return torch.cat(out) if out else inputs.new_zeros((0, 0))


@dataclass(frozen=True)
class _MethodRun:
    prepared: Prepared
    cost: Cost
    sizer: PassSizer
    result: MethodResult


def _run_method(entry: registry.Entry, attributor: Attributor, model: nn.Module, inputs: Tensor, *rest) -> _MethodRun:
    """Prepare ``attributor``'s model (checked against the model), size its passes and run them.

    An error that is not the library's own is first checked against the model's outputs for a
    batch of two: a model that returns another batch size breaks a method far from the cause.
    """
    try:
        return _run_method_unchecked(entry, attributor, model, inputs, *rest)
    except Exception as exc:
        if isinstance(exc, XaiBenchError) or is_out_of_memory(exc) or len(inputs) < 2:
            raise
        with torch.no_grad():
            try:
                outputs = model(inputs[:2])
            except Exception:
                raise exc from None
        try:
            check_outputs(outputs, 2)
        except ModelOutputError as wrong:
            raise wrong from exc
        raise


def _run_method_unchecked(
    entry: registry.Entry,
    attributor: Attributor,
    model: nn.Module,
    inputs: Tensor,
    index: Tensor,
    mask: Tensor,
    fixed: int | None,
    budget: int,
    work: int,
    bar: tqdm,
    fingerprint: Callable[[], str],
    keys: Tensor,
) -> _MethodRun:
    cost = attributor.cost(tuple(inputs.shape[1:]))
    prepared = _prepared_and_checked(entry, attributor, model, inputs, cost, fingerprint)
    sizer = plan_sizer(
        owner=model,
        key=(entry.id, to_json(attributor.params()), tuple(inputs.shape[1:]), inputs.dtype, str(inputs.device),
             index.shape[1]),
        model=prepared.model,
        example=inputs,
        images_per_item=cost.images,
        backward=cost.backward,
        fixed_images=fixed,
        budget=budget,
        total=work * cost.items,
        name=entry.id,
    )  # fmt: skip
    result = attribute_all(
        attributor, prepared.model, inputs, index, mask, sizer, keys=keys, on_pairs=bar.update, who=_who(entry)
    )
    return _MethodRun(prepared, cost, sizer, result)


def _who(entry: registry.Entry) -> str:
    """The method, and the plugin that provides it unless it is built in, for messages."""
    if plugin_info(entry.provider).builtin:
        return f"method {entry.id!r}"
    return f"method {entry.id!r} of plugin {entry.provider!r}"


def _warn_not_finite(entry: registry.Entry, maps: Tensor, mask: Tensor, ids: Sequence[Any]) -> None:
    """Warn, naming the samples, when computed maps hold NaN or Inf (stored as they are)."""
    bad = (~torch.isfinite(maps)).flatten(2).any(2) & mask
    if not bool(bad.any()):
        return
    rows = bad.any(1).nonzero().flatten().tolist()
    named = [ids[i] for i in rows[:10]]
    warn(
        f"{_who(entry)}: {int(bad.sum())} maps of samples {named}{' ...' if len(rows) > 10 else ''} hold NaN or Inf "
        "values, stored as they are: the gradient is not finite there (sqrt or log at 0, a division by zero) or "
        "the method overflowed. Move the inputs off such points (e.g. clamp_min(1e-6) before a sqrt) to get "
        "finite maps."
    )


def _check_reported(
    entry: registry.Entry, outputs: Tensor, logits: Tensor, ids: Sequence[Any], model: nn.Module
) -> None:
    """A plugin's reported outputs must be the model's logits (``logits`` (N, K), from its own forward)."""
    if tuple(outputs.shape) != tuple(logits.shape):
        raise PluginError(
            f"{_who(entry)} reported outputs of shape {tuple(outputs.shape)}; expected the model's logits, "
            f"{tuple(logits.shape)}."
        )
    if batch_statistics(model):
        return  # the logits depend on which images share a pass (warned about already)
    rows = ~torch.isnan(outputs).any(1)
    reported, own = outputs[rows].to(logits.dtype), logits[rows.to(logits.device)]
    eps = torch.finfo(logits.dtype).eps
    # Another pass size reorders sums (and a rewritten view rounds layer norms differently): rounding only.
    scale = own.abs().amax(1, keepdim=True) + torch.finfo(logits.dtype).tiny
    off = ((reported.to(own.device) - own).abs() > min(1000 * eps, 1e-2) * scale).any(1)
    if bool(off.any()):
        bad = rows.cpu().nonzero().flatten()[off.cpu()].tolist()
        raise PluginError(
            f"{_who(entry)} declares reports_outputs, but its outputs are not the model's logits for samples "
            f"{[ids[i] for i in bad[:10]]} (up to {float((reported.to(own.device) - own).abs().max()):.3g} off). "
            "Return the logits of the pass's inputs as outputs=, or do not declare reports_outputs."
        )


# Per model and method: the weights and module state a rewritten view was last checked against.
_checked: weakref.WeakKeyDictionary[nn.Module, dict[str, Hashable]] = weakref.WeakKeyDictionary()


_DECOMPOSED = ("layer_norm", "softmax", "attention", "mha", "quotient")


def _tolerance(prepared: Prepared, dtype: torch.dtype) -> float:
    """How far a rewritten view's logits may be from the model's, relative to their largest."""
    eps = torch.finfo(dtype).eps
    decomposed = any(
        kind in line and ("replaced" in line or "lifted" in line) for line in prepared.surgery for kind in _DECOMPOSED
    )  # fmt: skip
    return min(1000 * eps, 1e-2) if decomposed else 2 * eps


def _prepared_and_checked(
    entry: registry.Entry,
    attributor: Attributor,
    model: nn.Module,
    inputs: Tensor,
    cost: Cost,
    fingerprint: Callable[[], str],
) -> Prepared:
    """The attributor's model; a rewritten view must compute what the model computes, checked on one sample.

    Both run the same batch (the first sample, once per image of an item), so batch statistics,
    precision and kernels match and the logits agree to rounding; a view cached from an earlier
    call that no longer does (a Python flag torch.fx had specialised on changed) is traced again.
    The check runs again whenever the weights, the module tree, a module's attributes (lists,
    dicts and unregistered tensors by value) or its hooks changed since it last passed, or the
    input shape, dtype or device did: a key costs a fraction of a forward pass, which checking
    on every call would cost twice (``benchmarks/bench_fingerprint.py``).
    """
    prepared = attributor.prepare(model, inputs[:1])
    if prepared.model is model:
        return prepared
    key = (fingerprint(), module_state(model), tuple(inputs.shape[1:]), inputs.dtype, str(inputs.device))
    known = _checked.setdefault(model, {})
    if known.get(entry.id) == key:
        return prepared
    batch = inputs[:1].expand(cost.images, *inputs.shape[1:])
    for attempt in range(2):
        with torch.no_grad():
            expected, got = model(batch), prepared.model(batch)
        # The same ops on the same batch: equal but for the rounding of a reordered sum. Layer norm,
        # softmax and attention computed step by step round differently from their fused kernels,
        # which a deep network adds up over its layers: up to 1000 ulps, or 1% in half precision.
        # What the check is for (a branch fx took the other way, a flag that changed) differs by more.
        scale = float(expected.abs().max()) + torch.finfo(expected.dtype).tiny
        difference = float((got.to(expected.dtype) - expected).abs().max())
        if difference <= _tolerance(prepared, expected.dtype) * scale:
            known[entry.id] = key
            return prepared
        if attempt == 0:
            forget_rewrites(model)
            prepared = attributor.prepare(model, inputs[:1])
    # A hook on a module that a rule replaces does not run in the view: name the hooked modules.
    hooked = [repr(n) for n, m in model.named_modules() if n and (m._forward_hooks or m._forward_pre_hooks)]
    hint = f" Modules with forward hooks, which a rule may have replaced: {', '.join(hooked[:5])}." if hooked else ""
    raise SurgeryError(
        f"{entry.id}: the rewritten model's logits differ from the model's own by up to {difference:.3g} on the "
        "same input; its forward depends on something torch.fx cannot follow (Python control flow on tensor "
        "values or on state that changes between calls). Make the forward traceable, or use a gradient "
        f"method or occlusion.{hint}"
    )


def method_maps(
    model: nn.Module,
    method: str,
    params: Mapping[str, Any],
    inputs: Tensor,
    index: Tensor,
    mask: Tensor,
    sample_ids: Sequence[Any],
    *,
    batch_size: int | str = "auto",
    memory_budget: int | None = None,
) -> Tensor:
    """Maps (N, T, C, H, W) of one method for the pairs ``mask`` of classes ``index`` (N, T), NaN elsewhere.

    The engine's passes without ``explain``'s checks of the model and inputs, scores and labels:
    for callers that made those checks already and run a method many times (a sanity check on
    each randomised copy of a model). The model must be in eval mode, on the inputs' device.
    """
    ((entry, attributor),) = resolve_methods({method: dict(params)})
    attributor.check_inputs(inputs)
    budget = memory_budget if memory_budget is not None else parse_budget(None, inputs.device)
    keys = torch.tensor([sample_key(i) for i in sample_ids], dtype=torch.int64)
    work = len(work_samples(mask.cpu()))
    with tqdm(disable=True) as bar:
        run = _run_method(
            entry, attributor, model, inputs, index.to(inputs.device), mask.to(inputs.device),
            batch_size_arg(batch_size), budget, work, bar, functools.partial(model_fingerprint, model), keys,
        )  # fmt: skip
    return run.result.maps


class _Scores:
    """The model's logits per sample, taken from the methods' own forward passes where they have them."""

    def __init__(self, n: int, num_classes: int, device: torch.device, dtype: torch.dtype) -> None:
        self.values = torch.zeros(n, num_classes, device=device, dtype=dtype)
        self.known = torch.zeros(n, dtype=torch.bool)

    def offer(self, outputs: Tensor | None) -> None:
        """Take the rows of ``outputs`` (N, K) that are not NaN."""
        if outputs is None or outputs.shape != self.values.shape:
            return
        have = (~torch.isnan(outputs).any(1)).cpu() & ~self.known
        if have.any():
            idx = have.nonzero().flatten()
            self.values[idx.to(self.values.device)] = outputs.detach()[idx.to(outputs.device)].to(self.values.dtype)
            self.known[idx] = True

    def missing(self) -> Tensor:
        return (~self.known).nonzero().flatten()

    def fill(self, rows: Tensor, logits: Tensor) -> None:
        self.values[rows.to(self.values.device)] = logits.to(self.values.dtype)
        self.known[rows] = True


def explain(
    model: nn.Module,
    inputs: Tensor,
    *,
    methods: MethodsArg,
    targets: object = "predicted",
    labels: Sequence[str] | None = None,
    task: Task = "multiclass",
    threshold: float = 0.5,
    max_targets: int | None = None,
    batch_size: int | str = "auto",
    memory_budget: int | str | None = None,
    sample_ids: Sequence[Any] | None = None,
    store: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: Progress = "auto",
    device: str | torch.device | None = None,
    store_inputs: bool = True,
    input_normalization: Any = None,
    output: str = "logit",
) -> xr.Dataset:
    """Explain ``model``'s outputs for ``inputs`` (N, C, H, W) with each of ``methods``.

    ``targets`` gives the same classes to every sample (an int, a label name, a list of them,
    ``"all"``: stored as (sample, target, ...)) or classes per sample (a 1-D integer tensor of one
    class per sample as captum's ``target=y``, a list of per-sample lists, an (N, classes) boolean
    mask, or ``"predicted"``: the arg-max for ``task="multiclass"``, every label whose sigmoid
    exceeds ``threshold`` for ``"multilabel"``; stored as (sample, slot, ...) with a ``target``
    coordinate per slot, ``max_targets`` slots at most). ``batch_size`` is the images in one
    pass; ``"auto"`` caps it by ``memory_budget`` (bytes or a string such as ``"4GiB"``; default
    half the free GPU memory, or of the available RAM on CPU) and picks the fastest measured size
    under the cap, halving it if an allocation still fails. Results do not depend on it beyond
    rounding. Returns a Dataset with one map variable per method, the target logits as ``score``,
    ``<method>_delta`` where the method has a completeness delta, and provenance in attrs. With
    ``store``, the Dataset is also written there as zarr (all at once, under a temporary name
    renamed into place; an existing store is an error unless ``overwrite=True``).

    ``device`` (e.g. ``"cuda"``) runs the call there: the inputs are copied to it and the model
    is moved to it for the call and moved back afterwards, bit for bit (this needs room for the
    model's parameters on the device, besides the memory budget, which is then measured there).
    By default everything runs where the inputs are, and they must be where the model is.

    ``progress`` draws a bar of the maps done on stderr: ``True`` always, ``False`` never, ``"auto"``
    (the default) when stderr is a terminal, the call plans at least 256 images through the model
    and it has run for 2 seconds (see :func:`xai_bench.engine.progress.progress_bar`).

    ``store_inputs`` keeps the inputs in the Dataset (variable ``input``), so that pictures and
    reports can be drawn from it (or its store) alone. ``input_normalization`` says how the
    inputs were normalised (``"imagenet"``, ``(mean, std)``): nothing is applied, it is recorded
    (attribute ``input_normalization``) so that pictures can show the images as they were.

    ``output`` is what the maps explain: the model's logits (the default), or their ``"sigmoid"``
    or ``"softmax"``, as if the model ended in that module (``nn.Sequential(model, nn.Sigmoid())``;
    the user's model is not changed). It is recorded (attribute ``output``), ``score`` holds that
    output's value, and ``"predicted"`` picks the same classes whichever output is explained.
    """
    specs = resolve_methods(methods)
    fixed = batch_size_arg(batch_size)
    check_progress(progress)
    if store is not None:
        check_writable(store, overwrite=overwrite)
    check_task(task)
    output = check_output(output, task)
    threshold = check_threshold(threshold)
    max_targets = check_max_targets(max_targets)
    chosen = check_device(device)
    normalization = check_normalization(input_normalization)
    user, model = user_model(model), scored(model, output)
    with eval_mode(user), on_device(user, chosen):
        if chosen is not None and isinstance(inputs, Tensor):
            inputs = inputs.to(chosen)
        if isinstance(inputs, Tensor) and inputs.is_inference():
            inputs = inputs.clone()  # an inference tensor cannot take part in autograd
        inputs = check_inputs(model, inputs, sample_ids).detach()
        if normalization is not None:
            normalization.check_channels(inputs.shape[1])
        budget = parse_budget(memory_budget, inputs.device)
        ids = check_sample_ids(sample_ids, inputs.shape[0])
        keys = torch.tensor([sample_key(i) for i in ids], dtype=torch.int64)
        for _, attributor in specs:
            attributor.check_inputs(inputs)
        # One image checks that the model takes these inputs and returns logits; the scores of
        # all images come from the methods' own forward passes unless targets depend on them.
        num_classes = probe(model, inputs)
        fingerprint = model_fingerprint(user)
        names = check_labels(labels, num_classes)
        n = inputs.shape[0]
        scores = _Scores(n, num_classes, inputs.device, inputs.dtype)
        if isinstance(targets, str) and targets == "predicted":
            everyone = torch.arange(n)
            scores.fill(everyone, forward_logits(model, model, inputs, fixed, budget, everyone))
            warn_wide(targets, task, slot_width(targets, task, num_classes, max_targets), max_targets)
        resolved = resolve_targets(
            targets, scores.values, n=n, num_classes=num_classes, labels=names, task=task,
            threshold=threshold, max_targets=max_targets, output=output,
        )  # fmt: skip
        index = resolved.index.to(inputs.device)
        mask = resolved.mask.to(inputs.device)
        # Stored as float32 (float64 inputs stay float64): numpy has no bfloat16, and half precision
        # would round maps that were computed in it once more.
        stored = torch.float64 if inputs.dtype == torch.float64 else torch.float32
        maps: dict[str, np.ndarray] = {}
        deltas: dict[str, np.ndarray] = {}
        method_attrs: dict[str, dict[str, Any]] = {}
        work = len(work_samples(resolved.mask))
        # One unit per (sample, target) map of each method: what the bar says is what it counts.
        pairs = int(resolved.mask.sum())
        planned = pairs * sum(cost.items * cost.images for cost in (a.cost(tuple(inputs.shape[1:])) for _, a in specs))
        bar = progress_bar(progress, planned_images=planned, total=len(specs) * pairs, desc="explain", unit="map")
        reported: list[tuple[registry.Entry, Tensor]] = []
        for entry, attributor in specs:
            bar.set_postfix_str(entry.id)
            run = _run_method(
                entry, attributor, model, inputs, index, mask, fixed, budget, work, bar, lambda: fingerprint, keys
            )
            maps[entry.id] = run.result.maps.to(stored).cpu().numpy()
            if run.result.delta is not None:
                deltas[entry.id] = run.result.delta.to(stored).cpu().numpy()
            _warn_not_finite(entry, run.result.maps, mask, ids)
            if plugin_info(entry.provider).builtin:
                scores.offer(run.result.outputs)
            elif run.result.outputs is not None:
                reported.append((entry, run.result.outputs))  # checked against the model's own forward
            method_attrs[entry.id] = {
                **_method_attrs(entry, attributor, run.prepared.surgery),
                "images_per_pass": run.sizer.settled * run.cost.images,
                "max_images_per_pass": run.sizer.cap * run.cost.images,
            }
        bar.close()
        missing = scores.missing()
        if len(missing):
            scores.fill(missing, forward_logits(model, model, inputs, fixed, budget, missing))
        for entry, outputs in reported:
            _check_reported(entry, outputs, scores.values, ids, model)
        picked = scores.values.gather(1, index).detach().to(stored).cpu().numpy()
        picked[~resolved.mask.numpy()] = np.nan
        attrs = result_attrs(
            user,
            fingerprint=fingerprint,
            task=task,
            output=output,
            threshold=threshold,
            targets=_describe_targets(targets, resolved),
            batch_size=fixed if fixed is not None else "auto",
            # What was asked, not what it came to: the default follows the free memory of the moment, and a
            # store resumed later must carry the attributes of an uninterrupted one.
            memory_budget=budget if memory_budget is not None else "auto",
            methods=to_json([entry.id for entry, _ in specs]),
        )
        if normalization is not None:
            attrs["input_normalization"] = normalization.to_json()
        kept = inputs.detach().to(stored).cpu().numpy() if store_inputs else None
    ds = build_dataset(
        maps=maps,
        deltas=deltas,
        method_attrs=method_attrs,
        scores=picked,
        sample_ids=ids,
        targets=resolved.table,
        attrs=attrs,
        inputs=kept,
        score_description=score_description(output),
    )
    if store is not None:
        save_maps(ds, store, overwrite=overwrite)
    return ds


def _describe_targets(targets: object, resolved: Resolved) -> str:
    """``targets`` for provenance: the keyword, the shared classes, or where the per-sample ones are."""
    if isinstance(targets, str):
        return targets
    if resolved.table.layout == "dense":
        return to_json(resolved.table.index[0].tolist())
    return "per-sample: see the target_index coordinate"


def _method_attrs(entry: registry.Entry, attributor: Attributor, surgery: tuple[str, ...]) -> dict[str, Any]:
    info = plugin_info(entry.provider)
    cls = attributor  # the instance's flags: smooth= changes some
    return {
        "method": entry.id,
        "provider": entry.provider,
        "provider_distribution": info.distribution or "unknown",
        "provider_version": info.version or "unknown",
        "params": to_json(attributor.params()),
        "surgery": to_json(list(surgery)),
        "multiplies_by_inputs": int(cls.multiplies_by_inputs),
        "has_delta": int(cls.has_delta),
    }


def methods() -> dict[str, dict[str, Any]]:
    """List available method ids with their provider, capabilities and parameters."""
    flags = ("needs_baseline", "needs_surgery", "multiplies_by_inputs", "has_delta", "reports_outputs")
    return {method_id: entry.describe(flags) for method_id, entry in sorted(registry.attributors.entries().items())}
