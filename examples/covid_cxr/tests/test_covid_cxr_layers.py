"""The study's profiled layers, found in all five architectures, also inside the wrapper that
normalises for ImageNet weights: every model gets its profile, none is skipped."""

from __future__ import annotations

import pytest
import torch
import xarray as xr
from covid_cxr.interpret import GROUPS, profile_models
from covid_cxr.layers import LABELS, study_layers
from covid_cxr.models import MIN_SIZE, Normalized, build
from covid_cxr.prepared import PreparedSet
from torch import nn

from xai_bench import Passes, profile

#: Channels at first_block, stage2, stage3 and last_block.
CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "inception_v3": (256, 288, 768, 2048),
    "inception_resnet_v2": (320, 320, 1088, 1536),
    "densenet161": (384, 768, 2112, 2208),
}


def _wrapped(name: str) -> nn.Module:
    """What the study trains with ``pretrained``: the model inside ``Normalized``, random weights here."""
    torch.manual_seed(0)
    return Normalized(build(name, 3, image_size=MIN_SIZE[name])).eval()


@pytest.mark.parametrize("name", list(CHANNELS))
def test_the_layers_are_found_inside_the_normalising_wrapper_and_profiled(name):
    model = _wrapped(name)
    layers = study_layers(model)
    assert list(layers) == list(LABELS)
    modules = [spec[0] if isinstance(spec, tuple) else spec for label, spec in layers.items() if label != "input"]
    assert all(m.startswith("model.") for m in modules), modules
    x = torch.rand(4, 3, MIN_SIZE[name], MIN_SIZE[name], generator=torch.Generator().manual_seed(1))
    ds = profile(
        model,
        x,
        layers=layers,
        groups=torch.tensor([0, 1, 0, 1]),
        group_names=["a", "b"],
        passes=Passes(progress=False),
    )
    assert list(ds["layer"].values) == list(LABELS[1:])  # dead feature maps: every layer but the input
    assert ds["input_group_mean"].shape == (2, 3, MIN_SIZE[name], MIN_SIZE[name])
    for label, channels in zip(LABELS[1:], CHANNELS[name], strict=True):
        assert ds[f"{label}_group_mean"].shape[:2] == (2, channels), label
        assert (ds[f"{label}_group_mean"].values >= 0).all(), label  # every layer is ReLU-activated
    assert ds["dead_share"].notnull().all()


def test_an_architecture_the_study_does_not_know_is_named():
    with pytest.raises(ValueError, match="Sequential holds none of them"):
        study_layers(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))


def test_profile_models_profiles_every_wrapped_model(tmp_path):
    names = ("resnet18", "inception_v3")
    n, size = 4, 75
    prepared = PreparedSet(
        images=torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)),
        targets=torch.zeros(n, 3), padding=torch.zeros(n, size, size, dtype=torch.bool), lesions=None,
        sample_ids=[f"s{i}" for i in range(n)], subjects=[f"p{i}" for i in range(n)], sources=["phantom"] * n,
        labels=[["COVID-19", "pneumonia", "viral"], ["healthy"], ["pneumonia", "bacterial"], ["healthy"]],
        outputs=("COVID-19", "pneumonia", "healthy"),
    )  # fmt: skip
    stores = profile_models({name: _wrapped(name) for name in names}, prepared, range(n), tmp_path, progress=False)
    assert set(stores) == set(names)
    for store in stores.values():
        ds = xr.open_zarr(store)
        assert list(ds["layer"].values) == list(LABELS[1:])
        assert list(ds["group"].values) == list(GROUPS)
