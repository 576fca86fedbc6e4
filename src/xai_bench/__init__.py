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
from .api.explaining import explain, list_methods, methods
from .api.layers import study_layers
from .api.passes import Passes
from .api.profiling import list_profilers, profile
from .api.targets import Targets
from .app.report import report
from .app.viz import overlay
from .attributors.base import Attribution, Attributor, Batch, Cost, OneTarget, Prepared
from .attributors.cam import AblationCAM, EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, XGradCAM
from .attributors.deeplift import DeepLift
from .attributors.gradients import InputXGradient, Saliency
from .attributors.guided_backprop import GuidedBackprop
from .attributors.integrated_gradients import IntegratedGradients
from .attributors.layer import InternalInfluence, LayerConductance
from .attributors.lrp import LRP
from .attributors.occlusion import Occlusion
from .attributors.perturbation import FeatureAblation, KernelShap, Lime, ShapleyValueSampling
from .core.cache import forget
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
from .metrics.completeness import Completeness
from .metrics.complexity import Complexity, Sparseness
from .metrics.localisation import (
    EnergyPointingGame,
    PointingGame,
    RelevanceMass,
    RelevanceRank,
    TopKIntersection,
    TopKIoU,
)
from .metrics.perturbation import Deletion, Insertion
from .metrics.randomisation import DataRandomisation, ParameterRandomisation
from .metrics.robustness import (
    AvgSensitivity,
    Infidelity,
    LocalLipschitzEstimate,
    MaxSensitivity,
    RelativeInputStability,
)
from .plugins.manager import get_plugin_manager, list_plugins
from .profilers.base import GlobalProfiler
from .scale.dataset_run import RunSummary, run
from .storage import accessor as _accessor  # noqa: F401  (registers ds.xai)
from .storage.datasets import select_map
from .storage.zarr_io import StoreReport, open_maps, save_maps, verify_store

__all__ = [
    "DeepLift",
    "InputXGradient",
    "Saliency",
    "GuidedBackprop",
    "IntegratedGradients",
    "Occlusion",
    "LRP",
    "InternalInfluence",
    "LayerConductance",
    "GradCAM",
    "GradCAMPlusPlus",
    "XGradCAM",
    "LayerCAM",
    "ScoreCAM",
    "AblationCAM",
    "EigenCAM",
    "FeatureAblation",
    "ShapleyValueSampling",
    "KernelShap",
    "Lime",
    "Completeness",
    "EnergyPointingGame",
    "PointingGame",
    "RelevanceMass",
    "RelevanceRank",
    "TopKIntersection",
    "TopKIoU",
    "Deletion",
    "Insertion",
    "DataRandomisation",
    "ParameterRandomisation",
    "MaxSensitivity",
    "AvgSensitivity",
    "LocalLipschitzEstimate",
    "RelativeInputStability",
    "Infidelity",
    "Sparseness",
    "Complexity",
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
    "Passes",
    "PluginError",
    "RunSummary",
    "StoreDamagedError",
    "StoreExistsError",
    "StoreMismatchError",
    "Prepared",
    "SurgeryError",
    "Targets",
    "UnknownMethodError",
    "UnknownParameterError",
    "XaiBenchError",
    "XaiBenchWarning",
    "__version__",
    "evaluate",
    "explain",
    "forget",
    "get_plugin_manager",
    "hookimpl",
    "list_methods",
    "list_metrics",
    "list_plugins",
    "list_profilers",
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
