"""Pictures from a Dataset or a store alone: inputs kept, normalisation undone, scales stated."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch

from xai_bench import InvalidParameterError, Passes, explain, open_maps, run
from xai_bench.app.cli import main
from xai_bench.app.viz import colour_limit, display_image, plot_maps
from xai_bench.core.normalization import IMAGENET, check_normalization
from xai_bench.scale.image_folder import ImageFolder
from xai_bench.testing import tiny_cnn
from xai_bench.testing.models import tiny_cnn32

matplotlib.use("Agg")


def _images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 12, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _colourbar_limits(fig) -> list[tuple[float, float]]:
    # Colourbar axes carry a label-free mappable; their y-limits are the panel's colour limits.
    return [tuple(np.round(ax.get_ylim(), 12)) for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_explain_keeps_its_inputs_and_the_store_returns_them(tmp_path):
    x = _images()
    ds = explain(tiny_cnn(), x, methods=["saliency"], targets=[0], store=tmp_path / "m.zarr")
    np.testing.assert_array_equal(ds["input"].values, x.numpy())
    stored = open_maps(tmp_path / "m.zarr")
    np.testing.assert_array_equal(stored["input"].values, x.numpy())
    assert stored["input"].dims == ("sample", "channel", "y", "x")
    assert "input" not in explain(tiny_cnn(), x, methods=["saliency"], targets=[0], store_inputs=False)


def test_run_keeps_inputs_only_when_asked(tmp_path):
    x = _images(5).float()
    model = tiny_cnn().float()
    run(model, x, methods=["saliency"], targets=[0], store=tmp_path / "off.zarr", passes=Passes(progress=False))
    assert "input" not in open_maps(tmp_path / "off.zarr")
    run(model, x, methods=["saliency"], targets=[0], store=tmp_path / "on.zarr", store_inputs=True,
        samples_per_block=2, passes=Passes(progress=False))  # fmt: skip
    np.testing.assert_array_equal(open_maps(tmp_path / "on.zarr")["input"].values, x.numpy())


def test_normalisation_is_recorded_and_undone_for_display(tmp_path):
    raw = _images(2)
    mean, std = torch.tensor(IMAGENET[0]).view(3, 1, 1), torch.tensor(IMAGENET[1]).view(3, 1, 1)
    normalised = (raw - mean) / std
    ds = explain(tiny_cnn(), normalised, methods=["saliency"], targets=[0], input_normalization="imagenet",
                 store=tmp_path / "n.zarr")  # fmt: skip
    stored = open_maps(tmp_path / "n.zarr")
    assert json.loads(stored.attrs["input_normalization"]) == {"mean": list(IMAGENET[0]), "std": list(IMAGENET[1])}
    # Shown as it was before normalisation, not clipped from the normalised values.
    np.testing.assert_allclose(display_image(stored, stored["sample"].values[1]), raw[1].numpy(), atol=1e-6)
    assert "input_normalization" not in explain(tiny_cnn(), raw, methods=["saliency"], targets=[0]).attrs
    assert ds.attrs["input_normalization"] == stored.attrs["input_normalization"]


def test_an_image_folder_normalises_and_run_records_it(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (10, 10), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(folder / "a.png")
    data = ImageFolder(folder, size=10, channels=3, normalize="imagenet")
    image = data[0]["image"].numpy()
    expected = (np.repeat(pixels[None] / 255.0, 3, 0) - np.reshape(IMAGENET[0], (3, 1, 1))) / np.reshape(
        IMAGENET[1], (3, 1, 1)
    )
    np.testing.assert_allclose(image, expected, atol=1e-6)
    run(
        tiny_cnn32(),
        data,
        methods=["saliency"],
        targets=[0],
        store=tmp_path / "r.zarr",
        store_inputs=True,
        passes=Passes(progress=False),
    )
    stored = open_maps(tmp_path / "r.zarr")
    assert json.loads(stored.attrs["input_normalization"])["std"] == list(IMAGENET[1])
    np.testing.assert_allclose(display_image(stored, "a.png")[0], pixels / 255.0, atol=1e-6)


@pytest.mark.parametrize(
    ("value", "message"),
    [("imagenet,", "give 'imagenet' or the means then the standard deviations"), ("0.5,0", "deviations > 0"),
     (([0.5], [0.2, 0.3]), "1 means but 2 standard deviations"), (3, "normalisation must be")],
)  # fmt: skip
def test_bad_normalisations_say_what_is_expected(value, message):
    with pytest.raises(InvalidParameterError, match=message):
        check_normalization(value)


def test_columns_keep_the_asked_order_through_a_store(tmp_path):
    asked = ["occlusion", "deeplift", "saliency"]
    params = {"occlusion": {"window": 4, "stride": 4}, "deeplift": {}, "saliency": {}}
    explain(tiny_cnn(), _images(2), methods=params, targets=[1], store=tmp_path / "o.zarr")
    fig = plot_maps(open_maps(tmp_path / "o.zarr"))
    titles = [ax.get_title().split("\n") for ax in fig.axes[:8] if ax.get_label() != "<colorbar>"]
    assert [t[0] for t in titles[1:4]] == [m.replace("_", " ") for m in asked]
    assert titles[0] == ["0", "input"]


def test_panels_have_titles_colourbars_and_the_stated_scale():
    ds = explain(tiny_cnn(), _images(2), methods=["saliency", "input_x_gradient"], targets=[0, 2])
    per_map = plot_maps(ds, target=2, scale="map")
    assert "each map on its own scale" in per_map._suptitle.get_text()
    maps = [ax for ax in per_map.axes if ax.get_label() != "<colorbar>"]
    assert "(logit" in maps[1].get_title() and "\n2 " in maps[1].get_title()
    limits = _colourbar_limits(per_map)
    assert len(limits) == 4 and len(set(limits)) == 4
    # Saliency is non-negative: its bar starts at zero; input x gradient is signed and centred.
    assert limits[0][0] == 0.0 and limits[1][0] == -limits[1][1]
    by_sample = _colourbar_limits(plot_maps(ds, target=2, scale="sample"))
    assert by_sample[0] == (-by_sample[0][1], by_sample[0][1]) == by_sample[1]
    expected = colour_limit([ds[m].sel(target=2).values[0].sum(0) for m in ("saliency", "input_x_gradient")])
    assert by_sample[0][1] == pytest.approx(expected)
    by_method = _colourbar_limits(plot_maps(ds, target=2, scale="method"))
    assert by_method[0] == by_method[2] and by_method[1] == by_method[3]
    with pytest.raises(ValueError, match="scale must be one of 'map', 'sample', 'method'"):
        plot_maps(ds, scale="row")


def test_a_pair_without_a_map_says_so_instead_of_a_black_panel():
    model = tiny_cnn()
    x = _images(2)
    ds = explain(model, x, methods=["saliency"], targets=[[1], [2]])
    fig = plot_maps(ds, target=2)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["no map for target 2"]
    with pytest.raises(KeyError, match="no method 'deeplift' in the dataset; it has \\['saliency'\\]"):
        plot_maps(ds, methods=["deeplift"])


def test_show_draws_from_the_store_alone_and_names_unknown_methods(tmp_path, capsys):
    store = tmp_path / "m.zarr"
    explain(tiny_cnn(), _images(2), methods=["saliency", "deeplift"], targets=[0], store=store,
            sample_ids=["a", "b"], input_normalization=((0.5,), (0.25,)))  # fmt: skip
    out = tmp_path / "b.png"
    assert main(["show", str(store), "--sample", "b", "--methods", "deeplift", "--scale", "sample",
                 "--out", str(out)]) == 0  # fmt: skip
    assert out.stat().st_size > 5000
    assert main(["show", str(store), "--sample", "b", "--methods", "saliency,deeplit"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xai-bench: error:") and len(err.splitlines()) == 1
    assert "has no method 'deeplit'; it has saliency, deeplift" in err and "deeplift" in err


def test_the_command_line_normalises_keeps_inputs_and_refuses_normalising_a_factory(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    pixels = np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels, mode="RGB").save(folder / "x.png")
    store = tmp_path / "m.zarr"
    common = ["run", "--model", "xai_bench.testing.models:tiny_cnn32", "--size", "16", "--methods", "saliency"]
    assert main([*common, "--images", str(folder), "--store", str(store), "--normalize", "imagenet",
                 "--store-inputs"]) == 0  # fmt: skip
    ds = open_maps(store)
    np.testing.assert_allclose(display_image(ds, "x.png"), pixels.transpose(2, 0, 1) / 255.0, atol=1e-6)
    assert main(["show", str(store), "--sample", "x.png", "--out", str(tmp_path / "x.png")]) == 0
    capsys.readouterr()
    factory = ["--dataset", "xai_bench.testing.data:SyntheticImages", "--store", str(tmp_path / "f.zarr")]
    assert main([*common, *factory, "--normalize", "imagenet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xai-bench: error: --normalize applies to --images") and len(err.splitlines()) == 1
    assert main([*common, "--images", str(folder), "--store", str(tmp_path / "b.zarr"), "--normalize", "0.5"]) == 2
    assert "give 'imagenet' or the means then the standard deviations" in capsys.readouterr().err


def test_one_channel_normalisation_spellings_and_a_channel_mismatch():
    assert check_normalization((0.5, 0.25)).mean == (0.5,)
    gray = torch.rand(1, 1, 12, 12, dtype=torch.float64)
    with pytest.raises(InvalidParameterError, match="has 3 channel values but the inputs have 1 channels"):
        explain(tiny_cnn(in_channels=1), gray, methods="saliency", input_normalization="imagenet")


def test_rows_without_inputs_are_labelled_and_percentile_none_is_the_maximum():
    ds = explain(tiny_cnn(), _images(2), methods=["saliency"], targets=[0], sample_ids=["p", "q"], store_inputs=False)
    fig = plot_maps(ds, percentile=None)
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_label() != "<colorbar>"] == ["p", "q"]
    assert "clipped at the largest |value|" in fig._suptitle.get_text()
