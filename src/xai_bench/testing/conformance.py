"""Checks every attributor must pass; plugin authors run them on their own methods.

    from xai_bench.testing import check_attributor
    check_attributor("my_method", {"layer": "conv3"})

Each check raises ``AssertionError`` with a message saying what broke.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..api.explaining import explain
from ..attributors.base import Attributor
from ..attributors.noise_tunnel import NoiseTunnel, check_smoothing
from ..metrics.base import Metric
from ..plugins import registry
from .models import tiny_cnn

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


def hook_counts(model: nn.Module) -> dict[str, int]:
    """Count every hook on every module and parameter of ``model``, and the global module hooks."""
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        for attr in _HOOK_DICTS:
            counts[f"{name or '<root>'}.{attr}"] = len(getattr(module, attr, {}) or {})
    for name, p in model.named_parameters():
        counts[f"{name}._backward_hooks"] = len(p._backward_hooks or {})
    from torch.nn.modules import module as module_mod

    for attr in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks"):
        counts[f"torch.{attr}"] = len(getattr(module_mod, attr, {}))
    return counts


def model_state(model: nn.Module) -> dict[str, Any]:
    """Everything about ``model`` that explaining it must leave as it was."""
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "inplace": {n: m.inplace for n, m in model.named_modules() if hasattr(m, "inplace")},
        "modules": [(n, type(m)) for n, m in model.named_modules()],
        "hooks": hook_counts(model),
    }


def assert_model_unchanged(before: Mapping[str, Any], model: nn.Module) -> None:
    """Fail, naming what changed, unless ``model`` is as :func:`model_state` recorded it in ``before``
    (mode, gradient flags, in-place flags, modules, hooks and values)."""
    after = model_state(model)
    for key in ("training", "requires_grad", "inplace", "modules", "hooks"):
        if before[key] != after[key]:
            diff = _diff(before[key], after[key])
            raise AssertionError(f"the model's {key} changed: {diff}")
    for name, tensor in before["tensors"].items():
        if not torch.equal(tensor, after["tensors"][name]):
            raise AssertionError(f"the model's tensor {name!r} changed")
    for name, grad in before["grads"].items():
        now = after["grads"][name]
        if (grad is None) != (now is None) or (grad is not None and not torch.equal(grad, now)):
            raise AssertionError(f"the .grad of parameter {name!r} changed")


def _diff(a: Any, b: Any) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in set(a) | set(b) if a.get(k) != b.get(k)]
        return ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(map(str, keys))[:5])
    return f"{a!r} -> {b!r}"


def default_case(seed: int = 0) -> tuple[nn.Module, Tensor]:
    """The tiny float64 CNN with every awkward ReLU pattern, and three seeded 12 × 12 images."""
    model = tiny_cnn(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    return model, torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)


MethodArg = str | Attributor  # an id, or an instance of a registered class (a typed method)


def _id(method: MethodArg) -> str:
    """The method's id: itself, or the id its instance's class is registered under."""
    return method if isinstance(method, str) else registry.attributors.entry_of(method).id


def _methods(method: MethodArg, params: Mapping[str, Any] | None, smooth: Mapping[str, Any] | None = None):
    """``methods=`` for one call: ``{id: params}``, or the instance (wrapped in a noise tunnel for ``smooth``)."""
    if isinstance(method, str):
        return {method: {**dict(params or {}), **({"smooth": dict(smooth)} if smooth is not None else {})}}
    if params:
        raise AssertionError(f"{_id(method)}: give a typed method its parameters when you make it, not as params")
    return [method if smooth is None else NoiseTunnel(method, check_smoothing(_id(method), dict(smooth)))]


def _run(method: MethodArg, params: Mapping[str, Any] | None, model: nn.Module, inputs: Tensor, *,
         smooth: Mapping[str, Any] | None = None, **kw: Any):  # fmt: skip
    return explain(model, inputs, methods=_methods(method, params, smooth), targets=[0, 2], **kw)


def _layer(method: MethodArg, params: Mapping[str, Any] | None) -> str | None:
    """The layer the method's maps attribute to (its ``layer`` parameter), or None for the input."""
    given = (params or {}) if isinstance(method, str) else method.params()
    return given.get("layer")


