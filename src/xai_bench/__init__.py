"""xai_bench: interpretability for PyTorch image classifiers, correct on every model and batch size.

The public API. The package is layered, top to bottom (imports only go down; see
docs/architecture.md): ``app`` and ``testing``; ``scale``; ``api`` (the front doors); ``engine``
and ``plugins``; the methods (``attributors``, ``profilers``, ``surgery``); ``storage``; ``core``.
Nothing inside the package imports this module.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("xai-bench")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

from .api.evaluating import evaluate, list_metrics
from .api.explaining import explain, methods
from .api.layers import study_layers
from .api.profiling import profile
from .app.report import report
from .app.viz import overlay
from .attributors.base import Attribution, Attributor, Batch, Cost, OneTarget, Prepared
from .core.errors import (
    DeviceMismatchError,
    DuplicateMethodError,
    InvalidInputError,
    InvalidParameterError,
    InvalidTargetError,
    ModelOutputError,
    PluginError,
    StoreDamagedError,
    StoreExistsError,
    StoreMismatchError,
    SurgeryError,
    UnknownMethodError,
    UnknownParameterError,
    XaiBenchError,
    XaiBenchWarning,
)
from .core.hookspecs import hookimpl
from .metrics.base import Metric
from .plugins.manager import get_plugin_manager, list_plugins
from .profilers.base import GlobalProfiler
from .scale.dataset_run import RunSummary, run
from .storage.datasets import select_map
from .storage.zarr_io import StoreReport, open_maps, save_maps, verify_store

__all__ = [
    "Attribution",
    "Attributor",
    "Batch",
    "Cost",
    "DeviceMismatchError",
    "DuplicateMethodError",
    "GlobalProfiler",
    "Metric",
    "InvalidInputError",
    "InvalidParameterError",
    "InvalidTargetError",
    "ModelOutputError",
    "OneTarget",
    "PluginError",
    "RunSummary",
    "StoreDamagedError",
    "StoreExistsError",
    "StoreMismatchError",
    "Prepared",
    "SurgeryError",
    "UnknownMethodError",
    "UnknownParameterError",
    "XaiBenchError",
    "XaiBenchWarning",
    "__version__",
    "evaluate",
    "explain",
    "get_plugin_manager",
    "hookimpl",
    "list_metrics",
    "list_plugins",
    "methods",
    "open_maps",
    "overlay",
    "profile",
    "report",
    "run",
    "save_maps",
    "select_map",
    "StoreReport",
    "verify_store",
    "study_layers",
]
