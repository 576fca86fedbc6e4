"""``explain``: run local attribution methods on a batch of inputs and label the results."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from ..attributors.base import Attributor
from ..core.cache import cache_of
from ..core.checks import repeated_as_text, to_json
from ..core.errors import InvalidInputError, deprecated
from ..core.provenance import model_fingerprint, module_state, result_attrs, sample_key
from ..engine.entry import Budget, forward_passes
from ..engine.memory import is_out_of_memory
from ..engine.progress import progress_bar
from ..plugins import registry
from ..plugins.manager import plugin_info
from ..storage.datasets import build_dataset
from ..storage.zarr_io import check_writable, save_maps
from .job import JOB_PARAMETERS, ExplainJob, MethodsArg
from .method_runs import Work, check_reported, method_attrs, run_method, warn_not_finite
from .outputs import score_description, scored, user_model
from .passes import Passes
from .preflight import check_inputs, check_outputs, eval_mode, on_device, probe
from .targets import Resolved, Targets, warn_wide

#: explain's parameters besides the model and the inputs
EXPLAIN_PARAMETERS = [*JOB_PARAMETERS, "sample_ids", "store", "overwrite"]


def resolve_methods(methods: MethodsArg) -> list[tuple[registry.Entry, Attributor]]:
    """Turn ``methods`` (an id, an instance, a list of them, or ``{id: params}``) into (entry, attributor) pairs."""
    return registry.resolve(registry.attributors, methods)


def check_sample_ids(sample_ids: Sequence[Any] | None, n: int) -> list[Any]:
    """Return ids for ``n`` samples (0..n-1 by default), refusing ids that collide once stored as text."""
    if sample_ids is None:
        return list(range(n))
    ids = list(sample_ids)
    if len(ids) != n:
        raise InvalidInputError(f"sample_ids has {len(ids)} entries for {n} inputs.")
    twice = repeated_as_text(ids)
    if twice:
        raise InvalidInputError(f"sample_ids must be unique (also as text); these repeat: {twice[:10]}.")
    return ids


def explain(
    model: nn.Module,
    inputs: Tensor,
    *,
    methods: MethodsArg,
    targets: Targets | object = "predicted",
    passes: Passes | int | str | dict | None = None,
    sample_ids: Sequence[Any] | None = None,
    store: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    store_inputs: bool = True,
    input_normalization: Any = None,
    **deprecated_keywords: Any,
) -> xr.Dataset:
    """Explain ``model``'s outputs for ``inputs`` (N, C, H, W) with each of ``methods``.

    ``methods`` is an id (``"saliency"``), an instance (``IntegratedGradients(n_steps=32)``), a
    list of them, or ``{id: params}``; see :func:`list_methods`. ``targets`` is a
    :class:`Targets`, or any form of its classes: the same classes for every sample (an int, a
    label name, a list of them, ``"all"``: stored as (sample, target, ...)) or classes per sample (a
    1-D integer tensor of one class per sample as captum's ``target=y``, a list of per-sample lists,
    an (N, classes) boolean mask, or ``"predicted"``: stored as (sample, slot, ...) with a
    ``target`` coordinate per slot). ``Targets`` also names the classes, says what "predicted"
    means (``task``, ``threshold``, ``max_targets``) and which output the maps explain (the
    logits, or their sigmoid or softmax). ``passes`` (:class:`Passes`, or a batch size) says how the
    work runs: images per pass, memory budget, device, progress bar; results do not depend on it
    beyond rounding.

    Returns a Dataset with one map variable per method, the explained output's value for each
    target as ``score``, ``<method>_delta`` where the method has a completeness delta, and
    provenance in attrs (``ds.xai`` reads it in either layout). ``sample_ids`` name the samples
    (default 0..N-1). With ``store``, the Dataset is also written there as zarr (all at once,
    under a temporary name renamed into place; an existing store is an error unless
    ``overwrite=True``). ``store_inputs`` keeps the inputs in the Dataset (variable ``input``), so
    that pictures and reports can be drawn from it (or its store) alone. ``input_normalization``
    says how the inputs were normalised (``"imagenet"``, ``(mean, std)``): nothing is applied, it is
    recorded so that pictures can show the images as they were.

    The keywords of 0.2 (``batch_size``, ``memory_budget``, ``device``, ``progress``; ``labels``,
    ``task``, ``threshold``, ``max_targets``) still work in 0.3, with a ``DeprecationWarning`` that
    names their place in ``passes`` or ``targets``.
    """
    job = ExplainJob.build(
        methods=methods, targets=targets, passes=passes, store_inputs=store_inputs,
        input_normalization=input_normalization, old=deprecated_keywords, where="explain",
        accepted=EXPLAIN_PARAMETERS,
    )  # fmt: skip
    if store is not None:
        check_writable(store, overwrite=overwrite)
    ds = explain_job(model, inputs, job, sample_ids)
    if store is not None:
        save_maps(ds, store, overwrite=overwrite)
    return ds


def explain_job(
    model: nn.Module, inputs: Tensor, job: ExplainJob, sample_ids: Sequence[Any] | None = None
) -> xr.Dataset:
    """The maps of ``job`` for ``inputs``: ``explain``'s work once its arguments are checked (``run`` calls it
    for each block). The user's model goes back as it was: modes, device, weights."""
    chosen = job.passes.chosen_device()
    user = user_model(model)
    with eval_mode(user), on_device(user, chosen):
        call = _Call.begin(user, scored(model, job.targets.output), inputs, job, sample_ids, chosen)
        resolved = call.resolve()
        return call.dataset(resolved, call.run_methods(resolved))


