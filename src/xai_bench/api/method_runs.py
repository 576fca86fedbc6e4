"""One method's run over a call's (sample, target) pairs: its model prepared and checked, its passes, its maps.

``explain`` runs each of its methods through :func:`run_method`; metrics that make maps again (a sanity
check on each randomised copy of a model) call :func:`method_maps`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..attributors.base import Attributor, Prepared
from ..core.cache import cache_of
from ..core.checks import to_json
from ..core.errors import ModelOutputError, PluginError, SurgeryError, XaiBenchError, deprecated, warn
from ..core.provenance import model_fingerprint, module_state, sample_key
from ..engine.attribution import MethodResult
from ..engine.entry import Budget, attribute
from ..engine.memory import is_out_of_memory
from ..engine.tuning import PassSizer
from ..plugins import registry
from ..plugins.manager import plugin_info
from ..surgery import forget as forget_rewrites
from .preflight import batch_statistics, check_outputs


@dataclass(frozen=True)
class Work:
    """The pairs one method computes in a call and how: classes ``index`` and ``mask`` (N, T) on the inputs'
    device, the passes' budget, the samples' keys, a bar counting finished maps, and the user's model's
    fingerprint (read when a rewritten view needs checking)."""

    index: Tensor
    mask: Tensor
    budget: Budget
    keys: Tensor
    fingerprint: Callable[[], str]
    bar: tqdm | None = None
    #: each input's row in the call whose per-sample parameters the method holds (default: its own row)
    positions: Tensor | None = None


@dataclass(frozen=True)
class MethodRun:
    prepared: Prepared
    sizer: PassSizer
    result: MethodResult


def run_method(
    entry: registry.Entry, attributor: Attributor, model: nn.Module, inputs: Tensor, work: Work
) -> MethodRun:
    """Prepare ``attributor``'s model (checked against the model), size its passes and run them.

    An error that is not the library's own is first checked against the model's outputs for a
    batch of two: a model that returns another batch size breaks a method far from the cause.
    """
    try:
        prepared = _prepared_and_checked(entry, attributor, model, inputs, work.fingerprint)
        _check_layer_maps(entry, prepared)
        key = (entry.id, to_json(attributor.params()), tuple(inputs.shape[1:]), inputs.dtype, str(inputs.device),
               work.index.shape[1])  # fmt: skip
        result, sizer = attribute(
            attributor, prepared.model, inputs, work.index, work.mask, owner=model, key=key, budget=work.budget,
            keys=work.keys, positions=work.positions, on_pairs=work.bar.update if work.bar is not None else None,
            who=who(entry),
            map_shape=prepared.map_shape,
        )  # fmt: skip
        return MethodRun(prepared, sizer, result)
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


def _check_layer_maps(entry: registry.Entry, prepared: Prepared) -> None:
    """Maps of a layer need both its name (stored with them) and their shape (which sizes the store)."""
    if (prepared.layer is None) != (prepared.map_shape is None):
        raise PluginError(
            f"{who(entry)}: prepare() returned layer={prepared.layer!r} and map_shape={prepared.map_shape!r}; maps "
            "of a layer need both (the layer's name and its output's shape per sample), maps of the input neither."
        )


def who(entry: registry.Entry) -> str:
    """The method, and the plugin that provides it unless it is built in, for messages."""
    if plugin_info(entry.provider).builtin:
        return f"method {entry.id!r}"
    return f"method {entry.id!r} of plugin {entry.provider!r}"


def warn_not_finite(entry: registry.Entry, maps: Tensor, mask: Tensor, ids: Sequence[Any]) -> None:
    """Warn, naming the samples, when computed maps hold NaN or Inf (stored as they are)."""
    bad = (~torch.isfinite(maps)).flatten(2).any(2) & mask
    if not bool(bad.any()):
        return
    rows = bad.any(1).nonzero().flatten().tolist()
    named = [ids[i] for i in rows[:10]]
    warn(
        f"{who(entry)}: {int(bad.sum())} maps of samples {named}{' ...' if len(rows) > 10 else ''} hold NaN or Inf "
        "values, stored as they are: the gradient is not finite there (sqrt or log at 0, a division by zero) or "
        "the method overflowed. Move the inputs off such points (e.g. clamp_min(1e-6) before a sqrt) to get "
        "finite maps."
    )


def check_reported(
    entry: registry.Entry, outputs: Tensor, logits: Tensor, ids: Sequence[Any], model: nn.Module
) -> None:
    """A plugin's reported outputs must be the model's logits (``logits`` (N, K), from its own forward)."""
    if tuple(outputs.shape) != tuple(logits.shape):
        raise PluginError(
            f"{who(entry)} reported outputs of shape {tuple(outputs.shape)}; expected the model's logits, "
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
            f"{who(entry)} declares reports_outputs, but its outputs are not the model's logits for samples "
            f"{[ids[i] for i in bad[:10]]} (up to {float((reported.to(own.device) - own).abs().max()):.3g} off). "
            "Return the logits of the pass's inputs as outputs=, or do not declare reports_outputs."
        )


_COMPOSITES = ("layer_norm", "softmax", "attention", "mha", "quotient")


def _tolerance(entry: registry.Entry, prepared: Prepared, dtype: torch.dtype) -> float:
    """How far a rewritten view's logits may be from the model's, relative to their largest."""
    eps = torch.finfo(dtype).eps
    decomposed = prepared.decomposed
    if not decomposed and not plugin_info(entry.provider).builtin:
        # A plugin written for 0.2 says so only in the surgery summary of xai_bench.surgery.rewrite.
        decomposed = any(k in line and ("replaced" in line or "lifted" in line)
                         for line in prepared.surgery for k in _COMPOSITES)  # fmt: skip
        if decomposed:
            deprecated(
                f"{who(entry)}: a rewritten view known as decomposed by its surgery summary",
                "Prepared(..., decomposed=report.decomposed)",
            )
    return min(1000 * eps, 1e-2) if decomposed else 2 * eps


def _prepared_and_checked(
    entry: registry.Entry, attributor: Attributor, model: nn.Module, inputs: Tensor, fingerprint: Callable[[], str]
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
    known = cache_of(model, "checked views")  # per method: the state a rewritten view last passed with
    if known.get(entry.id) == key:
        return prepared
    batch = inputs[:1].expand(attributor.cost(tuple(inputs.shape[1:])).images, *inputs.shape[1:])
    for attempt in range(2):
        with torch.no_grad():
            expected, got = model(batch), prepared.model(batch)
        # The same ops on the same batch: equal but for the rounding of a reordered sum. Layer norm,
        # softmax and attention computed step by step round differently from their fused kernels,
        # which a deep network adds up over its layers: up to 1000 ulps, or 1% in half precision.
        # What the check is for (a branch fx took the other way, a flag that changed) differs by more.
        scale = float(expected.abs().max()) + torch.finfo(expected.dtype).tiny
        difference = float((got.to(expected.dtype) - expected).abs().max())
        if difference <= _tolerance(entry, prepared, expected.dtype) * scale:
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
    budget: Budget,
    positions: Tensor | None = None,
    call_inputs: Tensor | None = None,
) -> Tensor:
    """Maps (N, T, C, H, W) of one method (or (N, T, *shape) at a layer) for the pairs ``mask`` of classes
    ``index`` (N, T), NaN elsewhere.

    The engine's passes without ``explain``'s checks of the model and inputs, scores and labels:
    for callers that made those checks already and run a method many times (a sanity check on
    each randomised copy of a model). The model must be in eval mode, on the inputs' device.
    ``inputs`` may be other images standing for rows of a call (a metric's perturbed copies, a subset):
    ``positions`` (N,) then gives each one's row in ``call_inputs``, the call's inputs, which the
    method's per-sample parameters (``sample_baselines``, per-sample feature masks) belong to.
    """
    ((entry, attributor),) = registry.resolve(registry.attributors, {method: dict(params)})
    attributor.check_inputs(inputs if call_inputs is None else call_inputs)
    keys = torch.tensor([sample_key(i) for i in sample_ids], dtype=torch.int64)
    work = Work(index.to(inputs.device), mask.to(inputs.device), budget, keys, lambda: model_fingerprint(model),
                positions=positions)  # fmt: skip
    return run_method(entry, attributor, model, inputs, work).result.maps


def method_attrs(
    entry: registry.Entry, attributor: Attributor, surgery: tuple[str, ...], layer: str | None = None
) -> dict[str, Any]:
    """The attributes of a method's map variable: provider, parameters, rewrites, flags, and the layer its maps
    are of (only for maps of a layer: maps of the input keep the attributes they always had)."""
    info = plugin_info(entry.provider)
    cls = attributor  # the instance's flags: smooth= changes some
    return {
        **({"layer": layer} if layer is not None else {}),
        "method": entry.id,
        "provider": entry.provider,
        "provider_distribution": info.distribution or "unknown",
        "provider_version": info.version or "unknown",
        "params": to_json(attributor.params()),
        "surgery": to_json(list(surgery)),
        "multiplies_by_inputs": int(cls.multiplies_by_inputs),
        "has_delta": int(cls.has_delta),
    }
