"""The paper's Table 1: each model's trainable parameters, the FLOPs and MACs of one image's forward pass and
the peak memory of one forward + backward pass, measured at the study's input size.

FLOPs are torch's own count, ``torch.utils.flop_counter.FlopCounterMode``: 2 per multiply-add of the
convolutions and matrix products (``aten.convolution``, ``mm``, ``addmm``, ``bmm``, ``baddbmm`` and attention),
so MACs = FLOPs / 2 exactly. It leaves out everything else: biases, batch norm, activations, pooling, additions
and concatenations.

Memory is the model's parameters and buffers plus the peak of what the pass allocates above what was allocated
before it (input, activations, gradients, workspaces), with the model in eval mode (batch norm from its running
statistics, which a training-mode pass would update) and gradients taken for every trainable parameter with
``torch.autograd.grad`` (which leaves ``.grad`` alone). On CUDA the peak is ``torch.cuda.max_memory_allocated``
after ``torch.cuda.reset_peak_memory_stats``. On CPU it is the running sum of the allocations and frees that
PyTorch's CPU allocator reports to ``torch.profiler`` (``profile_memory=True``) during the pass: a measurement
of that allocator, not of the process (the Python heap and libraries' own mallocs are not in it). xai_bench's
own CPU probe (``xai_bench.engine.memory.image_cost``) is not used: it sums the tensors autograd saves for
backward, an estimate of activations without the gradients and temporaries. Other devices: not measured.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.utils.flop_counter
from torch import nn

from .models import NAMES, build

GB = 10**9  # the table's GB: 10^9 bytes


@dataclass(frozen=True)
class Complexity:
    """One model at one input size: trainable parameters, forward FLOPs of one image, peak memory in bytes
    of one forward + backward pass (None where not measured)."""

    parameters: int
    flops: int
    memory: int | None

    @property
    def macs(self) -> int:
        return self.flops // 2  # the counter counts 2 per multiply-add, nothing else: always even


def trainable_parameters(model: nn.Module) -> int:
    """How many parameters training updates (those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_flops(model: nn.Module, size: int, *, channels: int = 3) -> int:
    """FLOPs of one forward pass of one ``channels`` x ``size`` x ``size`` image, model in eval mode."""
    x = _images(model, 1, channels, size)
    with _evaluating(model), torch.no_grad(), torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def memory_method(device: torch.device | str) -> str:
    """How :func:`peak_memory` measures on ``device``, for the table's caption."""
    kind = torch.device(device).type
    if kind == "cuda":
        return "torch.cuda.max_memory_allocated"
    if kind == "cpu":
        return "the allocations PyTorch's CPU allocator reports to torch.profiler"
    return f"not measured on {kind}"


def peak_memory(model: nn.Module, size: int, *, batch_size: int = 1, channels: int = 3) -> int | None:
    """Peak bytes of one forward + backward pass of ``batch_size`` images on the device the model is on: its
    parameters and buffers plus the peak the pass allocates (see the module's docstring); None on a device
    other than CPU and CUDA."""
    device = _device(model)
    if device.type not in ("cpu", "cuda"):
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters to take gradients of.")

    def step() -> None:  # everything it allocates is freed when it returns
        x = _images(model, batch_size, channels, size)
        out = model(x)
        loss = nn.functional.binary_cross_entropy_with_logits(out, torch.zeros_like(out))  # the study's loss
        torch.autograd.grad(loss, params)

    with _evaluating(model), torch.enable_grad():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            step()
            torch.cuda.synchronize(device)
            above = torch.cuda.max_memory_allocated(device) - before
        else:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                step()
            # "[memory]" events are the allocator's reports: +bytes allocated, -bytes freed. Torch's own parser
            # reads them the same way (torch.autograd.profiler); the public tables only sum them per op.
            events = [e for e in prof.profiler.kineto_results.events()
                      if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]  # fmt: skip
            sizes = [e.nbytes() for e in sorted(events, key=lambda e: e.start_ns())]  # in time order
            above = max(itertools.accumulate(sizes), default=0)
    weights = sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers()))
    return weights + above


