"""Cases that used to give a wrong answer without an error: each now gives the right one, or says why not."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
import xarray as xr
from torch import nn

from xai_bench import (
    InvalidInputError,
    InvalidParameterError,
    Passes,
    StoreExistsError,
    StoreMismatchError,
    XaiBenchWarning,
    explain,
    open_maps,
    profile,
    run,
)
from xai_bench.core.provenance import model_fingerprint
from xai_bench.testing import LinearModel, tiny_cnn
from xai_bench.testing.data import SyntheticImages


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():  # non-trivial statistics, so that bn outputs have both signs
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_profile_reads_layer_outputs_before_a_later_in_place_relu_changes_them(gen):
    model = _resnet()
    x = torch.randn(6, 3, 32, 32, generator=gen)
    groups = torch.tensor([0, 1, 0, 1, 1, 0])
    kept: dict[str, torch.Tensor] = {}
    names = ("layer1.0.bn1", "layer1.0.bn2")
    handles = [
        model.get_submodule(n).register_forward_hook(lambda m, a, out, n=n: kept.__setitem__(n, out.clone()))
        for n in names
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    ds = profile(model, x, layers=list(names), groups=groups, group_names=["a", "b"], profilers=["naps"])
    for name in names:
        assert (kept[name] < 0).any()  # the in-place ReLU after this layer would have changed these
        expected = torch.stack([kept[name][groups == g].mean(0) for g in (0, 1)]).double().numpy()
        np.testing.assert_allclose(ds[f"{name}_group_mean"].values, expected, rtol=1e-5, atol=1e-6)


def test_profile_refuses_a_module_called_twice_in_one_pass(gen):
    model = _resnet()
    x = torch.randn(2, 3, 32, 32, generator=gen)
    with pytest.raises(InvalidParameterError, match="'layer1.0.relu' is called more than once"):
        profile(model, x, layers=["layer1.0.relu"], groups=torch.tensor([0, 1]), group_names=["a", "b"])


def test_weights_changed_in_place_change_the_fingerprint():
    model = tiny_cnn()
    first = model_fingerprint(model)
    model.fc.weight.data.mul_(-3)  # .data writes bump no tensor version
    second = model_fingerprint(model)
    assert second != first
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.rand(2, 3, 12, 12, dtype=torch.float64)).sum().backward()
    opt.step()
    assert model_fingerprint(model) not in (first, second)


def test_run_refuses_to_resume_a_store_made_with_other_weights(tmp_path):
    model = tiny_cnn()
    args = {"methods": ["saliency"], "targets": "all", "passes": Passes(batch_size=4, progress=False)}
    run(model, SyntheticImages(4), store=tmp_path / "s.zarr", **args)
    model.fc.weight.data.mul_(-3)
    with pytest.raises(StoreMismatchError, match="holds a different run"):
        run(model, SyntheticImages(4), store=tmp_path / "s.zarr", **args)


class Switchable(nn.Module):
    """A forward that follows a plain Python flag, which torch.fx bakes into its graph."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)
        self.use_relu = True

    def forward(self, x):
        x = self.conv(x)
        x = F.relu(x) if self.use_relu else torch.tanh(x)
        return self.fc(x.mean((2, 3)))


def test_a_cached_rewrite_is_traced_again_when_the_forward_changed(gen):
    model = Switchable().double().eval()
    x = torch.rand(3, 3, 8, 8, generator=gen, dtype=torch.float64)
    explain(model, x, methods=["deeplift"], targets=[0])
    model.use_relu = False
    ds = explain(model, x, methods=["deeplift"], targets=[0])
    with torch.no_grad():
        np.testing.assert_allclose(ds["score"].values[:, 0], model(x)[:, 0].numpy(), rtol=1e-12)
    assert np.abs(ds["deeplift_delta"].values).max() < 1e-10
    assert "pointwise" in ds["deeplift"].attrs["surgery"] or "tanh" in ds["deeplift"].attrs["surgery"]


def test_run_recomputes_samples_whose_pixels_changed(tmp_path):
    args = {
        "methods": ["saliency"],
        "targets": "all",
        "samples_per_block": 2,
        "passes": Passes(batch_size=4, progress=False),
    }
    run(tiny_cnn(), SyntheticImages(6), store=tmp_path / "s.zarr", **args)

    class Brighter(SyntheticImages):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            return {**item, "image": item["image"] * 0.5} if index in (1, 4) else item

    with pytest.warns(XaiBenchWarning, match=r"2 samples .* changed since they were explained.*img-001.*img-004"):
        summary = run(tiny_cnn(), Brighter(6), store=tmp_path / "s.zarr", **args)
    assert (summary.computed, summary.skipped) == (4, 2)  # the blocks of samples 1 and 4, whole
    run(tiny_cnn(), Brighter(6), store=tmp_path / "fresh.zarr", **args)
    xr.testing.assert_identical(open_maps(tmp_path / "s.zarr").load(), open_maps(tmp_path / "fresh.zarr").load())


