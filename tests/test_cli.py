from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from xai_bench import open_maps
from xai_bench.app.cli import main
from xai_bench.attributors.builtin import BUILTIN_METHODS

matplotlib.use("Agg")


def test_methods_lists_builtins_with_parameters(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for method in BUILTIN_METHODS:
        assert method in out
    assert "n_steps=50" in out


def test_plugins_lists_builtins(capsys):
    assert main(["plugins"]) == 0
    assert "xai_bench.attributors.builtin" in capsys.readouterr().out


def test_demo_writes_a_store_and_a_figure(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "150"]) == 0
    out = capsys.readouterr().out
    assert "share of |attribution| inside the object" in out
    ds = open_maps(tmp_path / "maps.zarr")
    assert set(BUILTIN_METHODS) <= set(ds)
    # The predicted class of each shape, one slot per sample.
    assert ds["target"].dims == ("sample", "slot") and set(ds["target"].values.ravel()) <= {"disc", "bar"}
    assert np.nanmax(np.abs(ds["deeplift_delta"].values)) < 1e-4
    assert (tmp_path / "maps.png").stat().st_size > 10_000


def _images(folder, n=3, size=20):
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        mode = "L" if i % 2 else "RGB"
        shape = (size, size) if mode == "L" else (size, size + 5, 3)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode=mode).save(folder / f"case{i}.png")
    return folder


RUN = [
    "run",
    "--model",
    "xai_bench.testing.models:tiny_cnn32",
    "--size",
    "16",
    "--methods",
    "saliency,deeplift",
    "--targets",
    "all",
    "--memory-budget",
    "256MiB",
]


def test_run_and_show_from_the_command_line(tmp_path, capsys):
    images = _images(tmp_path / "images")
    store = tmp_path / "maps.zarr"
    assert main([*RUN, "--images", str(images), "--store", str(store)]) == 0
    assert "3 samples explained, 0 already done" in capsys.readouterr().out
    ds = open_maps(store)
    assert list(ds["sample"].values) == ["case0.png", "case1.png", "case2.png"]
    assert ds["deeplift"].shape == (3, 4, 3, 16, 16)
    assert main([*RUN, "--images", str(images), "--store", str(store)]) == 0
    assert "0 samples explained, 3 already done" in capsys.readouterr().out
    out = tmp_path / "case1.png"
    assert main(["show", str(store), "--sample", "case1.png", "--target", "2", "--out", str(out)]) == 0
    assert out.stat().st_size > 5000


def test_run_explains_the_output_asked_for(tmp_path, capsys):
    images = _images(tmp_path / "images")
    store = tmp_path / "maps.zarr"
    assert main([*RUN, "--images", str(images), "--store", str(store), "--output", "sigmoid"]) == 0
    ds = open_maps(store)
    assert ds.attrs["output"] == "sigmoid" and ((ds["score"].values > 0) & (ds["score"].values < 1)).all()
    # Summed DeepLIFT maps give the sigmoid's change from the zero baseline.
    assert np.nanmax(np.abs(ds["deeplift_delta"].values)) < 1e-5


def test_run_from_a_dataset_factory(tmp_path, capsys):
    argv = [
        "run",
        "--model",
        "xai_bench.testing.models:tiny_cnn",
        "--dataset",
        "xai_bench.testing.data:SyntheticImages",
        "--methods",
        "saliency",
        "--targets",
        "0",
        "--store",
        str(tmp_path / "s.zarr"),
    ]
    assert main(argv) == 0
    assert list(open_maps(tmp_path / "s.zarr")["sample"].values)[:2] == ["img-000", "img-001"]


def test_run_loads_a_checkpoint(tmp_path, capsys):
    import torch

    from xai_bench.testing.models import tiny_cnn32

    model = tiny_cnn32()
    with torch.no_grad():
        model.fc.bias.add_(5.0)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "weights.pt")
    images = _images(tmp_path / "images", n=1)
    assert (
        main(
            [
                *RUN,
                "--images",
                str(images),
                "--store",
                str(tmp_path / "m.zarr"),
                "--checkpoint",
                str(tmp_path / "weights.pt"),
            ]
        )
        == 0
    )
    from xai_bench.core.provenance import model_fingerprint

    assert open_maps(tmp_path / "m.zarr").attrs["model_fingerprint"] == model_fingerprint(model.eval())


