"""The study's five CNNs with multilabel heads: ResNet18, ResNet34, InceptionV3, InceptionResNetV2, DenseNet161."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ARCHITECTURES = ("resnet18", "resnet34", "inception_v3", "inception_resnet_v2", "densenet161")
#: Display names, in the paper's Table 2 spelling.
NAMES = {
    "resnet18": "ResNet18",
    "resnet34": "ResNet34",
    "inception_v3": "InceptionV3",
    "inception_resnet_v2": "InceptionResNetV2",
    "densenet161": "DenseNet161",
}
#: The smallest input each takes (InceptionV3's and InceptionResNetV2's stems shrink the image by 32 without padding).
MIN_SIZE = {"resnet18": 32, "resnet34": 32, "inception_v3": 75, "inception_resnet_v2": 75, "densenet161": 32}


#: InceptionV3's auxiliary head pools a 17 x 17 map with a 5 x 5 window: it needs 299-pixel inputs.
AUX_MIN_SIZE = 299


def build(name: str, num_labels: int = 3, *, pretrained: bool = False, image_size: int | None = None) -> nn.Module:
    """One of :data:`ARCHITECTURES` with a ``num_labels``-way head (logits; the loss applies the sigmoid).

    ``pretrained`` loads ImageNet weights (torchvision's, timm's for InceptionResNetV2), which must be
    on this machine or downloadable; the head is new either way. Inputs are expected normalised with
    ImageNet's statistics when ``pretrained``. InceptionV3 keeps its auxiliary head (trained with
    0.4 x its loss, as the paper) for ``image_size`` of at least 299, and drops it below, where the
    head cannot run.
    """
    builders: dict[str, Callable[[bool, int], nn.Module]] = {
        "resnet18": _resnet("resnet18"),
        "resnet34": _resnet("resnet34"),
        "inception_v3": _inception_v3,
        "inception_resnet_v2": _inception_resnet_v2,
        "densenet161": _densenet161,
    }
    if name not in builders:
        raise ValueError(f"unknown architecture {name!r}; the study's are {', '.join(ARCHITECTURES)}.")
    model = builders[name](pretrained, num_labels)
    if name == "inception_v3" and image_size is not None and image_size < AUX_MIN_SIZE:
        model.aux_logits, model.AuxLogits = False, None
    return model


def _resnet(name: str) -> Callable[[bool, int], nn.Module]:
    def make(pretrained: bool, num_labels: int) -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, name)(weights="IMAGENET1K_V1" if pretrained else None)
        model.fc = nn.Linear(model.fc.in_features, num_labels)
        return model

    return make


def _inception_v3(pretrained: bool, num_labels: int) -> nn.Module:
    import torchvision

    # transform_input=False: inputs are normalised by the data pipeline, as for the other four.
    model = torchvision.models.inception_v3(
        weights="IMAGENET1K_V1" if pretrained else None, aux_logits=True, transform_input=False,
        init_weights=not pretrained,
    )  # fmt: skip
    model.fc = nn.Linear(model.fc.in_features, num_labels)
    model.AuxLogits.fc = nn.Linear(model.AuxLogits.fc.in_features, num_labels)
    return model


def _inception_resnet_v2(pretrained: bool, num_labels: int) -> nn.Module:
    import timm

    return timm.create_model("inception_resnet_v2", pretrained=pretrained, num_classes=num_labels)


def _densenet161(pretrained: bool, num_labels: int) -> nn.Module:
    import torchvision

    model = torchvision.models.densenet161(weights="IMAGENET1K_V1" if pretrained else None)
    model.classifier = nn.Linear(model.classifier.in_features, num_labels)
    return model


def training_loss(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits; InceptionV3 in training mode adds 0.4 x its auxiliary head's loss (as the paper)."""
    out = model(images)
    criterion = nn.BCEWithLogitsLoss()
    if hasattr(out, "aux_logits") and out.aux_logits is not None:
        return criterion(out.logits, targets) + 0.4 * criterion(out.aux_logits, targets)
    return criterion(out, targets)


class Normalized(nn.Module):
    """``model`` on inputs in [0, 1], normalised inside: maps, baselines and padding stay in image units."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...] = (0.485, 0.456, 0.406),
                 std: tuple[float, ...] = (0.229, 0.224, 0.225)) -> None:  # fmt: skip
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)
