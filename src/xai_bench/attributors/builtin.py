"""Registers the built-in attribution methods through the public hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.hookspecs import hookimpl

#: The six local methods of the study, in the order figures show them.
BUILTIN_METHODS = (
    "occlusion",
    "saliency",
    "input_x_gradient",
    "guided_backprop",
    "integrated_gradients",
    "deeplift",
)


@hookimpl
def register_attributors(register: Callable[..., Any]) -> None:
    from .cam import CAM_METHODS
    from .deeplift import DeepLift
    from .gradient_shap import GradientShap
    from .gradients import InputXGradient, Saliency
    from .guided_backprop import Deconvolution, GuidedBackprop
    from .integrated_gradients import IntegratedGradients
    from .layer import LAYER_METHODS
    from .lrp import LRP_METHODS
    from .occlusion import Occlusion
    from .perturbation import PERTURBATION_METHODS

    for cls in (Occlusion, Saliency, InputXGradient, GuidedBackprop, IntegratedGradients, DeepLift):
        register(cls)
    for cls in (Deconvolution, GradientShap, *LAYER_METHODS, *LRP_METHODS, *CAM_METHODS, *PERTURBATION_METHODS):
        register(cls)