def test_command_line_errors_are_one_line(tmp_path, capsys):
    import torch

    images = _images(tmp_path / "images", n=1)
    (tmp_path / "images" / "broken.png").write_bytes(b"not an image")
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
    cases = [
        ([*RUN, "--images", str(tmp_path / "nowhere"), "--store", str(tmp_path / "a.zarr")], "No image folder"),
        ([*RUN, "--images", str(images), "--store", str(tmp_path / "b.zarr")], "cannot read image"),
        (
            [
                *RUN,
                "--images",
                str(images),
                "--store",
                str(tmp_path / "c.zarr"),
                "--checkpoint",
                str(tmp_path / "wrong.pt"),
            ],
            "does not match ReluNet: missing keys conv1.weight",
        ),
        (
            [
                *RUN,
                "--images",
                str(images),
                "--store",
                str(tmp_path / "d.zarr"),
                "--checkpoint",
                str(tmp_path / "no.pt"),
            ],
            "No checkpoint",
        ),
        (
            [
                "run",
                "--model",
                "nowhere.module:f",
                "--images",
                str(images),
                "--methods",
                "saliency",
                "--store",
                "x.zarr",
            ],
            "cannot load model factory",
        ),
        (["show", str(tmp_path / "none.zarr"), "--sample", "a"], "No zarr store"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err, (argv, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_more_command_line_errors_are_one_line(tmp_path, capsys):
    import torch

    from xai_bench.testing.models import tiny_cnn32

    images = _images(tmp_path / "images", n=2)
    wrong = tiny_cnn32()
    wrong.fc = torch.nn.Linear(6, 7)  # a head of another size
    torch.save(wrong.state_dict(), tmp_path / "shapes.pt")
    checkpoint = [*RUN, "--images", str(images), "--store", str(tmp_path / "c.zarr"), "--checkpoint"]
    assert main([*checkpoint, str(tmp_path / "shapes.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not fit ReluNet: size mismatch for fc.weight" in err and len(err.splitlines()) == 1

    store = tmp_path / "maps.zarr"
    assert main([*RUN, "--images", str(images), "--store", str(store)]) == 0
    capsys.readouterr()
    files = [p for p in (store / "saliency" / "c" / "1").rglob("*") if p.is_file()]
    data = files[0].read_bytes()
    files[0].write_bytes(data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:])
    assert main(["show", str(store), "--sample", "case1.png", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read sample 'case1.png'" in err and "xai-bench verify" in err and len(err.splitlines()) == 1
    assert main(["verify", str(store)]) == 1
    assert "1 damaged samples" in capsys.readouterr().out


def test_a_batch_size_that_is_no_number_is_a_usage_error(tmp_path, capsys):
    images = _images(tmp_path / "images", n=1)
    with pytest.raises(SystemExit) as exit_:
        main([*RUN, "--images", str(images), "--store", str(tmp_path / "s.zarr"), "--batch-size", "abc"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--batch-size: expected a positive number of images or 'auto', got 'abc'" in err
    assert "Traceback" not in err


def test_verify_reports_a_sound_store(tmp_path, capsys):
    images = _images(tmp_path / "images", n=2)
    assert main([*RUN, "--images", str(images), "--store", str(tmp_path / "ok.zarr")]) == 0
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "ok.zarr")]) == 0
    assert "2 of 2 samples done" in capsys.readouterr().out


def test_a_model_factory_in_the_current_folder_is_found(tmp_path, capsys, monkeypatch):
    import sys

    (tmp_path / "my_models.py").write_text(
        "from xai_bench.testing.models import tiny_cnn32\n\ndef build():\n    return tiny_cnn32()\n"
    )
    images = _images(tmp_path / "images", n=1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    argv = ["run", "--model", "my_models:build", "--images", str(images), "--size", "16", "--methods", "saliency",
            "--targets", "0", "--store", str(tmp_path / "s.zarr")]  # fmt: skip
    assert main(argv) == 0
    sys.modules.pop("my_models", None)
    argv[2] = "no_such_module:build"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot load model factory 'no_such_module:build'" in err and "PYTHONPATH" in err


def test_methods_and_parameter_errors_read_plainly(tmp_path, capsys):
    assert main(["methods"]) == 0
    assert "``" not in capsys.readouterr().out
    images = _images(tmp_path / "images", n=1)
    base = [*RUN[:-2], "--images", str(images), "--store", str(tmp_path / "s.zarr")]
    methods_at = base.index("--methods")
    bad_json = [*base[: methods_at + 1], '{"saliency": }', *base[methods_at + 2 :]]
    assert main(bad_json) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xai-bench: error: --methods is not valid JSON") and len(err.splitlines()) == 1


def test_a_missing_required_method_parameter_is_named():
    from xai_bench import Attribution, InvalidParameterError, OneTarget

    class NeedsLayer(OneTarget):
        id = "needs_layer"

        def __init__(self, *, layer: str) -> None:
            self.layer = layer

        def attribute_target(self, model, inputs, target):
            return Attribution(inputs)

    from xai_bench.plugins import registry
    from xai_bench.plugins.registry import Entry

    entry = Entry("needs_layer", NeedsLayer, "test")
    with pytest.raises(InvalidParameterError, match=r"'needs_layer' needs the parameter 'layer'"):
        entry.create({})
    assert registry.attributors.get("saliency").create({}).abs is True


def test_show_lists_a_few_targets_and_their_count(tmp_path, capsys):
    import torch

    from xai_bench import Targets, explain

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 12)).double().eval()
    labels = [f"class{i}" for i in range(12)]
    store = tmp_path / "m.zarr"
    explain(
        model,
        torch.rand(1, 3, 4, 4, dtype=torch.float64),
        methods="saliency",
        sample_ids=["a"],
        store=store,
        targets=Targets("all", class_names=labels),
    )
    assert main(["show", str(store), "--sample", "a", "--target", "class99"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xai-bench: error: no target 'class99'; targets: class0, class1,")
    assert err.endswith("class9, ... (12 in all)") and len(err.splitlines()) == 1