def test_ids_that_collide_as_text_are_refused(gen, tmp_path):
    x = torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)
    with pytest.raises(InvalidInputError, match=r"unique \(also as text\).*\['1'\]"):
        explain(tiny_cnn(), x, methods=["saliency"], targets=[0], sample_ids=[1, "1", 2])

    class Colliding(SyntheticImages):
        def __init__(self, n):
            super().__init__(n)
            self.sample_ids = [1, "1", 2]

        def __getitem__(self, index):
            return super().__getitem__(index)["image"]

    with pytest.raises(InvalidInputError, match="unique"):
        run(tiny_cnn(), Colliding(3), methods=["saliency"], store=tmp_path / "c.zarr", passes=Passes(progress=False))
    with pytest.raises(InvalidParameterError, match=r"group_names must be unique.*\['a'\]"):
        profile(tiny_cnn(), x, layers=["conv1"], groups=torch.tensor([0, 1, 1]), group_names=["a", "a"])


class NaNForSome(nn.Module):
    """Passes images through, but turns every image whose first pixel is above 0.9 into NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Conv2d(3, 2, 1)
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        bad = (x[:, 0, 0, 0] > 0.9).view(-1, 1, 1, 1)
        f = torch.where(bad, torch.full_like(x, float("nan")), x)
        return self.head(self.feat(f).mean((2, 3)))


def test_profile_leaves_out_samples_with_nan_activations_and_names_them(gen):
    torch.manual_seed(0)
    model = NaNForSome().eval()
    x = torch.rand(8, 3, 4, 4, generator=gen)
    x[:, 0, 0, 0] = 0.1
    x[[2, 5], 0, 0, 0] = 0.95
    groups = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    with pytest.warns(XaiBenchWarning, match=r"layer 'feat' produced NaN or Inf activations for samples \[2, 5\]"):
        ds = profile(model, x, layers=["feat"], groups=groups, group_names=["a", "b"], passes=3)
    keep = torch.tensor([i not in (2, 5) for i in range(8)])
    clean = profile(model, x[keep], layers=["feat"], groups=groups[keep], group_names=["a", "b"])
    np.testing.assert_allclose(ds["feat"].values, clean["feat"].values, rtol=1e-6)
    assert np.isfinite(ds["feat_max_activation"].values).all()


class HeadFirst(nn.Module):
    """The head's 1x1 convolution is registered before the stem, which takes one channel."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(5, 3, 1)
        self.stem = nn.Conv2d(1, 5, 3, padding=1)

    def forward(self, x):
        return self.head(torch.relu(self.stem(x))).mean((2, 3))


class GreyToRGB(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        return self.body(x.expand(-1, 3, -1, -1)).mean((2, 3))


@pytest.mark.parametrize("cls", [HeadFirst, GreyToRGB])
def test_valid_models_are_not_refused_by_a_guess_at_their_first_layer(cls, gen):
    x = torch.rand(2, 1, 8, 8, generator=gen)
    ds = explain(cls().eval(), x, methods=["saliency"], targets=[0])
    assert np.isfinite(ds["saliency"].values).all()


def test_batch_norm_without_running_statistics_is_named_in_a_warning(gen):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten(), nn.LazyLinear(2)
    )
    x = torch.rand(2, 3, 6, 6, generator=gen)
    model(x)
    model.eval()
    with pytest.warns(XaiBenchWarning, match=r"'1': batch norm without running statistics"):
        explain(model, x, methods=["saliency"], targets=[0])


def test_explain_onto_an_existing_store_says_what_to_do(gen, tmp_path):
    x = torch.rand(2, 3, 12, 12, generator=gen, dtype=torch.float64)
    explain(tiny_cnn(), x, methods=["saliency"], targets=[0], store=tmp_path / "m.zarr")
    with pytest.raises(StoreExistsError, match=r"exists already. Pass overwrite=True .* or use xai_bench.run"):
        explain(tiny_cnn(), x, methods=["saliency"], targets=[1], store=tmp_path / "m.zarr")
    explain(tiny_cnn(), x, methods=["saliency"], targets=[1], store=tmp_path / "m.zarr", overwrite=True)
    assert open_maps(tmp_path / "m.zarr")["target"].values.tolist() == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr"]  # no temporary folder left