def _output_shape(model: nn.Module, inputs: Tensor, layer: str) -> tuple[int, ...]:
    """The shape per sample of what the module ``layer`` returns for ``inputs``, seen by a hook of this suite's own."""
    seen: list[tuple[int, ...]] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, a, out: seen.append(tuple(out.shape[1:])))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        handle.remove()
    if len(seen) != 1:
        raise AssertionError(f"layer {layer!r} ran {len(seen)} times; the suite checks layers that run once")
    return seen[0]


def check_shape(method_id: str, params=None, model=None, inputs=None) -> None:
    """Maps have dims (sample, target, channel, y, x), the inputs' sizes, and finite values; maps of a layer
    (those with a ``layer`` attribute) have the layer's output shape per sample, on dims named after the
    method, and name the layer the method was given. (A CAM's ``layer=`` picks the layer it weighs; its
    maps are of the input.)"""
    model, inputs = (model, inputs) if model is not None else default_case()
    ds = _run(method_id, params, model, inputs)
    name = _id(method_id)
    var = ds[name]
    layer = var.attrs.get("layer")
    if layer is not None and layer != _layer(method_id, params):
        raise AssertionError(f"{name}: maps of layer {layer!r} for a method given layer {_layer(method_id, params)!r}")
    per_sample = tuple(inputs.shape[1:]) if layer is None else _output_shape(model, inputs, layer)
    own = ("channel", "y", "x") if layer is None else _layer_dims(name, len(per_sample))
    if var.dims != ("sample", "target", *own):
        raise AssertionError(f"{name}: dims {var.dims}")
    if var.shape != (inputs.shape[0], 2, *per_sample):
        raise AssertionError(f"{name}: shape {var.shape} for inputs {tuple(inputs.shape)}, expected maps {per_sample}")
    if not np.isfinite(var.values).all():
        raise AssertionError(f"{name}: maps hold NaN or Inf")


def _layer_dims(method: str, rank: int) -> tuple[str, ...]:
    """The dims of a method's maps of a layer with ``rank`` dims per sample, as the stored results name them."""
    names = {1: ("unit",), 3: ("channel", "y", "x")}.get(rank) or tuple(f"unit{i}" for i in range(rank))
    return tuple(f"{method}_{d}" for d in names)


def check_determinism(method_id: str, params=None, model=None, inputs=None) -> None:
    """Two runs with the same pass size give identical maps.

    (``batch_size="auto"`` picks the fastest measured size, so reruns agree to rounding only;
    :func:`check_batch_invariance` bounds that.)
    """
    model, inputs = (model, inputs) if model is not None else default_case()
    a = _run(method_id, params, model, inputs, passes=2)[_id(method_id)].values
    b = _run(method_id, params, model, inputs, passes=2)[_id(method_id)].values
    if not np.array_equal(a, b):
        raise AssertionError(f"{_id(method_id)}: two runs differ by up to {np.abs(a - b).max()}")


def check_batch_invariance(
    method_id: str, params=None, model=None, inputs=None, rtol: float = 1e-7, atol: float = 1e-9
) -> None:
    """Maps do not depend on the batch size."""
    model, inputs = (model, inputs) if model is not None else default_case()
    whole = _run(method_id, params, model, inputs)[_id(method_id)].values
    for batch_size in (1, 3):
        part = _run(method_id, params, model, inputs, passes=batch_size)[_id(method_id)].values
        if not np.allclose(whole, part, rtol=rtol, atol=atol):
            raise AssertionError(
                f"{_id(method_id)}: batch_size={batch_size} changes maps by up to {np.abs(whole - part).max()}"
            )


def check_model_untouched(method_id: str, params=None, model=None, inputs=None) -> None:
    """The model comes back exactly as it went in: weights, modes, flags, hooks, grads."""
    model, inputs = (model, inputs) if model is not None else default_case()
    model.train()
    before = model_state(model)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the training-mode warning is expected here
        _run(method_id, params, model, inputs)
    assert_model_unchanged(before, model)
    model.eval()


