"""Checks made before any method runs, and the guard that gives the user's model back unchanged."""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..core.errors import (
    DeviceMismatchError,
    InvalidInputError,
    InvalidParameterError,
    ModelOutputError,
    XaiBenchError,
    warn,
)
from ..core.locks import running

# Per model: the calls using it now, and every module's ``training`` flag from before the first.
_in_use: weakref.WeakKeyDictionary[nn.Module, tuple[int, list[tuple[nn.Module, bool]]]] = weakref.WeakKeyDictionary()
_modes = threading.Lock()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode and restore every module's ``training`` flag afterwards.

    Calls in several threads share the switch: the first records the flags, the last restores
    them (else a call that began while another had switched to eval would "restore" eval). The
    call holds :func:`~xai_bench.core.locks.running` throughout, so no torch.fx trace patches
    torch under it. Gradients need autograd: a call made under ``torch.inference_mode()`` runs
    outside it (inputs made there are inference tensors: clone them inside).
    """
    with running(), torch.inference_mode(False):
        with _modes:
            users, flags = _in_use.get(model, (0, [(m, m.training) for m in model.modules()]))
            _in_use[model] = (users + 1, flags)
            model.eval()
        try:
            if any(training for _, training in flags):
                warn(
                    f"{type(model).__name__} is in training mode: dropout and batch-norm statistics would make "
                    "results depend on the batch. Running it in eval mode; its mode is restored afterwards.",
                )
            _warn_batch_statistics(model)
            yield model
        finally:
            with _modes:
                users, flags = _in_use.pop(model)
                if users > 1:
                    _in_use[model] = (users - 1, flags)
                else:
                    for module, training in flags:
                        module.training = training


def check_device(device: object) -> torch.device | None:
    """``device`` as a torch.device (``"cuda"`` meaning the current GPU), or None; an unusable one is an error."""
    if device is None:
        return None
    try:
        chosen = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError) as exc:
        raise InvalidParameterError(
            f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}."
        ) from exc
    if chosen.type not in ("cpu", "cuda") and not _available(chosen.type):
        raise InvalidParameterError(
            f"device={device!r}: {chosen.type} is not a device this torch can run on here; use 'cpu' or 'cuda'."
        )
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidParameterError(f"device={device!r}, but no CUDA GPU is available here; use 'cpu'.")
        index = torch.cuda.current_device() if chosen.index is None else chosen.index
        if index >= torch.cuda.device_count():
            raise InvalidParameterError(f"device={device!r}, but there are {torch.cuda.device_count()} GPUs.")
        chosen = torch.device("cuda", index)
    return chosen


def _available(kind: str) -> bool:
    """Whether an accelerator other than CUDA (mps, xpu, ...) is usable; never 'meta', which holds no values."""
    backend = getattr(torch, kind, None) if kind != "meta" else None
    return bool(backend is not None and getattr(backend, "is_available", lambda: False)())


@contextlib.contextmanager
def on_device(model: nn.Module, device: torch.device | None) -> Iterator[None]:
    """Run ``model`` on ``device`` for the call and move it back afterwards (no-op if it is there already).

    Moving copies the values exactly, and the parameter objects stay the same (an optimizer that
    holds them keeps working), so the model comes back bit for bit where it was.
    """
    tensors = [*model.parameters(), *model.buffers()]
    homes = {t.device for t in tensors}
    if device is None or not tensors or homes == {device}:
        yield
        return
    if len(homes) > 1:
        raise DeviceMismatchError(
            f"the model's parameters are on several devices ({', '.join(sorted(map(str, homes)))}); device= moves "
            "a model that lives on one. Leave device=None and put the inputs where the model's first layer is."
        )
    home = homes.pop()
    try:
        model.to(device)  # inside: a move that fails halfway (out of memory) is undone too
        yield
    finally:
        model.to(home)


def batch_statistics(model: nn.Module) -> list[str]:
    """Names of the batch norms that normalise by the batch even in eval mode (no running statistics)."""
    return [
        name or type(model).__name__
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (not m.track_running_stats or m.running_mean is None)
    ]


def _warn_batch_statistics(model: nn.Module) -> None:
    """Batch norms without running statistics normalise by the batch even in eval mode."""
    norms = batch_statistics(model)
    if norms:
        warn(
            f"{', '.join(map(repr, norms[:5]))}{' and more' if len(norms) > 5 else ''}: batch norm without running "
            "statistics (track_running_stats=False) normalises each pass by its own batch, so maps and scores "
            "depend on which images share a pass (DeepLIFT also mixes inputs with their references). Give the "
            "model running statistics, or replace these layers, for results that belong to each image.",
        )


def check_inputs(model: nn.Module, inputs: object, sample_ids: Sequence[Any] | None = None) -> Tensor:
    """Return ``inputs`` if it is a finite (N, C, H, W) float tensor the model can take, else raise
    (naming bad samples by ``sample_ids`` where given, else by position)."""
    if not isinstance(inputs, Tensor):
        raise InvalidInputError(f"inputs must be a torch.Tensor of shape (N, C, H, W), got {type(inputs).__name__}.")
    if inputs.dim() != 4:
        hint = " For a single image, pass x.unsqueeze(0)." if inputs.dim() == 3 else ""
        raise InvalidInputError(f"inputs must have 4 dimensions (N, C, H, W), got shape {tuple(inputs.shape)}.{hint}")
    if inputs.shape[0] == 0:
        raise InvalidInputError("inputs hold no samples (N = 0).")
    if not inputs.is_floating_point():
        raise InvalidInputError(f"inputs must be a floating-point tensor, got {inputs.dtype}; use inputs.float().")
    first = next((t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()), None)
    if first is not None:
        if first.device != inputs.device:
            raise DeviceMismatchError(
                f"inputs are on {inputs.device} but the model is on {first.device}; move one of them, "
                f"e.g. inputs.to('{first.device}')."
            )
        if first.dtype != inputs.dtype:
            raise InvalidInputError(
                f"inputs are {inputs.dtype} but the model's parameters are {first.dtype}; "
                f"convert with inputs.to({first.dtype})."
            )
    bad = ~torch.isfinite(inputs)
    if bad.any():
        rows = bad.flatten(1).any(1).nonzero().flatten().tolist()
        if sample_ids is not None and len(sample_ids) == len(inputs):
            rows = [sample_ids[i] for i in rows]
        more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
        raise InvalidInputError(
            f"inputs contain NaN or Inf values (samples {rows[:10]}{more}); clean or drop them first."
        )
    return inputs


def check_outputs(outputs: object, n: int) -> Tensor:
    """Return ``outputs`` if they are (N, classes) logits for N inputs, else raise."""
    if not isinstance(outputs, Tensor):
        raise ModelOutputError(
            f"the model returned {type(outputs).__name__}, expected a (N, classes) tensor of logits. "
            "Wrap the model so forward() returns only the logits (e.g. inception's aux outputs)."
        )
    if outputs.dim() != 2 or outputs.shape[0] != n:
        raise ModelOutputError(
            f"the model returned shape {tuple(outputs.shape)} for a batch of {n}, expected ({n}, classes) "
            "logits. Flatten or select the class scores in a wrapper module."
        )
    if not outputs.is_floating_point():
        raise ModelOutputError(
            f"the model returned {outputs.dtype} outputs; attributions need floating-point logits to take gradients "
            "of. Return the logits before any rounding or arg-max (e.g. drop a final .long() or .argmax())."
        )
    if not torch.isfinite(outputs).all():
        raise ModelOutputError("the model returned NaN or Inf logits for these inputs.")
    return outputs


def probe(model: nn.Module, inputs: Tensor) -> int:
    """Check on one image that ``model`` takes ``inputs`` and returns logits; return the class count.

    The same forward pass measures what an image costs in memory (:func:`xai_bench.engine.memory.image_cost`),
    which is remembered per module tree, input shape, dtype and device; the outputs are checked on
    every call of this function (a head replaced in place, or swapped for one whose ``id`` is reused,
    changes them). ``explain`` calls it again whenever the model's fingerprint or module state changes.
    """
    from ..engine.memory import image_cost, is_out_of_memory

    try:
        cost = image_cost(model, inputs)
        output = cost.output
        if output is None:  # the cost is remembered, the class count never is: a head may have been swapped
            with torch.no_grad():
                output = model(inputs[:1])
    except XaiBenchError:
        raise
    except Exception as exc:  # a model may raise anything: an assertion on the input size, a shape error, ...
        if is_out_of_memory(exc):
            raise
        # Which layer an input reaches first is only known by running it: the model's own error
        # names it (a stem registered after the head, a model that expands grey to RGB inside).
        hint = (
            " For grayscale images on an RGB model use x.expand(-1, 3, -1, -1)."
            if "channels" in str(exc) and inputs.shape[1] == 1
            else ""
        )
        raise InvalidInputError(
            f"the model's forward failed on inputs of shape {tuple(inputs[:1].shape)}: "
            f"{type(exc).__name__}: {str(exc).strip() or '(no message)'}.{hint}"
        ) from exc
    return check_outputs(output, 1).shape[1]