@dataclass
class _Done:
    """What a call's methods made: maps and deltas per method id, their attributes, plugins' reported outputs."""

    maps: dict[str, np.ndarray] = field(default_factory=dict)
    deltas: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    reported: list[tuple[registry.Entry, Tensor]] = field(default_factory=list)


@dataclass
class _Call:
    """One call of ``explain``: the model, the checked inputs and their ids, and what is known of its scores."""

    user: nn.Module
    net: nn.Module  # the user's model, ending in the explained output's head when it is not the logits
    inputs: Tensor
    job: ExplainJob
    ids: list[Any]
    keys: Tensor
    budget: Budget
    num_classes: int
    fingerprint: str
    specs: list[tuple[registry.Entry, Attributor]]
    scores: _Scores

    @classmethod
    def begin(
        cls, user: nn.Module, net: nn.Module, inputs: Tensor, job: ExplainJob, sample_ids: Any, chosen: Any
    ) -> _Call:
        if chosen is not None and isinstance(inputs, Tensor):
            inputs = inputs.to(chosen)
        if isinstance(inputs, Tensor) and inputs.is_inference():
            inputs = inputs.clone()  # an inference tensor cannot take part in autograd
        inputs = check_inputs(net, inputs, sample_ids).detach()
        if job.input_normalization is not None:
            job.input_normalization.check_channels(inputs.shape[1])
        specs = job.specs
        for _, attributor in specs:
            attributor.check_inputs(inputs)
        ids = check_sample_ids(sample_ids, inputs.shape[0])
        keys = torch.tensor([sample_key(i) for i in ids], dtype=torch.int64)
        budget = Budget(job.passes.fixed_images, job.passes.budget(inputs.device))
        fingerprint = model_fingerprint(user)
        num_classes = _class_count(user, net, inputs, fingerprint)
        scores = _Scores(inputs.shape[0], num_classes, inputs.device, inputs.dtype)
        return cls(user, net, inputs, job, ids, keys, budget, num_classes, fingerprint, specs, scores)

    def resolve(self) -> Resolved:
        targets, n = self.job.targets, self.inputs.shape[0]
        if isinstance(targets.classes, str) and targets.classes == "predicted":
            everyone = torch.arange(n)
            self.scores.fill(everyone, forward_logits(self.user, self.net, self.inputs, self.budget, everyone))
            warn_wide(targets.classes, targets.task, targets.slot_width(self.num_classes), targets.max_targets)
        return targets.resolve(self.scores.values, n=n, num_classes=self.num_classes)

    def run_methods(self, resolved: Resolved) -> _Done:
        """Each method's maps, deltas and attributes, and the outputs plugins reported."""
        inputs = self.inputs
        index, mask = resolved.index.to(inputs.device), resolved.mask.to(inputs.device)
        # One unit per (sample, target) map of each method: what the bar says is what it counts.
        pairs = int(resolved.mask.sum())
        shape = tuple(inputs.shape[1:])
        planned = pairs * sum(c.items * c.images for c in (a.cost(shape) for _, a in self.specs))
        bar = progress_bar(self.job.passes.progress, planned_images=planned, total=len(self.specs) * pairs,
                           desc="explain", unit="map")  # fmt: skip
        work = Work(index, mask, self.budget, self.keys, lambda: self.fingerprint, bar)
        done, stored = _Done(), self.stored_dtype
        for entry, attributor in self.specs:
            bar.set_postfix_str(entry.id)
            run = run_method(entry, attributor, self.net, inputs, work)
            done.maps[entry.id] = run.result.maps.to(stored).cpu().numpy()
            if run.result.delta is not None:
                done.deltas[entry.id] = run.result.delta.to(stored).cpu().numpy()
            warn_not_finite(entry, run.result.maps, mask, self.ids)
            if plugin_info(entry.provider).builtin:
                self.scores.offer(run.result.outputs)
            elif run.result.outputs is not None:
                done.reported.append((entry, run.result.outputs))  # checked against the model's own forward
            images = attributor.cost(shape).images
            done.attrs[entry.id] = {
                **method_attrs(entry, attributor, run.prepared.surgery, run.prepared.layer),
                "images_per_pass": run.sizer.settled * images,
                "max_images_per_pass": run.sizer.cap * images,
            }
        bar.close()
        return done

    @property
    def stored_dtype(self) -> torch.dtype:
        # Stored as float32 (float64 inputs stay float64): numpy has no bfloat16, and half precision
        # would round maps that were computed in it once more.
        return torch.float64 if self.inputs.dtype == torch.float64 else torch.float32

    def dataset(self, resolved: Resolved, done: _Done) -> xr.Dataset:
        """The labelled Dataset of the call: maps, deltas, scores, inputs and provenance."""
        missing = self.scores.missing()
        if len(missing):
            self.scores.fill(missing, forward_logits(self.user, self.net, self.inputs, self.budget, missing))
        for entry, outputs in done.reported:
            check_reported(entry, outputs, self.scores.values, self.ids, self.net)
        stored, job, passes = self.stored_dtype, self.job, self.job.passes
        picked = self.scores.values.gather(1, resolved.index.to(self.inputs.device)).detach().to(stored).cpu().numpy()
        picked[~resolved.mask.numpy()] = np.nan
        attrs = result_attrs(
            self.user, fingerprint=self.fingerprint, task=job.targets.task, output=job.targets.output,
            threshold=job.targets.threshold, targets=job.targets.describe(resolved),
            batch_size=passes.fixed_images if passes.fixed_images is not None else "auto",
            # What was asked, not what it came to: the default follows the free memory of the moment, and a
            # store resumed later must carry the attributes of an uninterrupted one.
            memory_budget=self.budget.bytes if passes.memory_budget is not None else "auto",
            methods=to_json([entry.id for entry, _ in self.specs]),
        )  # fmt: skip
        if job.input_normalization is not None:
            attrs["input_normalization"] = job.input_normalization.to_json()
        return build_dataset(
            maps=done.maps, deltas=done.deltas, method_attrs=done.attrs, scores=picked, sample_ids=self.ids,
            targets=resolved.table, attrs=attrs,
            inputs=self.inputs.detach().to(stored).cpu().numpy() if job.store_inputs else None,
            score_description=score_description(job.targets.output),
        )  # fmt: skip