def check_per_sample_targets(method_id: str, params=None, model=None, inputs=None) -> None:
    """Classes given per sample (captum's ``target=y``) give the maps of those classes given to all samples."""
    model, inputs = (model, inputs) if model is not None else default_case()
    n = inputs.shape[0]
    classes = torch.arange(n) % 3
    slots = explain(model, inputs, methods=_methods(method_id, params), targets=classes, passes=2)
    dense = explain(model, inputs, methods=_methods(method_id, params), targets=[0, 1, 2], passes=2)
    var = slots[_id(method_id)]
    if var.dims != ("sample", "slot", *dense[_id(method_id)].dims[2:]) or var.shape[1] != 1:
        raise AssertionError(f"{_id(method_id)}: per-sample targets gave dims {var.dims} and shape {var.shape}")
    expected = dense[_id(method_id)].values[np.arange(n), classes.numpy()]
    if not np.allclose(var.values[:, 0], expected, rtol=1e-7, atol=1e-9, equal_nan=True):
        raise AssertionError(
            f"{_id(method_id)}: per-sample targets differ from the same classes explained for every sample "
            f"by up to {np.nanmax(np.abs(var.values[:, 0] - expected))}"
        )


def check_noise_tunnel(method_id: str, params=None, model=None, inputs=None) -> None:
    """``smooth=`` works on the method: one noise-free copy gives the method's own maps, and smoothed
    maps do not depend on the pass size (a copy's items may be split between passes)."""
    model, inputs = (model, inputs) if model is not None else default_case()
    plain = _run(method_id, params, model, inputs, passes=64)[_id(method_id)].values
    still = {"samples": 1, "stdev": 0.0}
    once = _run(method_id, params, model, inputs, passes=64, smooth=still)[_id(method_id)].values
    if not np.allclose(once, plain, rtol=1e-7, atol=1e-9):
        raise AssertionError(
            f"{_id(method_id)}: smooth with one noise-free copy differs from the plain maps by up to "
            f"{np.abs(once - plain).max()}; attribute() and finish() must treat each sample's rows on their own."
        )
    noisy = {"samples": 3, "stdev": 0.1}
    whole = _run(method_id, params, model, inputs, passes=64, smooth=noisy)[_id(method_id)].values
    part = _run(method_id, params, model, inputs, passes=1, smooth=noisy)[_id(method_id)].values
    if not np.allclose(whole, part, rtol=1e-7, atol=1e-9):
        raise AssertionError(
            f"{_id(method_id)}: smoothed maps change with the pass size by up to {np.abs(whole - part).max()}"
        )


def check_rng_untouched(method_id: str, params=None, model=None, inputs=None) -> None:
    """The method leaves torch's global random state as it was: draws from it would make maps depend
    on what ran before, and shift the caller's own later draws (seed a ``torch.Generator`` instead,
    e.g. from ``Batch.key``)."""
    model, inputs = (model, inputs) if model is not None else default_case()
    before = torch.get_rng_state()
    gpus = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    _run(method_id, params, model, inputs)
    if not torch.equal(before, torch.get_rng_state()):
        raise AssertionError(f"{_id(method_id)}: changed torch's global random state (torch.get_rng_state())")
    after = torch.cuda.get_rng_state_all() if gpus is not None else []
    if gpus is not None and any(not torch.equal(a, b) for a, b in zip(gpus, after, strict=True)):
        raise AssertionError(f"{_id(method_id)}: changed torch's global CUDA random state")


class _Boom(RuntimeError):
    pass


def check_cleanup_after_error(method_id: str, params=None, model=None, inputs=None) -> None:
    """A failure in the middle of a method leaves no hook behind and restores the model."""
    model, inputs = (model, inputs) if model is not None else default_case()
    leaf = [m for m in model.modules() if not list(m.children())][-1]
    state = {"calls": 0}

    def explode(module: nn.Module, args: Any, output: Any) -> None:
        state["calls"] += 1
        if state["calls"] > 1:  # let the score pass through, fail inside the method
            raise _Boom("forced failure")

    handle = leaf.register_forward_hook(explode)
    before = model_state(model)
    try:
        _run(method_id, params, model, inputs)
    except Exception as exc:  # the failure itself, or xai_bench's error about the model that it caused
        if not _caused_by(exc, _Boom):
            raise
    else:
        if state["calls"] > 1:
            raise AssertionError(f"{_id(method_id)}: the forced failure did not propagate") from None
        # A method that runs the model no more than once (an edge filter, say) cannot fail in the middle.
    finally:
        after_hooks = hook_counts(model)
        handle.remove()
    if before["hooks"] != after_hooks:
        raise AssertionError(f"{_id(method_id)}: hooks left after an error: {_diff(before['hooks'], after_hooks)}")
    assert_model_unchanged({**before, "hooks": hook_counts(model)}, model)


