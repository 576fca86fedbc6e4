from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import xai_bench
from xai_bench import InvalidInputError, InvalidParameterError, open_maps, profile
from xai_bench.app.viz import plot_dead_feature_maps, plot_naps
from xai_bench.testing import model_state
from xai_bench.testing.conformance import assert_model_unchanged

matplotlib.use("Agg")

SIZE = 16
REGION = (slice(2, 6), slice(9, 14))


class RegionModel(nn.Module):
    """Channel 0 sees only REGION; channel 1 only the rest; channel 2 is constant."""

    def __init__(self) -> None:
        super().__init__()
        inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        inside[REGION] = True
        self.register_buffer("inside", inside)
        self.feat = nn.Identity()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        g = x.mean(1, keepdim=True)
        f = torch.cat([torch.relu(g * self.inside), torch.relu(g * ~self.inside), torch.full_like(g, 0.5)], 1)
        return self.head(self.feat(f).mean((2, 3)))


def region_data(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.rand(n, 3, SIZE, SIZE, generator=gen)
    labels = torch.arange(n) % 2
    x[labels == 1, :, REGION[0], REGION[1]] += 0.7  # class 1 ("lesion") lights up the region
    return x, labels


def test_naps_single_out_the_channel_that_sees_the_class_region():
    model = RegionModel().eval()
    x, labels = region_data(40)
    ds = profile(model, x, layers=["feat"], groups=labels, group_names=["healthy", "lesion"], passes=7)
    assert int(ds["feat_top"].values[0]) == 0
    assert ds["feat_score"].values[0] > 10 * ds["feat_score"].values[1:].max()
    lesion = ds["feat"].sel(group="lesion").isel(feat_channel=0).values
    inside = np.zeros((SIZE, SIZE), dtype=bool)
    inside[REGION] = True
    assert (lesion[inside] > 0.2).all()
    assert np.abs(lesion[~inside]).max() < 1e-12
    np.testing.assert_allclose(ds["feat"].sum("group").values, 0, atol=1e-12)  # NAPs are centred over groups
    assert list(ds["group_count"].values) == [20, 20]


def test_dead_share_is_exact_for_zeroed_channels():
    torch.manual_seed(0)  # the other channels are alive for these weights (a random draw could kill one)
    conv = nn.Conv2d(3, 8, 3)
    with torch.no_grad():
        conv.weight.normal_()
        conv.bias.fill_(1.0)
        for c in (1, 4, 6):
            conv.weight[c] = 0
            conv.bias[c] = 0
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(1, 3, 8, 8))  # materialise the lazy layer
    model.eval()
    x = torch.rand(12, 3, 8, 8)
    ds = profile(model, x, layers={"conv": "1"}, groups=torch.zeros(12, dtype=torch.long), group_names=["all"])
    assert ds["dead_share"].sel(layer="conv").item() == 3 / 8
    assert ds.attrs["dead_share_overall"] == 3 / 8
    assert list(np.flatnonzero(ds["conv_dead"].values)) == [1, 4, 6]
    # A higher threshold counts weakly active maps as dead too.
    strict = profile(
        model,
        x,
        layers={"conv": "1"},
        groups=torch.zeros(12, dtype=torch.long),
        group_names=["all"],
        profilers={"dead_feature_maps": {"threshold": 1e6}},
    )
    assert strict["dead_share"].item() == 1.0


def test_average_input_nap_shows_padding_bands():
    gen = torch.Generator().manual_seed(0)
    x = 0.4 + 0.2 * torch.rand(30, 1, 20, 20, generator=gen)
    labels = torch.arange(30) % 2
    x[labels == 1, :, :4] = 0  # padded to square: dark bands at top and bottom
    x[labels == 1, :, -4:] = 0
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    ds = profile(model.eval(), x, layers=["input"], groups=labels, group_names=["other", "padded"], profilers=["naps"])
    nap = ds["input"].sel(group="padded").isel(input_channel=0).values
    assert (nap[:4] < -0.2).all() and (nap[-4:] < -0.2).all()
    assert np.abs(nap[4:-4]).max() < 0.05
    plot_naps(ds, "input", top=1).savefig("/dev/null", format="png")


