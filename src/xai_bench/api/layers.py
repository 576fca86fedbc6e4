"""Choose the layers whose activations a global profile records."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.errors import InvalidParameterError, deprecated, did_you_mean
from ..profilers.base import INPUT

Transform = Callable[[Tensor], Tensor]
LayersArg = Sequence[str] | Mapping[str, "str | tuple[str, str | Transform]"] | Callable[[str, nn.Module], bool]


@dataclass(frozen=True)
class Layer:
    """A labelled tap on a module's output (or on the input), with an optional transform."""

    label: str
    module: str  # dotted module path, or "input"
    transform: Transform | None = None


_TRANSFORMS: dict[str, Transform] = {"relu": torch.relu}


def _transform(label: str, spec: str | Transform | None) -> Transform | None:
    if spec is None or callable(spec):
        return spec
    if spec in _TRANSFORMS:
        return _TRANSFORMS[spec]
    raise InvalidParameterError(
        f"layer {label!r}: unknown transform {spec!r}; use one of {sorted(_TRANSFORMS)} or a callable."
    )


def resolve_layers(model: nn.Module, layers: LayersArg) -> list[Layer]:
    """Turn names, ``{label: name or (name, transform)}`` or a predicate into checked :class:`Layer` taps."""
    names = dict(model.named_modules())
    if callable(layers) and not isinstance(layers, Mapping):
        picked = [Layer(name, name) for name, module in names.items() if name and layers(name, module)]
        if not picked:
            raise InvalidParameterError("the layer predicate matched no module.")
        return picked
    if isinstance(layers, str):
        layers = [layers]
    if isinstance(layers, Mapping):
        items = list(layers.items())
    elif isinstance(layers, Sequence):
        items = [(name, name) for name in layers]
    else:
        raise InvalidParameterError(
            "layers must be module names, a dict {label: name or (name, transform)} or a predicate(name, module)."
        )
    if not items:
        raise InvalidParameterError("layers is empty; name at least one module, or 'input'.")
    result = []
    for label, spec in items:
        module, transform = (spec, None) if isinstance(spec, str) else tuple(spec)
        if module != INPUT and module not in names:
            raise InvalidParameterError(
                f"the model has no module {module!r}.{did_you_mean(module, [n for n in names if n])}"
            )
        if not isinstance(label, str) or not label:
            raise InvalidParameterError(f"layer labels must be non-empty strings, got {label!r}.")
        result.append(Layer(label, module, _transform(label, transform)))
    if len({layer.label for layer in result}) != len(result):
        raise InvalidParameterError("layer labels must be unique.")
    return result


def study_layers(model: nn.Module, *, include_input: bool = True) -> dict[str, str | tuple[str, str]]:
    """Deprecated: the COVID-19 study's picks (ResNet, after its first and last residual blocks; DenseNet,
    the ReLU-activated outputs of its first and last dense blocks; plus the input itself) belong to the
    study: ``covid_cxr.layers.study_layers``, which also knows the Inception models, or ``layers=``
    with the module names.
    """
    deprecated(
        "xai_bench.study_layers()",
        "covid_cxr.layers.study_layers() (examples/covid_cxr), or name the modules in profile(layers=...)",
    )
    names = dict(model.named_modules())
    picks: dict[str, str | tuple[str, str]] = {INPUT: INPUT} if include_input else {}
    if all(f"layer{i}" in names for i in (1, 4)):  # torchvision ResNet
        last = max(int(n.split(".")[1]) for n in names if n.startswith("layer4.") and n.count(".") == 1)
        picks.update({"first_block": "layer1.0", "last_block": f"layer4.{last}"})
        return picks
    if "features.denseblock1" in names and "features.norm5" in names:  # torchvision DenseNet
        # The first block's output is normalised and ReLU-activated by transition1; the last
        # block's by norm5 and the functional ReLU in DenseNet.forward.
        picks.update({"first_block": ("features.transition1.norm", "relu"), "last_block": ("features.norm5", "relu")})
        return picks
    raise InvalidParameterError(
        f"study_layers knows torchvision ResNets and DenseNets, not {type(model).__name__}; "
        "pass module names to layers=... instead (see model.named_modules())."
    )
