"""Contracts enforced: what plugins return, what models return, arguments, threads and data sets."""

from __future__ import annotations

import math
import sys
import threading
import time
import types

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import xai_bench
from xai_bench import (
    Attribution,
    Attributor,
    InvalidInputError,
    InvalidTargetError,
    ModelOutputError,
    OneTarget,
    Passes,
    PluginError,
    Targets,
    UnknownMethodError,
    XaiBenchWarning,
    explain,
    hookimpl,
)
from xai_bench.testing import CHECKS


class Linear(nn.Module):
    """Logits W · flatten(x) + b of (3, 4, 4) images, three classes."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(48, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.fixture
def lin(gen):
    return Linear().eval(), torch.rand(2, 3, 4, 4, generator=gen)


def _maps(batch, shape=None):
    n, t = batch.targets.shape
    return torch.zeros(n, t, *(shape or batch.inputs.shape[1:]))


# --- item: plugin contract ---------------------------------------------------------------------


class WrongSize(Attributor):
    id = "wrong_size"

    def attribute(self, model, batch):
        return Attribution(_maps(batch, (3, 2, 2)))


class Broadcasting(OneTarget):
    """Maps of one pixel per channel, which gathering into (N, T, C, H, W) would broadcast."""

    id = "broadcasting"

    def attribute_target(self, model, inputs, target):
        return Attribution(torch.ones(inputs.shape[0], inputs.shape[1], 1, 1))


class TensorNotAttribution(OneTarget):
    id = "tensor_not_attribution"

    def attribute_target(self, model, inputs, target):
        return inputs.clone()


class NoDelta(Attributor):
    id = "no_delta"
    has_delta = True

    def attribute(self, model, batch):
        return Attribution(_maps(batch))


class FlatDelta(Attributor):
    id = "flat_delta"
    has_delta = True

    def attribute(self, model, batch):
        return Attribution(_maps(batch), delta=torch.zeros(batch.targets.shape[0]))


class MadeUpOutputs(Attributor):
    id = "made_up_outputs"
    reports_outputs = True

    def attribute(self, model, batch):
        return Attribution(_maps(batch), outputs=torch.zeros(batch.targets.shape[0], 3))


class TrueOutputs(Attributor):
    id = "true_outputs"
    reports_outputs = True

    def attribute(self, model, batch):
        with torch.no_grad():
            return Attribution(_maps(batch), outputs=model(batch.inputs))


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (WrongSize, r"'wrong_size' of plugin 'test_plugin': attribute\(\) returned maps \(2, 1, 3, 2, 2\); "
         r"expected shape \(2, 1, 3, 4, 4\)"),
        (Broadcasting, r"'broadcasting'.*attribute_target\(\) returned maps \(2, 3, 1, 1\); "
         r"expected shape \(2, 3, 4, 4\)"),
        (TensorNotAttribution, r"'tensor_not_attribution'.*returned Tensor; return an xai_bench.Attribution"),
        (NoDelta, r"'no_delta' of plugin 'test_plugin': attribute\(\) returned delta NoneType \(the method declares "
         r"has_delta\); expected shape \(2, 1\)"),
        (FlatDelta, r"'flat_delta' of plugin 'test_plugin': attribute\(\) returned delta \(2,\); "
         r"expected shape \(2, 1\)"),
        (MadeUpOutputs, r"'made_up_outputs' of plugin 'test_plugin' declares reports_outputs, but its outputs are not "
         r"the model's logits for samples \['a', 'b'\]"),
    ],
)  # fmt: skip
def test_a_plugin_breaking_the_contract_is_refused_by_name(add_plugin, lin, cls, message):
    model, x = lin
    add_plugin(cls)
    with pytest.raises(PluginError, match=message):
        explain(model, x, methods=cls.id, targets=[0], sample_ids=["a", "b"])


def test_a_plugins_true_outputs_pass_and_the_score_is_the_models_own(add_plugin, lin):
    model, x = lin
    add_plugin(TrueOutputs)
    ds = explain(model, x, methods="true_outputs", targets=[1])
    with torch.no_grad():
        np.testing.assert_allclose(ds["score"].values[:, 0], model(x)[:, 1].numpy(), rtol=1e-6)


class Sqrt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(48, 3)

    def forward(self, x):
        return self.fc(x.sqrt().flatten(1))


def test_non_finite_maps_of_a_builtin_are_warned_about_by_sample_id(gen):
    x = torch.rand(2, 3, 4, 4, generator=gen)
    x[1, 0, 0, 0] = 0.0  # d sqrt(x) / dx is infinite at 0, times x = 0: NaN
    with pytest.warns(XaiBenchWarning, match=r"method 'input_x_gradient': 1 maps of samples \['b'\] hold NaN or Inf"):
        ds = explain(Sqrt().eval(), x, methods="input_x_gradient", targets=[0], sample_ids=["a", "b"])
    # The map is there (NaN at one pixel): not reported as a map that was never computed.
    picked = xai_bench.select_map(ds, "input_x_gradient", sample="b", target=0)
    assert np.isnan(picked.values).sum() == 1


def test_the_conformance_suite_catches_a_method_that_draws_from_the_global_rng(add_plugin):
    class Noisy(OneTarget):
        """Adds noise drawn from torch's global generator."""

        id = "noisy"

        def attribute_target(self, model, inputs, target):
            return Attribution(inputs + 0.0 * torch.rand(inputs.shape, dtype=inputs.dtype))

    add_plugin(Noisy)
    with pytest.raises(AssertionError, match="noisy: changed torch's global random state"):
        CHECKS["rng_untouched"]("noisy")


