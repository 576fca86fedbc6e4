"""The layers the study profiles, for each of its five architectures, found through any wrapper."""

from __future__ import annotations

from torch import nn

#: Layer labels in network order. ``first_block`` and ``last_block`` are the layers of the NAP figure
#: (Fig. 9: ResNet18 after its first and last residual connections, DenseNet161 the ReLU-activated
#: outputs of its first and last dense blocks); ``stage2`` and ``stage3`` are the outputs of the
#: middle stages, where the paper reports its dead feature maps ("the middle layer", not named further).
LABELS = ("input", "first_block", "stage2", "stage3", "last_block")


def _resnet(model: nn.Module) -> dict[str, str | tuple[str, str]]:
    last = len(model.layer4) - 1
    return {"first_block": "layer1.0", "stage2": "layer2", "stage3": "layer3", "last_block": f"layer4.{last}"}


def _densenet(model: nn.Module) -> dict[str, str | tuple[str, str]]:
    # A dense block's output is normalised and ReLU-activated by the next transition (the last one
    # by norm5 and the functional ReLU in DenseNet.forward).
    return {
        "first_block": ("features.transition1.norm", "relu"),
        "stage2": ("features.transition2.norm", "relu"),
        "stage3": ("features.transition3.norm", "relu"),
        "last_block": ("features.norm5", "relu"),
    }


def _inception_v3(model: nn.Module) -> dict[str, str | tuple[str, str]]:
    # Each Mixed block ends in ReLU-activated branches, concatenated.
    return {"first_block": "Mixed_5b", "stage2": "Mixed_5d", "stage3": "Mixed_6e", "last_block": "Mixed_7c"}


def _inception_resnet_v2(model: nn.Module) -> dict[str, str | tuple[str, str]]:
    # timm's Block35 and Block17 end in a ReLU; conv2d_7b is convolution, batch norm and ReLU.
    return {"first_block": "mixed_5b", "stage2": "repeat", "stage3": "repeat_1", "last_block": "conv2d_7b"}


_PICKS = {
    "ResNet": _resnet,
    "DenseNet": _densenet,
    "Inception3": _inception_v3,
    "InceptionResnetV2": _inception_resnet_v2,
}


def study_layers(model: nn.Module, *, include_input: bool = True) -> dict[str, str | tuple[str, str]]:
    """``{label: module}`` (or ``(module, "relu")``) for :func:`xai_bench.profile`: the study's layers of
    the first torchvision ResNet, DenseNet or InceptionV3, or timm InceptionResNetV2, inside ``model``,
    named by their full path in ``model`` (a model wrapped for normalisation keeps its layers).

    Raises ``ValueError`` naming the model's class for any other architecture.
    """
    for path, module in model.named_modules():
        pick = _PICKS.get(type(module).__name__)
        if pick is None:
            continue
        prefix = f"{path}." if path else ""
        picks: dict[str, str | tuple[str, str]] = {"input": "input"} if include_input else {}
        for label, spec in pick(module).items():
            picks[label] = (prefix + spec[0], spec[1]) if isinstance(spec, tuple) else prefix + spec
        return picks
    raise ValueError(
        f"the study profiles torchvision ResNets, DenseNets and InceptionV3 and timm's InceptionResNetV2; "
        f"{type(model).__name__} holds none of them."
    )
