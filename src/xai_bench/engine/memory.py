"""Memory budgets and the probe that says how many images fit in one forward pass."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ..core.cache import cache_of
from ..core.errors import InvalidParameterError

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip
# Fraction of free memory the default budget takes: the rest is left to the runtime and the caller.
DEFAULT_FRACTION = 0.5


def parse_budget(budget: int | float | str | None, device: torch.device) -> int:
    """Return a budget in bytes from an int, a string such as ``"4GiB"``, or ``None`` (the default)."""
    if budget is None:
        # Rounded down to 256 MiB so that small changes in free memory do not change the plan.
        step = 256 * 2**20
        return max(step, int(DEFAULT_FRACTION * free_memory(device)) // step * step)
    if isinstance(budget, bool):
        raise InvalidParameterError(f"memory_budget must be bytes or a string like '4GiB', got {budget!r}.")
    if isinstance(budget, (int, float)):
        value = float(budget)
    elif isinstance(budget, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", budget)
        if not match or match.group(2).lower() not in _UNITS:
            raise InvalidParameterError(
                f"memory_budget {budget!r} is not a size; use bytes or a string like '512MiB', '4GiB' or '2GB'."
            )
        value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    else:
        raise InvalidParameterError(
            f"memory_budget must be bytes or a string like '4GiB', got {type(budget).__name__}."
        )
    if not math.isfinite(value) or value < 1:
        raise InvalidParameterError(f"memory_budget must be at least one byte, got {budget!r}.")
    return int(value)


def free_memory(device: torch.device) -> int:
    """Free memory on ``device``: the GPU's free bytes, or the RAM the OS reports available."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30  # no way to ask: assume a small machine


@dataclass(frozen=True)
class ImageCost:
    """Bytes one image costs in a forward pass: kept for backward, and at the peak without autograd."""

    saved: int
    forward_peak: int
    input: int
    output: object = None  # what the model returned for the image measured by this call, else None


def image_cost(model: nn.Module, example: Tensor, images: int = 1) -> ImageCost:
    """Measure what one image costs ``model`` (cached per module tree, input shape, dtype and device).

    ``images`` copies of ``example[:1]`` go through together, for models that need a batch of
    several (DeepLIFT's rewritten view takes inputs with their references); costs are per image.

    Counts the bytes autograd saves for the backward pass (parameters excluded: they do not grow
    with the batch), which works alike on CPU and GPU, and the largest module output as a bound
    on what a forward pass without autograd holds at once.
    """
    # Ids of freed modules are reused (a head swapped for a wider one): the shapes tell them apart.
    tensors = tuple((t.shape, t.dtype) for t in [*model.parameters(), *model.buffers()])
    key = (tuple(id(m) for m in model.modules()), tensors, tuple(example.shape[1:]), example.dtype, example.device,
           images)  # fmt: skip
    known = cache_of(model, "costs")
    if key in known:
        # The output belongs to the call that measured it: the model may compute another thing since.
        return replace(known[key], output=None)
    constants = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}
    alive: list[Tensor] = []  # keeps storages from being reused (and recounted) during the pass
    largest = [0]

    def pack(t: Tensor) -> None:
        storage = t.untyped_storage()
        if storage.data_ptr() not in constants:
            saved[storage.data_ptr()] = storage.nbytes()
        alive.append(t)
        # Never handing the tensor itself to autograd avoids a reference cycle (output -> grad_fn ->
        # saved output) that Python's garbage collector cannot see, which would keep every probed
        # activation alive; the probe never runs backward, so nothing needs unpacking.
        return None

    def track(module: nn.Module, args: object, output: object) -> None:
        if isinstance(output, Tensor):
            largest[0] = max(largest[0], output.untyped_storage().nbytes())

    handles = [m.register_forward_hook(track) for m in model.modules() if not list(m.children())]
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, _never_unpacked):
            batch = example[:1].detach().expand(images, *example.shape[1:]).clone()
            output = model(batch.requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    alive.clear()
    input_bytes = example[:1].numel() * example.element_size()
    per_image = sum(saved.values()) // images
    # Without autograd a pass holds a module's input and output and some workspace: three outputs' worth.
    cost = ImageCost(
        saved=per_image + input_bytes,
        forward_peak=3 * largest[0] // images + input_bytes,
        input=input_bytes,
        output=output.detach() if isinstance(output, Tensor) else output,
    )
    known[key] = cost
    return cost


def _never_unpacked(packed: None) -> Tensor:
    raise RuntimeError("the memory probe's graph is for counting only; do not call backward on it")


# On CPU a pass is also kept to this much activation memory: measured on DenseNet161 at 512 px,
# passes of several GiB ran slower per image than passes of one to four images (page faults and
# cache misses grow with the pass), while a GPU gains from the largest batch that fits.
CPU_PASS_BYTES = 2**30


def bytes_per_image(cost: ImageCost, *, backward: bool) -> int:
    """What one more image in a pass costs: activations kept (or the forward peak) plus the input twice."""
    return max(1, (cost.saved if backward else cost.forward_peak) + 2 * cost.input)


def images_within(cost: ImageCost, budget: int, *, backward: bool) -> int:
    """How many images ``budget`` bytes hold (may be 0)."""
    return budget // bytes_per_image(cost, backward=backward)


def images_per_pass(cost: ImageCost, budget: int, *, backward: bool, device: torch.device | None = None) -> int:
    """How many images one pass may hold within ``budget`` bytes (at least one)."""
    if device is not None and device.type == "cpu":
        budget = min(budget, CPU_PASS_BYTES)
    return max(1, images_within(cost, budget, backward=backward))


def is_out_of_memory(exc: BaseException) -> bool:
    """True for allocation failures a smaller batch can fix."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