# --- item: thresholds --------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [math.nan, 1.5, 1.0, -0.1, "0.5", True, None])
def test_impossible_thresholds_are_refused_in_one_line(lin, tmp_path, threshold):
    model, x = lin
    with pytest.raises(InvalidTargetError, match=r"^threshold must be a (number|probability in \[0, 1\))[^\n]*$"):
        explain(model, x, methods="saliency", targets=Targets("predicted", task="multilabel", threshold=threshold))
    with pytest.raises(InvalidTargetError, match="^threshold must be"):
        xai_bench.run(
            model,
            list(x),
            methods="saliency",
            store=tmp_path / "s",
            targets=Targets("predicted", task="multilabel", threshold=threshold),
        )
    assert not (tmp_path / "s").exists()


# --- item: threads -----------------------------------------------------------------------------


class Slow(nn.Module):
    """A tiny CNN whose forward takes a while, so that threads' calls (and fx's trace) overlap."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)  # not the global generator, which threads would share
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) / 2)

    def forward(self, x):
        time.sleep(0.01)  # releases the GIL, as real kernels do
        return self.fc(self.drop(torch.relu(self.conv(x))).mean((2, 3)))


def test_threads_explaining_at_once_all_succeed_and_restore_every_model(gen):
    x = torch.rand(2, 3, 6, 6, generator=gen, dtype=torch.float64)
    shared = Slow().double().train()
    expected = {
        m: explain(Slow().double().eval(), x, methods=m, targets=[0])[m].values for m in ("deeplift", "saliency")
    }
    errors: list[BaseException] = []
    fresh: list[tuple[nn.Module, bool]] = []

    def work(i: int) -> None:
        try:
            for k in range(4):
                # Fresh models are traced by DeepLIFT; the shared one is switched to eval by several calls at once.
                model = shared if k % 2 else Slow().double().train(i % 2 == 0)
                if model is not shared:
                    fresh.append((model, i % 2 == 0))
                method = "deeplift" if (i + k) % 2 else "saliency"
                ds = explain(model, x, methods=method, targets=[0])
                np.testing.assert_allclose(ds[method].values, expected[method], rtol=1e-12)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    with pytest.warns(XaiBenchWarning, match="is in training mode"):
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert shared.training and all(m.training for m in shared.modules())
    assert all(m.training == training for model, training in fresh for m in model.modules())


# --- item: raw errors from the Python API ------------------------------------------------------


def test_a_call_under_inference_mode_gives_the_maps_of_a_plain_call(lin):
    model, x = lin
    plain = explain(model, x, methods=["saliency", "deeplift"], targets=[0])
    with torch.inference_mode():
        inside = explain(model, x.clone(), methods=["saliency", "deeplift"], targets=[0])
    for method in ("saliency", "deeplift"):
        np.testing.assert_array_equal(inside[method].values, plain[method].values)
    # Metrics that make maps again need gradients too.
    metric = {"parameter_randomisation": {"layers": ["fc"]}}
    expected = xai_bench.evaluate(plain, model=model, inputs=x, metrics=metric, methods=["saliency"])
    with torch.inference_mode():
        got = xai_bench.evaluate(plain, model=model, inputs=x.clone(), metrics=metric, methods=["saliency"])
    xr.testing.assert_identical(got, expected)


class IntegerLogits(Linear):
    def forward(self, x):
        return super().forward(x).round().long()


class FirstRowOnly(Linear):
    def forward(self, x):
        return super().forward(x)[:1]


def test_integer_logits_are_refused(gen):
    x = torch.rand(2, 3, 4, 4, generator=gen)
    with pytest.raises(ModelOutputError, match="returned torch.int64 outputs; attributions need floating-point"):
        explain(IntegerLogits().eval(), x, methods="saliency", targets=[0])


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "occlusion"])
def test_outputs_of_another_batch_size_are_refused(gen, method):
    x = torch.rand(2, 3, 4, 4, generator=gen)
    params = {"occlusion": {"window": 2, "stride": 2}}.get(method, {})
    with pytest.raises(ModelOutputError, match=r"returned shape \(1, 3\) for a batch of 2"):
        explain(FirstRowOnly().eval(), x, methods={method: params}, targets=[0])


def _broken_hook_plugin(monkeypatch) -> None:
    module = types.ModuleType("broken_hook_plugin")

    @hookimpl
    def register_attributors(register):
        register(WrongSize)  # registered, then dropped with the rest of the plugin
        raise RuntimeError("cannot find my weights")

    module.register_attributors = register_attributors
    monkeypatch.setitem(sys.modules, "broken_hook_plugin", module)
    xai_bench.get_plugin_manager().register(module, name="broken_hook_plugin")


def test_a_plugin_hook_that_raises_is_named_and_the_builtins_still_load(monkeypatch, fresh_plugins, lin):
    model, x = lin
    _broken_hook_plugin(monkeypatch)
    with pytest.warns(XaiBenchWarning, match="Plugin 'broken_hook_plugin' failed in register_attributors "
                                             r"\(RuntimeError: cannot find my weights\)"):  # fmt: skip
        listing = xai_bench.list_methods()
    assert "saliency" in listing and "wrong_size" not in listing
    assert "saliency" in explain(model, x, methods="saliency", targets=[0])
    with pytest.raises(UnknownMethodError, match="Plugin 'broken_hook_plugin' failed to register its methods"):
        explain(model, x, methods="wrong_size", targets=[0])


class Images(torch.utils.data.Dataset):
    """Four (3, 4, 4) images, the last replaced by ``odd``, named s0..s3."""

    def __init__(self, odd: torch.Tensor) -> None:
        gen = torch.Generator().manual_seed(0)
        self.images = [torch.rand(3, 4, 4, generator=gen) for _ in range(3)] + [odd]
        self.sample_ids = [f"s{i}" for i in range(4)]

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


@pytest.mark.parametrize("odd", [torch.rand(3, 5, 5), torch.rand(1, 4, 4)], ids=["larger", "grey"])
@pytest.mark.parametrize("samples_per_block", [4, 1])
def test_run_names_the_sample_of_an_odd_image(tmp_path, odd, samples_per_block):
    shape = ", ".join(map(str, odd.shape))
    with pytest.raises(InvalidInputError, match=rf"dataset sample 's3' \(item 3\) is an image of shape \({shape}\), "
                                                r"expected \(3, 4, 4\)"):  # fmt: skip
        xai_bench.run(
            Linear().eval(), Images(odd), methods="saliency", store=tmp_path / "s", targets=[0],
            samples_per_block=samples_per_block, passes=Passes(progress=False))  # fmt: skip


def test_nan_inputs_are_named_by_sample_id_in_explain_and_run(lin, tmp_path):
    model, x = lin
    x = x.clone()
    x[1, 0, 0, 0] = math.nan
    with pytest.raises(InvalidInputError, match=r"NaN or Inf values \(samples \['b'\]\)"):
        explain(model, x, methods="saliency", targets=[0], sample_ids=["a", "b"])
    images = Images(torch.full((3, 4, 4), math.nan))
    with pytest.raises(InvalidInputError, match=r"NaN or Inf values \(samples \['s3'\]\)"):
        xai_bench.run(model, images, methods="saliency", store=tmp_path / "s", targets=[0], samples_per_block=2,
                      passes=Passes(progress=False))  # fmt: skip


def test_builtins_pass_the_contract_checks_with_a_delta_and_smoothing(lin):
    # DeepLIFT and IG declare a delta; smooth= wraps them and checks the wrapped method's passes too.
    model, x = lin
    ds = explain(model, x, methods={"deeplift": {}, "integrated_gradients": {"n_steps": 4, "smooth": {"samples": 2}}},
                 targets=[0, 2])  # fmt: skip
    assert ds["deeplift_delta"].shape == (2, 2) and ds["integrated_gradients_delta"].shape == (2, 2)


def test_run_given_no_data_set_says_what_it_needs(tmp_path):
    from xai_bench import run
    from xai_bench.testing import tiny_cnn

    with pytest.raises(InvalidInputError, match=r"run\(\) needs a data set .*got int"):
        run(tiny_cnn(), 42, methods="saliency", store=tmp_path / "s.zarr", passes=Passes(progress=False))


def test_a_plugin_registered_on_the_manager_after_a_first_call_is_found():
    import types

    from xai_bench import Attribution, OneTarget, explain, get_plugin_manager, hookimpl
    from xai_bench.testing import tiny_cnn

    model, x = tiny_cnn().float(), torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    explain(model, x, methods="saliency", targets=[0])  # the registry is built here

    class Late(OneTarget):
        id = "late_plugin"

        def attribute_target(self, model, inputs, target):
            return Attribution(inputs.clone())

    plugin = types.ModuleType("late_plugin")
    plugin.register_attributors = hookimpl(lambda register: register(Late))
    pm = get_plugin_manager()
    pm.register(plugin, name="late_plugin")
    try:
        ds = explain(model, x, methods="late_plugin", targets=[0])
        assert np.array_equal(ds["late_plugin"].values[:, 0], x.numpy())
    finally:
        pm.unregister(name="late_plugin")
    with pytest.raises(KeyError):
        explain(model, x, methods="late_plugin", targets=[0])