def _class_count(user: nn.Module, net: nn.Module, inputs: Tensor, fingerprint: str) -> int:
    """The class count of ``net`` on inputs like these, from one image through it (which also checks that it
    takes them and returns logits; the scores of all images come from the methods' own forward passes
    unless targets depend on them). Remembered per weights and module tree (the fingerprint: a head
    replaced or swapped changes it), module state, input shape, dtype and device: the probe's forward
    pass was 7% of a saliency call on ResNet18 (``benchmarks/README.md``)."""
    key = (fingerprint, module_state(user), type(net), tuple(inputs.shape[1:]), inputs.dtype, str(inputs.device))
    known = cache_of(user, "probes")
    if key not in known:
        known[key] = probe(net, inputs)
    return known[key]


def forward_logits(owner: nn.Module, model: nn.Module, inputs: Tensor, budget: Budget, rows: Tensor) -> Tensor:
    """``model``'s outputs for ``inputs[rows]`` without autograd, in passes sized like every other pass."""
    out: list[Tensor] = []

    def images(start: int, count: int) -> Tensor:
        return inputs[rows[start : start + count].to(inputs.device)]

    def consume(logits: Tensor, start: int, count: int) -> None:
        out.append(check_outputs(logits, count))

    try:
        forward_passes(model, len(rows), images, owner=owner, name="scores", example=inputs, budget=budget,
                       consume=consume)  # fmt: skip
    except RuntimeError as exc:
        if is_out_of_memory(exc):
            raise
        raise InvalidInputError(f"the model failed on inputs of shape {tuple(inputs.shape)}: {exc}") from exc
    return torch.cat(out) if out else inputs.new_zeros((0, 0))


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


def list_methods() -> dict[str, dict[str, Any]]:
    """List available method ids with their provider, capabilities and parameters."""
    flags = ("needs_baseline", "needs_surgery", "multiplies_by_inputs", "has_delta", "reports_outputs")
    return {method_id: entry.describe(flags) for method_id, entry in sorted(registry.attributors.entries().items())}


def methods() -> dict[str, dict[str, Any]]:
    """Deprecated spelling of :func:`list_methods`."""
    deprecated("xai_bench.methods()", "xai_bench.list_methods()")
    return list_methods()
