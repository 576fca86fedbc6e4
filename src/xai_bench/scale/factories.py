"""Build a model from a factory (a callable or ``"module:function"``) and, optionally, a checkpoint of its weights."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.errors import InvalidParameterError

ModelArg = nn.Module | str | Callable[[], nn.Module]


def load_factory(spec: str | Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """Return a model factory from a callable or a ``"package.module:function"`` string."""
    if callable(spec):
        return spec
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise InvalidParameterError(f"model factory {spec!r} must look like 'package.module:function'.")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise InvalidParameterError(
            f"cannot load model factory {spec!r}: {exc}. Run from the folder that holds {module_name!r}, or add "
            "that folder to PYTHONPATH."
        ) from exc
    except AttributeError as exc:
        raise InvalidParameterError(f"cannot load model factory {spec!r}: {exc}") from exc
    if not callable(factory):
        raise InvalidParameterError(f"model factory {spec!r} is not callable.")
    return factory


def build_model(model: ModelArg) -> nn.Module:
    """Return ``model`` itself, or what its factory builds."""
    if isinstance(model, nn.Module):
        return model
    factory = load_factory(model)
    if isinstance(model, str):  # named on a command line: its failure is the user's code, said in one line
        try:
            built = factory()
        except Exception as exc:
            raise InvalidParameterError(f"the model factory {model!r} raised {type(exc).__name__}: {exc}") from exc
    else:
        built = factory()
    if not isinstance(built, nn.Module):
        raise InvalidParameterError(f"the model factory returned {type(built).__name__}, not a torch.nn.Module.")
    return built


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a state dict (plain, or under 'state_dict' / 'model') into ``model``, strictly, without pickles."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"No checkpoint at {os.fspath(path)!r}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for unreadable or unsafe files
        raise InvalidParameterError(f"cannot read checkpoint {os.fspath(path)!r}: {exc}") from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict):
        raise InvalidParameterError(f"checkpoint {os.fspath(path)!r} holds {type(state).__name__}, not a state dict.")
    try:
        result = model.load_state_dict(_strip_prefix(state), strict=False)
    except RuntimeError as exc:  # shapes that do not match: torch lists every one on its own line
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise InvalidParameterError(
            f"checkpoint {os.fspath(path)!r} does not fit {type(model).__name__}: {first}"
        ) from exc
    if result.missing_keys or result.unexpected_keys:
        missing = ", ".join(result.missing_keys[:5]) or "none"
        unexpected = ", ".join(result.unexpected_keys[:5]) or "none"
        raise InvalidParameterError(
            f"checkpoint {os.fspath(path)!r} does not match {type(model).__name__}: missing keys {missing}; "
            f"unexpected keys {unexpected}."
        )
    return model


def _strip_prefix(state: dict[str, Any]) -> dict[str, Any]:
    # Checkpoints saved from nn.DataParallel prefix every key with 'module.'.
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


class FactoryWithCheckpoint:
    """A picklable model factory: ``factory()``, the checkpoint's weights, eval mode (for dask workers too)."""

    def __init__(self, factory: Any, checkpoint: str | None) -> None:
        self.factory = factory
        self.checkpoint = checkpoint

    def __call__(self) -> nn.Module:
        model = build_model(self.factory)
        model = load_checkpoint(model, self.checkpoint) if self.checkpoint else model
        # Whoever names a factory on the command line cannot call .eval() on what it builds.
        return model.eval()

    def __repr__(self) -> str:
        return f"FactoryWithCheckpoint({self.factory!r}, {self.checkpoint!r})"