def _caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    while exc is not None:
        if isinstance(exc, kind):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


CHECKS: dict[str, Callable[..., None]] = {
    "shape": check_shape,
    "determinism": check_determinism,
    "batch_invariance": check_batch_invariance,
    "per_sample_targets": check_per_sample_targets,
    "noise_tunnel": check_noise_tunnel,
    "model_untouched": check_model_untouched,
    "rng_untouched": check_rng_untouched,
    "cleanup_after_error": check_cleanup_after_error,
}


def check_attributor(
    method_id: MethodArg,
    params: Mapping[str, Any] | None = None,
    *,
    model: nn.Module | None = None,
    inputs: Tensor | None = None,
) -> None:
    """Run every conformance check on ``method_id`` (an id with its ``params``, or a typed method such as
    ``MyMethod(k=2)`` of a registered class); raise ``AssertionError`` on the first failure."""
    for check in CHECKS.values():
        check(method_id, params, model, inputs)


def check_metric(metric_id: str | Metric, params: Mapping[str, Any] | None = None) -> None:
    """Run the conformance checks on a metric (an id with its ``params``, or a typed metric of a registered
    class): labelled results in both target layouts, values only where maps exist, determinism,
    independence of the pass size, and the model left unchanged."""
    from ..api.evaluating import evaluate

    model, inputs = default_case()
    masks = torch.zeros(inputs.shape[0], 1, *inputs.shape[2:], dtype=torch.bool)
    masks[:, :, 2:7, 3:9] = True
    if isinstance(metric_id, str):
        chosen: Any = {metric_id: dict(params or {})}
    else:
        chosen, metric_id = [metric_id], registry.metrics.entry_of(metric_id).id
    dense = explain(model, inputs, methods=["saliency", "deeplift"], targets=[0, 2])
    slots = explain(model, inputs, methods=["saliency", "deeplift"], targets=[[1], [0, 3], []])
    for layout, maps in (("dense", dense), ("slot", slots)):
        before = model_state(model)
        first = evaluate(maps, model=model, metrics=chosen, masks=masks, passes=2)
        assert_model_unchanged(before, model)
        again = evaluate(maps, model=model, metrics=chosen, masks=masks, passes=2)
        whole = evaluate(maps, model=model, metrics=chosen, masks=masks, passes=64)
        names = [n for n in first.data_vars if first[n].attrs.get("metric") == metric_id]
        if not names:
            raise AssertionError(
                f"{metric_id}: no result variable on the {layout} layout (skipped: {first.attrs['skipped']})"
            )
        column = "target" if layout == "dense" else "slot"
        for name in names:
            var = first[name]
            if var.dims[:2] != ("sample", column):
                raise AssertionError(f"{metric_id}: {name} has dims {var.dims}, expected ('sample', {column!r}, ...)")
            method = var.attrs["method"]
            missing = np.isnan(maps[method].values[:, :, 0, 0, 0])
            values = var.values.reshape(*var.shape[:2], -1)
            if not np.isnan(values[missing]).all():
                raise AssertionError(f"{metric_id}: {name} has values for pairs without a map ({layout} layout)")
            if not np.array_equal(values, again[name].values.reshape(values.shape), equal_nan=True):
                raise AssertionError(f"{metric_id}: two runs of {name} differ")
            if not np.allclose(values, whole[name].values.reshape(values.shape), rtol=1e-6, atol=1e-9, equal_nan=True):
                raise AssertionError(f"{metric_id}: {name} changes with the pass size")