def test_multilabel_groups_count_a_sample_in_each_of_its_groups():
    model = RegionModel().eval()
    x, _ = region_data(6)
    member = torch.tensor([[1, 0], [1, 1], [0, 1], [1, 1], [0, 0], [1, 0]], dtype=torch.bool)
    ds = profile(model, x, layers=["feat"], groups=member, group_names=["covid", "viral"], profilers=["naps"])
    assert list(ds["group_count"].values) == [4, 3]
    acts = torch.cat(
        [
            torch.relu(x.mean(1, keepdim=True) * model.inside),
            torch.relu(x.mean(1, keepdim=True) * ~model.inside),
            torch.full((6, 1, SIZE, SIZE), 0.5),
        ],
        1,
    ).double()
    np.testing.assert_allclose(ds["feat_group_mean"].sel(group="viral").values, acts[member[:, 1]].mean(0).numpy())


def test_streaming_equals_in_memory_and_batches_of_pairs_or_dicts():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    ).eval()
    x = torch.randn(23, 3, 10, 10)
    labels = torch.randint(0, 3, (23,), generator=torch.Generator().manual_seed(1))
    whole = profile(model, x, layers={"a": "1", "b": "2"}, groups=labels, group_names=["p", "q", "r"], passes=64)
    pairs = [(x[i : i + 4], labels[i : i + 4]) for i in range(0, 23, 4)]
    streamed = profile(model, pairs, layers={"a": "1", "b": "2"}, group_names=["p", "q", "r"])
    dicts = [{"image": x[i : i + 5], "label": labels[i : i + 5]} for i in range(0, 23, 5)]
    from_dicts = profile(model, dicts, layers={"a": "1", "b": "2"}, group_names=["p", "q", "r"])
    for other in (streamed, from_dicts):
        # float32 activations are summed per batch in float32: batches of 4, 5 and 23 round differently.
        xr.testing.assert_allclose(whole.drop_attrs(), other.drop_attrs(), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        acts = model[1](model[0](x)).double()
    expected = torch.stack([acts[labels == g].mean(0) for g in range(3)])
    expected = expected - expected.mean(0, keepdim=True)
    np.testing.assert_allclose(whole["a"].values, expected.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "size", "shapes"),
    [
        ("resnet18", 64, {"first_block": (64, 16, 16), "last_block": (512, 2, 2)}),
        ("densenet161", 64, {"first_block": (384, 16, 16), "last_block": (2208, 2, 2)}),
    ],
)
def test_study_models_profile_shapes(name, size, shapes):
    torchvision = pytest.importorskip("torchvision")
    model = getattr(torchvision.models, name)(weights=None, num_classes=2)
    x = torch.rand(4, 3, size, size)
    before = model_state(model.eval())
    with pytest.deprecated_call(match=r"xai_bench.study_layers\(\) is deprecated.*covid_cxr.layers.study_layers"):
        layers = xai_bench.study_layers(model)  # the old spelling still works for one release
    ds = profile(model, x, layers=layers, groups=torch.tensor([0, 1, 0, 1]), group_names=["a", "b"])
    assert_model_unchanged(before, model)
    for layer, shape in shapes.items():
        assert ds[layer].dims == ("group", f"{layer}_channel", f"{layer}_y", f"{layer}_x")
        assert ds[layer].shape == (2, *shape)
        assert ds[f"{layer}_top"].shape == (2,)
        assert ds[f"{layer}_dead"].shape == (shape[0],)
    assert ds["input"].shape == (2, 3, size, size)
    assert list(ds["layer"].values) == ["first_block", "last_block"]
    # Both DenseNet picks are ReLU-activated: nothing negative.
    assert (ds["first_block_group_mean"].values >= 0).all()