def measure(model: nn.Module, size: int, *, batch_size: int = 1, channels: int = 3) -> Complexity:
    """Parameters, forward FLOPs and peak memory of ``model`` on the device it is on; the model is left as it
    was (its modes restored, no hooks, ``.grad`` untouched)."""
    return Complexity(trainable_parameters(model), forward_flops(model, size, channels=channels),
                      peak_memory(model, size, batch_size=batch_size, channels=channels))  # fmt: skip


def write_table1(models: Sequence[str], folder: str | Path, *, size: int, num_labels: int,
                 device: str = "cpu", batch_size: int = 1) -> tuple[Path, Path]:  # fmt: skip
    """Build each of ``models`` (:func:`covid_cxr.models.build`, untrained: the counts depend on the
    architecture alone) with ``num_labels`` outputs for ``size``-pixel inputs, measure it on ``device`` and
    write ``table1.csv`` and ``table1.md`` into ``folder``. Returns the two paths."""
    import pandas as pd

    rows = []
    for name in models:
        # One model at a time: five never sit in memory together.
        model = build(name, num_labels, image_size=size).to(device)
        c = measure(model, size, batch_size=batch_size)
        del model
        rows.append({"model": NAMES.get(name, name), "architecture": name, "parameters": c.parameters,
                     "flops": c.flops, "macs": c.macs, "memory_bytes": c.memory, "size": size,
                     "batch_size": batch_size, "outputs": num_labels, "device": str(device),
                     "memory_method": memory_method(device), "torch": torch.__version__})  # fmt: skip
    frame = pd.DataFrame(rows)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = folder / "table1.csv", folder / "table1.md"
    frame.to_csv(csv_path, index=False)
    md_path.write_text(_markdown(frame, size=size, num_labels=num_labels, device=str(device),
                                 batch_size=batch_size), encoding="utf-8")  # fmt: skip
    return csv_path, md_path


def table1_is_for(path: str | Path, models: Sequence[str], *, size: int, num_labels: int, device: str = "cpu",
                  batch_size: int = 1) -> bool:  # fmt: skip
    """Whether ``path`` (a ``table1.csv``) holds these models measured with these settings (then it need not
    be measured again)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        return False
    frame = pd.read_csv(path)
    wanted = {"size": size, "outputs": num_labels, "device": str(device), "batch_size": batch_size}
    return list(frame.get("architecture", [])) == list(models) and all(
        column in frame and (frame[column].astype(str) == str(value)).all() for column, value in wanted.items()
    )


def _markdown(frame, *, size: int, num_labels: int, device: str, batch_size: int) -> str:
    method = memory_method(device)
    measured = not method.startswith("not measured")
    caption = (
        f"Table 1: the models as the study builds them ({num_labels} outputs) at {size} x {size} px. Parameters: "
        "trainable. GFLOPs and MACs: one forward pass of one image in eval mode, counted by torch's "
        "FlopCounterMode: 2 FLOPs per multiply-add of the convolutions and matrix products (MACs = FLOPs / 2); "
        "biases, batch norm, activations, pooling and additions are not counted. Memory: peak of one forward + "
        f"backward pass (batch size {batch_size}, eval mode, gradients of every trainable parameter) on "
        f"{device}, the weights included; GB = 10^9 bytes" + (f"; measured as {method}." if measured else ".")
    )
    lines = [caption, "", f"| model | parameters | GFLOPs | MACs (x10^9) | memory, forward + backward (GB, {device}) |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for row in frame.itertuples():
        memory = f"{row.memory_bytes / GB:.3f}" if measured else method
        lines.append(f"| {row.model} | {row.parameters:,} | {row.flops / 1e9:.3f} | {row.macs / 1e9:.3f} | {memory} |")
    return "\n".join(lines) + "\n"


def _device(model: nn.Module) -> torch.device:
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _images(model: nn.Module, count: int, channels: int, size: int) -> torch.Tensor:
    tensor = next(model.parameters(), None)
    dtype = tensor.dtype if tensor is not None and tensor.is_floating_point() else torch.float32
    return torch.zeros(count, channels, size, size, device=_device(model), dtype=dtype)


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """The model in eval mode, then every module's own flag put back (``model.train(flag)`` would give every
    submodule the root's)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
