"""Table 1 (covid_cxr.complexity) against references computed without it: torchvision's published numbers,
closed-form counts, and bounds any real memory measurement must meet."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torchvision
from covid_cxr.complexity import forward_flops, measure, peak_memory, trainable_parameters, write_table1
from covid_cxr.models import build
from covid_cxr.study import Study, StudyConfig
from torch import nn

RESNET18 = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta  # in the code: nothing is downloaded


def _saved_for_backward(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for backward in one forward pass, parameters excluded, each storage once."""
    constants = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in constants:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x.requires_grad_(True))
    return sum(storages.values())


def tiny(channels: int = 4, classes: int = 5, size: int = 8) -> nn.Module:
    # Batch norm, ReLU and pooling are there to show that the counter leaves them out.
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(channels * (size // 2) ** 2, classes))  # fmt: skip


def test_parameters_are_the_trainable_ones_and_resnet18_has_torchvisions_published_count():
    model = build("resnet18", 1000)  # torchvision's ImageNet head: 512 -> 1000
    assert trainable_parameters(model) == sum(p.numel() for p in model.parameters()) == RESNET18["num_params"]
    model.fc.requires_grad_(False)
    assert trainable_parameters(model) == RESNET18["num_params"] - (512 * 1000 + 1000)


def test_resnet18_macs_are_torchvisions_published_gflops():
    # torchvision's meta["_ops"] is labelled GFLOPS but counts multiply-adds: ResNet18's 1.814 is our MACs,
    # and our FLOPs (2 per multiply-add) are twice it.
    flops = forward_flops(build("resnet18", 1000), 224)
    assert flops / 2e9 == pytest.approx(RESNET18["_ops"], rel=0.01)
    assert flops / 1e9 == pytest.approx(2 * RESNET18["_ops"], rel=0.01)


@pytest.mark.parametrize("size", [8, 12])
def test_the_macs_of_a_conv_and_a_linear_layer_are_the_closed_form(size):
    channels, classes = 4, 5
    conv = size * size * channels * 3 * 3 * 3  # every output pixel of every channel: a 3 x 3 x 3 window
    linear = channels * (size // 2) ** 2 * classes
    c = measure(tiny(channels, classes, size), size)
    assert c.macs == conv + linear and c.flops == 2 * (conv + linear)  # nothing for bias, BN, ReLU, pooling
    assert c.parameters == (3 * 9 * channels + channels) + 2 * channels + (channels * (size // 2) ** 2 + 1) * classes


def _hooks(model: nn.Module) -> list:
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return [h for m in model.modules() for kind in kinds for h in getattr(m, kind).values()]


def _global_hooks() -> list[int]:
    module = torch.nn.modules.module
    names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
             "_global_backward_pre_hooks")  # fmt: skip
    return [len(getattr(module, name)) for name in names]


@pytest.mark.parametrize("name", ["tiny", "resnet18"])
def test_measuring_leaves_the_model_as_it_was(name):
    model = tiny() if name == "tiny" else build("resnet18", 3)
    model.train()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    bn.eval()  # mixed modes: each module's own flag must come back, not the root's
    modes = [m.training for m in model.modules()]
    first = next(model.parameters())
    first.grad = torch.full_like(first, 7.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    globals_before = _global_hooks()
    measure(model, 8 if name == "tiny" else 32, batch_size=2)
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(first.grad, torch.full_like(first, 7.0))
    assert all(p.grad is None for p in list(model.parameters())[1:])
    assert not _hooks(model) and _global_hooks() == globals_before
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # running stats untouched


def test_cpu_memory_grows_with_the_batch_and_holds_what_must_be_alive_at_once():
    model = build("resnet18", 3).eval()
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    grads = sum(p.numel() * p.element_size() for p in model.parameters())
    one, four = peak_memory(model, 64, batch_size=1), peak_memory(model, 64, batch_size=4)
    assert four > one
    # At the end of the forward pass every tensor autograd saved for backward is alive (xai_bench's own probe
    # counts them); at the end of backward every gradient is.
    saved = _saved_for_backward(model, torch.zeros(1, 3, 64, 64))
    assert one >= weights + max(saved, grads)
    assert four >= weights + 4 * saved


def test_table1_is_written_and_the_report_shows_it(tmp_path, monkeypatch):
    csv_path, md_path = write_table1(["resnet18"], tmp_path / "direct", size=32, num_labels=3)
    row = pd.read_csv(csv_path).iloc[0]
    model = build("resnet18", 3)
    assert row["parameters"] == trainable_parameters(model) and row["macs"] == forward_flops(model, 32) // 2
    text = md_path.read_text()
    assert "32 x 32 px" in text and "batch size 1" in text and "cpu" in text and "FlopCounterMode" in text
    assert "| ResNet18 | 11,178,051 |" in text

    # The study's report with its other stages stubbed: only the report's assembly and Table 1 run.
    config = StudyConfig(size=32, models=("resnet18",))
    prepared = SimpleNamespace(sources=["a"], subjects=["s"], labels=[("healthy",)], sample_ids=["x"],
                               outputs=("COVID-19", "pneumonia", "healthy"))  # fmt: skip
    pd.DataFrame([{"model": "resnet18", "method": "saliency", "group": "healthy", "mean": 0.1, "std": float("nan"),
                   "images": 1}]).to_csv(tmp_path / "padding.csv", index=False)  # fmt: skip
    (tmp_path / "table2.md").write_text("Table 2\n")

    def study() -> Study:
        s = Study([], tmp_path, config, progress=False)
        for stage, value in (("figures", []), ("data", (prepared, [])), ("explain", SimpleNamespace(rows=[])),
                             ("explain_fold", 0), ("profile", {}), ("html", None)):  # fmt: skip
            monkeypatch.setattr(s, stage, lambda value=value: value)
        return s

    report = study().report().read_text()
    assert "## Model complexity (Table 1)" in report and report.index("(Table 1)") < report.index("(Table 2)")
    assert (tmp_path / "table1.md").read_text() in report
    written = (tmp_path / "table1.csv").stat().st_mtime_ns
    study().report()  # a second run with the same settings measures nothing again
    assert (tmp_path / "table1.csv").stat().st_mtime_ns == written
