"""xai_bench: interpretability for PyTorch image classifiers, correct on every model and batch size."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("xai-bench")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

from .attributors.base import Attribution, Attributor, Cost, Prepared
from .errors import (
    DeviceMismatchError,
    DuplicateMethodError,
    InvalidInputError,
    InvalidParameterError,
    InvalidTargetError,
    ModelOutputError,
    PluginError,
    StoreMismatchError,
    SurgeryError,
    UnknownMethodError,
    UnknownParameterError,
    XaiBenchError,
    XaiBenchWarning,
)
from .explain import explain, methods
from .hookspecs import hookimpl
from .layers import study_layers
from .plugins import get_plugin_manager, list_plugins
from .profile import profile
from .profilers.base import GlobalProfiler
from .results import open_maps, save_maps
from .run import RunSummary, run

__all__ = [
    "Attribution",
    "Attributor",
    "Cost",
    "DeviceMismatchError",
    "DuplicateMethodError",
    "GlobalProfiler",
    "InvalidInputError",
    "InvalidParameterError",
    "InvalidTargetError",
    "ModelOutputError",
    "PluginError",
    "RunSummary",
    "StoreMismatchError",
    "Prepared",
    "SurgeryError",
    "UnknownMethodError",
    "UnknownParameterError",
    "XaiBenchError",
    "XaiBenchWarning",
    "__version__",
    "explain",
    "get_plugin_manager",
    "hookimpl",
    "list_plugins",
    "methods",
    "open_maps",
    "profile",
    "run",
    "save_maps",
    "study_layers",
]