def test_profile_store_round_trip_and_figures(tmp_path):
    model = RegionModel().eval()
    x, labels = region_data(10)
    ds = profile(
        model,
        x,
        layers=["input", "feat"],
        groups=labels,
        group_names=["healthy", "lesion"],
        store=tmp_path / "naps.zarr",
    )
    xr.testing.assert_identical(open_maps(tmp_path / "naps.zarr").load(), ds)
    fig = plot_naps(ds, "feat", top=2)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2 * 3 and len(fig.axes) == len(panels) + 1  # one colourbar: the NAPs share a scale
    fig.savefig(tmp_path / "naps.png")
    plot_dead_feature_maps(ds).savefig(tmp_path / "dead.png")
    assert (tmp_path / "naps.png").stat().st_size > 5000


def test_profile_errors():
    model = RegionModel().eval()
    x, labels = region_data(4)
    with pytest.raises(InvalidParameterError, match="no module 'fet'. Did you mean 'feat'"):
        profile(model, x, layers=["fet"], groups=labels, group_names=["a", "b"])
    with pytest.raises(InvalidParameterError, match="group_names"):
        profile(model, [x], layers=["feat"])
    with pytest.raises(InvalidInputError, match="class index out of range"):
        profile(model, x, layers=["feat"], groups=labels + 5, group_names=["a", "b"])
    with pytest.raises(InvalidInputError, match="groups has 3 entries for 4 samples"):
        profile(model, x, layers=["feat"], groups=labels[:3], group_names=["a", "b"])
    with pytest.raises(InvalidParameterError, match="unknown transform 'gelu'"):
        profile(model, x, layers={"f": ("feat", "gelu")}, groups=labels, group_names=["a", "b"])
    with (
        pytest.raises(InvalidParameterError, match="study_layers knows torchvision ResNets and DenseNets"),
        pytest.deprecated_call(),
    ):
        xai_bench.study_layers(model)
    from xai_bench import UnknownMethodError

    with pytest.raises(UnknownMethodError, match="Did you mean 'naps'"):
        profile(model, x, layers=["feat"], groups=labels, group_names=["a", "b"], profilers=["nap"])


def test_dead_feature_maps_skip_the_input_by_what_it_reads_not_by_its_label():
    x, labels = region_data(8)
    ds = profile(
        RegionModel().eval(), x, layers={"raw": "input", "input": "feat"}, groups=labels, group_names=["h", "l"]
    )
    # The tap labelled "input" is a layer (feat: 3 channels); the input image, labelled "raw", is not.
    assert list(ds["layer"].values) == ["input"]
    assert ds["input_dead"].shape == (3,)
    assert "raw_dead" not in ds and "raw" in ds  # NAPs still profile the input


def test_plot_naps_lists_the_profiled_layers_by_name():
    x, labels = region_data(8)
    ds = profile(
        RegionModel().eval(), x, layers={"input": "input", "features": "feat"}, groups=labels, group_names=["h", "l"]
    )
    with pytest.raises(KeyError, match=r"profiled: \['features', 'input'\]"):
        plot_naps(ds, "feat")


@pytest.mark.parametrize(
    ("profilers", "error", "message"),
    [
        ([], InvalidParameterError, "profilers is empty"),
        (["naps", "naps"], InvalidParameterError, "profiler 'naps' is listed twice"),
        ({"naps": 3}, InvalidParameterError, "parameters of 'naps' must be a dict"),
        ({"naps": {"top": 3}}, TypeError, "has no parameter 'top'. Did you mean 'top_k'"),
        ({"naps": {"layers": ["x"]}}, InvalidParameterError, "'layers' is not a parameter of the method"),
        (["nap"], KeyError, "Unknown profiler 'nap'. Did you mean 'naps'"),
        (7, InvalidParameterError, "profilers must be an id, a list of ids or a dict"),
    ],
)
def test_profilers_are_checked_like_methods(profilers, error, message):
    x, labels = region_data(4)
    with pytest.raises(error, match=message):
        profile(RegionModel().eval(), x, layers=["feat"], groups=labels, group_names=["h", "l"], profilers=profilers)
