"""Versions, model fingerprints and parameters recorded with every result."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
import zlib
from typing import Any

import torch
from torch import nn


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def versions() -> dict[str, str]:
    """Versions of xai_bench and of what its numbers depend on."""
    return {
        "xai_bench_version": package_version("xai-bench"),
        "torch_version": torch.__version__,
        "captum_version": package_version("captum"),
        "python_version": platform.python_version(),
    }


def tensor_checksum(t: torch.Tensor) -> bytes:
    """CRC-32 of a tensor's bytes, read in place (no copy on the CPU).

    Any change to the values changes it but for a chance of 2**-32 per tensor. It guards
    against stale caches, not against forgery, and reads at over 6 GB/s, which is why the model
    fingerprint recomputes it on every call instead of trusting a cache keyed on tensor versions
    (writes through ``.data`` bump no version).
    """
    raw = t.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
    return zlib.crc32(raw).to_bytes(4, "little")


def sample_key(sample_id: Any) -> int:
    """A non-negative 63-bit integer from a sample id's text alone: the same in every call and process."""
    digest = hashlib.blake2b(str(sample_id).encode(), digest_size=8, person=b"xai-bench-key")
    return int.from_bytes(digest.digest(), "little") >> 1


def image_checksum(image: torch.Tensor) -> int:
    """A non-zero signed 64-bit checksum of one input image (its shape, dtype and values)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{image.dtype}:{tuple(image.shape)}:".encode())
    digest.update(tensor_checksum(image))
    return int.from_bytes(digest.digest(), "little", signed=True) or 1


def model_fingerprint(model: nn.Module) -> str:
    """Hash of the model's class and every parameter and buffer value, recomputed on every call."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        digest.update(tensor_checksum(tensor))
    return digest.hexdigest()


def module_state(model: nn.Module) -> tuple[Any, ...]:
    """The plain Python state of every module: types, flags and numbers, and replaced methods.

    What torch.fx can bake into a traced graph besides the weights: a changed flag
    (``m.use_relu = False``) or a ``forward`` assigned to an instance shows up here.
    """
    state = []
    for name, module in model.named_modules():
        attrs = tuple(
            sorted(
                (key, _plain(value))
                for key, value in vars(module).items()
                if not key.startswith("_")
                and not isinstance(value, (nn.Module, torch.Tensor))
                and (callable(value) or isinstance(value, (bool, int, float, str, tuple, type(None))))
            )
        )
        state.append((name, type(module), attrs))
    return tuple(state)


def _plain(value: Any) -> Any:
    """``value`` itself where it compares by value (numbers, strings, tuples of them), else its identity."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, tuple):
        try:
            hash(value)
        except TypeError:
            return id(value)
        return value
    return id(value)


def result_attrs(model: nn.Module, *, fingerprint: str | None = None, **fields: Any) -> dict[str, Any]:
    """The provenance every result carries (versions, model class and fingerprint), plus ``fields``."""
    return {
        **versions(),
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_fingerprint": fingerprint or model_fingerprint(model),
        **fields,
    }
