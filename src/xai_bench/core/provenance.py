"""Versions, model fingerprints and parameters recorded with every result."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
import weakref
from typing import Any

import torch
from torch import nn

_fingerprints: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], str]] = weakref.WeakKeyDictionary()


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


def model_fingerprint(model: nn.Module) -> str:
    """Hash of the model's class, parameter and buffer values (cached until a tensor changes)."""
    state = model.state_dict(keep_vars=True)
    # Tensor versions bump on every in-place update, so an unchanged key means unchanged weights.
    key = tuple((name, t.data_ptr(), t._version, tuple(t.shape)) for name, t in state.items())
    cached = _fingerprints.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    value = digest.hexdigest()
    _fingerprints[model] = (key, value)
    return value


def result_attrs(model: nn.Module, **fields: Any) -> dict[str, Any]:
    """The provenance every result carries (versions, model class and fingerprint), plus ``fields``."""
    return {
        **versions(),
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_fingerprint": model_fingerprint(model),
        **fields,
    }
