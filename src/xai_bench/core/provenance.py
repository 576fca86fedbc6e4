"""Versions, model fingerprints and parameters recorded with every result."""

from __future__ import annotations

import enum
import functools
import hashlib
import importlib.metadata
import platform
import types
import zlib
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module


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
    """Hash of the model's module tree (:func:`module_tree`) and every parameter and buffer value.

    Recomputed on every call. The same model built in another process has the same fingerprint.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    digest.update(module_tree(model).encode())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        digest.update(tensor_checksum(tensor))
    return digest.hexdigest()


# What torch keeps on every module (parameters, buffers, children, hooks, flags): covered apart.
_TORCH_STATE = frozenset(vars(nn.Module()))
_HOOKS = (
    "_forward_pre_hooks",
    "_forward_hooks",
    "_backward_pre_hooks",
    "_backward_hooks",
)
_GLOBAL_HOOKS = (
    "_global_forward_pre_hooks",
    "_global_forward_hooks",
    "_global_backward_pre_hooks",
    "_global_backward_hooks",
)
_BY_REPR = frozenset({bool, int, float, complex, str, bytes, type(None)})
_DEPTH = 4  # how deep attributes holding objects are followed


def module_tree(model: nn.Module) -> str:
    """Every module's name, type, hooks and Python attributes, as text that is the same in every process.

    What a forward depends on besides the parameters and buffers: the modules and their order
    (``model.act = nn.GELU()``), numbers and flags, lists, dicts and tensors that are not
    registered (checksummed, so changes in place show), functions assigned to a module, and
    forward and backward hooks in the order they run (functions by qualified name, a hash of
    their code and the constants they close over). The ``training`` flag is left out: every method runs in eval mode.
    """
    lines = []
    for name, module in model.named_modules():
        attrs = [
            f"{key}={_describe(value, _DEPTH)}"
            for key, value in sorted(vars(module).items())
            if key not in _TORCH_STATE
        ]
        hooks = [
            f"{kind}=[{', '.join(_describe(fn, _DEPTH) for fn in getattr(module, kind, {}).values())}]"
            for kind in _HOOKS
            if getattr(module, kind, None)
        ]
        lines.append(f"{name}:{type(module).__module__}.{type(module).__qualname__}({'; '.join(attrs + hooks)})")
    # Hooks registered for every module (torch.nn.modules.module.register_module_forward_hook) run too.
    shared = [
        f"{kind}=[{', '.join(_describe(fn, _DEPTH) for fn in getattr(torch_module, kind).values())}]"
        for kind in _GLOBAL_HOOKS
        if getattr(torch_module, kind, None)
    ]
    if shared:
        lines.append(f"(hooks on every module)({'; '.join(shared)})")
    return "\n".join(lines)


def _describe(value: Any, depth: int) -> str:
    """``value`` as text that changes when it does, without addresses (which differ between processes)."""
    kind = type(value)
    if kind in _BY_REPR:
        return repr(value)
    if kind is tuple and all(type(v) in _BY_REPR for v in value):  # sizes, strides, paddings
        return f"tuple{list(value)!r}"
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return repr(value)
    if isinstance(value, torch.Tensor):
        return f"tensor({value.dtype}, {tuple(value.shape)}, {tensor_checksum(value).hex()})"
    if isinstance(value, (torch.dtype, torch.device, torch.Size, enum.Enum)):
        return repr(value)
    if isinstance(value, type):
        return f"<class {_qualname(value)}>"
    if isinstance(value, nn.Module):
        # Held outside the tree (registered children are lines of their own): its kind only.
        return f"<{_qualname(type(value))}>"
    if depth <= 0:
        return f"<{_qualname(type(value))}>"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}[{', '.join(_describe(v, depth - 1) for v in value)}]"
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__}{{{', '.join(sorted(_describe(v, depth - 1) for v in value))}}}"
    if isinstance(value, dict):
        items = (f"{_describe(k, depth - 1)}: {_describe(v, depth - 1)}" for k, v in value.items())
        return f"{type(value).__name__}{{{', '.join(items)}}}"
    if isinstance(value, functools.partial):
        return (
            f"partial({_describe(value.func, depth - 1)}, {_describe(value.args, depth - 1)}, "
            f"{_describe(value.keywords, depth - 1)})"
        )
    if isinstance(value, types.MethodType):
        return f"method {_qualname(value.__func__)}"  # its instance is the module (or another object) itself
    if isinstance(value, types.FunctionType):
        # What it closes over, by value where that cannot change behind its back: a hook that records
        # into a list or dict would otherwise change the fingerprint on every forward pass.
        cells = [_describe_constant(cell.cell_contents, depth - 1) for cell in value.__closure__ or () if _filled(cell)]
        defaults = [_describe_constant(v, depth - 1) for v in value.__defaults__ or ()]
        code = _code_digest(value.__code__)
        return f"function {_qualname(value)} {code}({', '.join(cells)}; {', '.join(defaults)})"
    if callable(value) and not hasattr(value, "__dict__"):
        return f"<{_qualname(value) if hasattr(value, '__qualname__') else _qualname(type(value))}>"
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict):
        return f"{_qualname(type(value))}{_describe(state, depth - 1)}"
    return f"<{_qualname(type(value))}>"


def _code_digest(code: types.CodeType) -> str:
    """A hash of a function's bytecode, constants and names: two lambdas that differ in a literal differ."""
    digest = hashlib.blake2b(code.co_code, digest_size=8)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            text = _code_digest(const)
        elif isinstance(const, frozenset):  # `x in {"a", "b"}`: its order follows the process's string hashes
            text = repr(sorted(map(repr, const)))
        else:
            text = repr(const)
        digest.update(text.encode())
    digest.update(repr(code.co_names).encode())
    return digest.hexdigest()


def _describe_constant(value: Any, depth: int) -> str:
    """``value`` described where it is a constant (numbers, text, tuples, functions, tensors), else its type."""
    constant = type(value) in _BY_REPR or isinstance(
        value, (tuple, frozenset, torch.Tensor, torch.dtype, torch.device, enum.Enum, type, types.FunctionType)
    )
    return _describe(value, depth) if constant else f"<{_qualname(type(value))}>"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def module_state(model: nn.Module) -> tuple[Any, ...]:
    """The plain Python state of every module: types, flags and numbers, replaced methods and hooks.

    What torch.fx can bake into a traced graph besides the weights, by identity in this process:
    a changed flag (``m.use_relu = False``), a ``forward`` assigned to an instance, or a hook
    added or removed (each handle's number is new) shows up here.
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
        hooks = tuple((key, id(fn)) for kind in _HOOKS for key, fn in getattr(module, kind, {}).items())
        state.append((name, type(module), attrs, hooks))
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