@pytest.mark.parametrize("n_steps", [2, 10, 50])
def test_trapezoid_weights_add_up_to_one_so_linear_models_are_complete(n_steps, gen):
    torch.manual_seed(0)
    model = LinearModel().double().eval()
    x = torch.rand(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    ds = explain(model, x, methods={"integrated_gradients": {"n_steps": n_steps, "method": "riemann_trapezoid"}},
                 targets=[0, 2])  # fmt: skip
    assert np.abs(ds["integrated_gradients_delta"].values).max() < 1e-12


def test_a_riemann_rule_with_one_step_is_a_parameter_error():
    with pytest.raises(InvalidParameterError, match="'riemann_left' needs n_steps >= 2, got 1"):
        explain(tiny_cnn(), torch.rand(1, 3, 12, 12, dtype=torch.float64), methods={
            "integrated_gradients": {"n_steps": 1, "method": "riemann_left"}}, targets=[0])  # fmt: skip


def test_bfloat16_models_are_explained_and_stored_as_float32(gen, tmp_path):
    model = tiny_cnn().to(torch.bfloat16)
    x = torch.rand(2, 3, 12, 12, generator=gen).to(torch.bfloat16)
    ds = explain(model, x, methods=["saliency", "integrated_gradients"], targets=[0], store=tmp_path / "b.zarr")
    assert ds["saliency"].dtype == np.float32 and ds["score"].dtype == np.float32
    assert np.isfinite(ds["saliency"].values).all()


def test_one_memory_budget_rule_for_every_method(gen):
    x = torch.rand(2, 3, 12, 12, generator=gen, dtype=torch.float64)
    with pytest.raises(InvalidParameterError, match="at least one byte"):
        explain(tiny_cnn(), x, methods=["saliency"], targets=[0], passes=Passes(memory_budget=0.5))
    with pytest.warns(XaiBenchWarning, match=r"saliency: its smallest pass \(1 image,"):
        explain(tiny_cnn(), x, methods=["saliency"], targets=[0], passes=Passes(memory_budget=100))


def test_no_warning_when_the_budget_fits(gen):
    x = torch.rand(2, 3, 12, 12, generator=gen, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explain(tiny_cnn(), x, methods=["saliency", "deeplift"], targets=[0], passes=Passes(memory_budget="1GiB"))


def test_profile_takes_batches_of_changing_sizes(gen):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    batches = [
        (torch.rand(2, 3, 16, 16, generator=gen), torch.tensor([0, 1])),
        (torch.rand(1, 3, 20, 20, generator=gen), torch.tensor([1])),
    ]
    ds = profile(model, batches, layers={"relu": "1"}, group_names=["a", "b"], profilers=["dead_feature_maps"])
    assert ds.attrs["samples"] == 3


@pytest.mark.parametrize("method", ["guided_backprop", "deeplift"])
def test_batch_statistics_warn_but_do_not_break_rule_based_methods(method, gen):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()  # fmt: skip
    x = torch.rand(3, 3, 8, 8, generator=gen)
    with pytest.warns(XaiBenchWarning) as caught:
        ds = explain(model, x, methods=[method], targets=[0])
    said = [str(w.message) for w in caught]
    assert any("batch norm without running statistics" in m for m in said), said
    # Batch statistics mix inputs with their references: DeepLIFT's summation check notices it too.
    assert any("the maps miss f(x) - f(baseline)" in m for m in said) is (method == "deeplift"), said
    assert np.isfinite(ds[method].values).all()


def test_a_stale_rewrite_is_found_in_bfloat16_too(gen):
    model = Switchable().to(torch.bfloat16).eval()
    x = torch.rand(3, 3, 8, 8, generator=gen).to(torch.bfloat16)
    explain(model, x, methods=["deeplift"], targets=[0])
    model.use_relu = False
    ds = explain(model, x, methods=["deeplift"], targets=[0])
    with torch.no_grad():
        expected = model(x)[:, 0].float().numpy()
    # The maps come from the graph with tanh: scores equal the model's to bfloat16 rounding.
    np.testing.assert_allclose(ds["score"].values[:, 0], expected, rtol=2e-2, atol=2e-2)
    assert "pointwise" in ds["deeplift"].attrs["surgery"] or "tanh" in ds["deeplift"].attrs["surgery"]


def test_an_existing_store_is_refused_before_any_work(gen, tmp_path):
    model = tiny_cnn()
    x = torch.rand(2, 3, 12, 12, generator=gen, dtype=torch.float64)
    explain(model, x, methods=["saliency"], targets=[0], store=tmp_path / "m.zarr")
    calls = []
    handle = model.fc.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        with pytest.raises(StoreExistsError):
            explain(model, x, methods=["saliency"], targets=[0], store=tmp_path / "m.zarr")
        with pytest.raises(StoreExistsError):
            profile(model, x, layers=["conv1"], groups=torch.tensor([0, 1]), group_names=["a", "b"],
                    store=tmp_path / "m.zarr")  # fmt: skip
    finally:
        handle.remove()
    assert calls == []


def test_the_view_is_checked_again_only_when_weights_or_flags_change(gen):
    model = Switchable().double().eval()
    x = torch.rand(3, 3, 8, 8, generator=gen, dtype=torch.float64)
    single = []  # forwards of the model itself on one image: the check
    handle = model.fc.register_forward_hook(lambda m, i, o: single.append(len(o)) if len(o) == 1 else None)

    def count() -> int:
        before = len(single)
        explain(model, x, methods=["guided_backprop"], targets=[0])
        return len(single) - before

    try:
        first = count()
        unchecked = count()  # nothing changed: no second check (the probe's forward remains)
        assert unchecked < first
        model.use_relu = False
        assert count() > unchecked
        model.fc.weight.data.mul_(2)
        assert count() > unchecked
    finally:
        handle.remove()
