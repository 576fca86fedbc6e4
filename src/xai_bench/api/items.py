"""What an item of a user's data is, read one way by ``run``, ``evaluate`` and ``profile``.

An item (of a map-style data set, or a batch of a loader) is an image tensor (or numpy array); a tuple or list
``(image, label, ...)`` as torchvision's data sets and ``TensorDataset`` yield; or a dict with
``image`` (or ``images``) and optionally ``groups`` (or ``label`` or ``labels``) and ``id``, as
:class:`~xai_bench.scale.image_folder.ImageFolder` yields. Sample ids come from a dict's ``id``
or the data set's ``sample_ids`` attribute, never from a tuple: its second place is a label.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.errors import InvalidInputError

_IMAGE_KEYS = ("image", "images")
_LABEL_KEYS = ("groups", "label", "labels")  # a profile's groups before a class label


@dataclass(frozen=True)
class Item:
    """One item: its image (or batch of images), its label (ground truth, or None) and its id (or None)."""

    image: Any
    label: Any = None
    id: Any = None


def read_item(item: Any, where: str) -> Item:
    """``item`` as an :class:`Item`; ``where`` names it in the error for anything else."""
    if isinstance(item, (Tensor, np.ndarray)):
        return Item(torch.as_tensor(item))
    if isinstance(item, Mapping):
        image = next((item[k] for k in _IMAGE_KEYS if k in item), None)
        if image is not None:
            label = next((item[k] for k in _LABEL_KEYS if k in item), None)
            return Item(image, label, item.get("id"))
    elif isinstance(item, (tuple, list)) and item and isinstance(item[0], (Tensor, np.ndarray)):
        return Item(torch.as_tensor(item[0]), item[1] if len(item) > 1 else None)
    raise InvalidInputError(
        f"{where} is a {type(item).__name__}; expected an image tensor, (image, label, ...) or a dict with 'image' "
        "(and 'label' or 'id')."
    )
