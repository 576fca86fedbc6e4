from __future__ import annotations

import importlib.metadata
import inspect
import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch

import xai_bench
from xai_bench import (
    Attribution,
    DuplicateMethodError,
    OneTarget,
    PluginError,
    UnknownMethodError,
    UnknownParameterError,
    explain,
    hookimpl,
)
from xai_bench.core import hookspecs
from xai_bench.plugins.manager import get_plugin_manager, list_plugins
from xai_bench.testing import tiny_cnn

# The six methods the study needs, spelled out: the spec, not the library's own list.
BUILTINS = {"occlusion", "saliency", "input_x_gradient", "guided_backprop", "integrated_gradients", "deeplift"}
ROOT = Path(__file__).resolve().parents[1]


class _EntryPoint:
    def __init__(self, name: str, module: str) -> None:
        self.name = name
        self.group = "xai_bench"
        self.value = module

    def load(self):
        return importlib.import_module(self.value)


class _Dist:
    def __init__(self, name: str, version: str, entry_points) -> None:
        self.metadata = {"name": name}
        self.version = version
        self.entry_points = entry_points


def _fake_plugin(module_name: str, method_id: str, monkeypatch) -> None:
    class Doubled(OneTarget):
        """Twice the input (a toy method for plugin tests)."""

        id = method_id

        def attribute_target(self, model, inputs, target):
            return Attribution(2 * inputs)

    module = types.ModuleType(module_name)

    @hookimpl
    def register_attributors(register):
        register(Doubled)

    module.register_attributors = register_attributors
    monkeypatch.setitem(sys.modules, module_name, module)


def _install(monkeypatch, *dists) -> None:
    real = list(importlib.metadata.distributions())
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [*real, *dists])


def test_builtins_register_through_the_public_hook(fresh_plugins):
    listing = xai_bench.list_methods()
    assert set(listing) >= BUILTINS
    for method_id in BUILTINS:
        assert listing[method_id]["provider"] == "xai_bench.attributors.builtin"
    pm = get_plugin_manager()
    impls = pm.hook.register_attributors.get_hookimpls()
    assert "xai_bench.attributors.builtin" in [i.plugin_name for i in impls]
    assert listing["deeplift"]["has_delta"] and listing["deeplift"]["needs_surgery"]
    assert listing["occlusion"]["parameters"] == {"window": 32, "stride": 16, "fill": 0.0, "smooth": None}


def test_entry_point_plugin_is_loaded_and_usable(monkeypatch, fresh_plugins):
    _fake_plugin("fake_xai_plugin", "doubled", monkeypatch)
    _install(monkeypatch, _Dist("fake-dist", "1.2.3", [_EntryPoint("doubled", "fake_xai_plugin")]))
    monkeypatch.delenv("XAI_BENCH_LOAD_PLUGINS", raising=False)
    assert xai_bench.list_methods()["doubled"]["provider"] == "doubled"
    assert any(p.distribution == "fake-dist" and p.version == "1.2.3" for p in list_plugins())
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    ds = explain(tiny_cnn(), x, methods=["doubled"], targets=[1])
    torch.testing.assert_close(torch.from_numpy(ds["doubled"].values[:, 0]), 2 * x)
    assert ds["doubled"].attrs["provider_distribution"] == "fake-dist"
    assert ds["doubled"].attrs["provider_version"] == "1.2.3"


@pytest.mark.parametrize(("allowed", "loaded"), [("", False), ("other", False), ("doubled", True), ("fake-dist", True)])
def test_load_plugins_env_restricts_third_party_plugins(monkeypatch, fresh_plugins, allowed, loaded):
    _fake_plugin("fake_xai_plugin", "doubled", monkeypatch)
    _install(monkeypatch, _Dist("fake-dist", "1.0", [_EntryPoint("doubled", "fake_xai_plugin")]))
    monkeypatch.setenv("XAI_BENCH_LOAD_PLUGINS", allowed)
    assert ("doubled" in xai_bench.list_methods()) is loaded
    assert set(xai_bench.list_methods()) >= BUILTINS  # built-ins always load


def test_duplicate_id_names_both_providers(monkeypatch, fresh_plugins):
    _fake_plugin("fake_dup_plugin", "saliency", monkeypatch)
    _install(monkeypatch, _Dist("dup-dist", "1.0", [_EntryPoint("dupe", "fake_dup_plugin")]))
    monkeypatch.delenv("XAI_BENCH_LOAD_PLUGINS", raising=False)
    with pytest.raises(DuplicateMethodError, match=r"'saliency'.*xai_bench\.attributors\.builtin.*'dupe'"):
        xai_bench.list_methods()


def test_broken_plugin_is_reported_with_its_name(monkeypatch, fresh_plugins):
    _install(monkeypatch, _Dist("broken-dist", "0.1", [_EntryPoint("broken", "no_such_module_xyz")]))
    monkeypatch.delenv("XAI_BENCH_LOAD_PLUGINS", raising=False)
    with pytest.raises(PluginError, match="'broken' from distribution 'broken-dist' failed to load"):
        xai_bench.list_methods()


def test_registering_a_non_attributor_is_refused(monkeypatch, fresh_plugins):
    module = types.ModuleType("fake_bad_plugin")

    @hookimpl
    def register_attributors(register):
        register(object)

    module.register_attributors = register_attributors
    monkeypatch.setitem(sys.modules, "fake_bad_plugin", module)
    _install(monkeypatch, _Dist("bad-dist", "1.0", [_EntryPoint("bad", "fake_bad_plugin")]))
    monkeypatch.delenv("XAI_BENCH_LOAD_PLUGINS", raising=False)
    with pytest.raises(PluginError, match="expected a subclass of xai_bench.attributors.base.Attributor"):
        xai_bench.list_methods()


def test_unknown_method_is_a_keyerror_with_suggestions():
    with pytest.raises(UnknownMethodError) as info:
        explain(tiny_cnn(), torch.rand(1, 3, 8, 8, dtype=torch.float64), methods=["deeplfit"], targets=0)
    assert isinstance(info.value, KeyError)
    assert "Did you mean 'deeplift'" in str(info.value)


def test_unknown_parameter_suggests_the_right_name():
    with pytest.raises(UnknownParameterError, match="no parameter 'n_step'.*Did you mean 'n_steps'") as info:
        explain(
            tiny_cnn(),
            torch.rand(1, 3, 8, 8, dtype=torch.float64),
            methods={"integrated_gradients": {"n_step": 3}},
            targets=0,
        )
    assert isinstance(info.value, TypeError)


def test_importing_xai_bench_loads_no_optional_dependency():
    code = "import sys, xai_bench; print(sorted(m for m in ('torchvision', 'timm', 'dask') if m in sys.modules))"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_profiler_plugins_register_through_their_hook_and_run_in_profile(monkeypatch, fresh_plugins):
    import xarray as xr

    from xai_bench import GlobalProfiler, profile
    from xai_bench.plugins import registry

    class Counting(GlobalProfiler):
        """Counts samples per group, and how many taps it was given."""

        id = "counting"

        def __init__(self, *, layers, groups, scale: int = 1) -> None:
            super().__init__(layers=layers, groups=groups)
            self.scale = scale
            self._counts = None

        def update(self, activations, groups):
            assert set(activations) == set(self.layers)
            add = self.scale * groups.sum(0)
            self._counts = add if self._counts is None else self._counts + add

        def merge(self, other):
            merged = Counting(layers=self._layers, groups=self.groups, scale=self.scale)
            merged._counts = self._counts + other._counts
            return merged

        def result(self):
            return xr.Dataset({"count": ("group", self._counts.numpy())}, coords={"group": self.groups})

    module = types.ModuleType("fake_profiler_plugin")

    @hookimpl
    def register_profilers(register):
        register(Counting)

    module.register_profilers = register_profilers
    monkeypatch.setitem(sys.modules, "fake_profiler_plugin", module)
    _install(monkeypatch, _Dist("prof-dist", "1.0", [_EntryPoint("counting", "fake_profiler_plugin")]))
    monkeypatch.delenv("XAI_BENCH_LOAD_PLUGINS", raising=False)
    entry = registry.profilers.get("counting")
    assert entry.provider == "counting"
    with pytest.raises(UnknownMethodError, match="Unknown profiler 'countin'.*Did you mean 'counting'"):
        registry.profilers.get("countin")
    x = torch.rand(7, 3, 12, 12, dtype=torch.float64)
    groups = torch.tensor([0, 1, 1, 0, 1, 1, 1])
    ds = profile(tiny_cnn(), x, layers=["conv1", "conv3"], groups=groups, group_names=["a", "b"],
                 profilers={"counting": {"scale": 2}}, passes=3)  # fmt: skip
    assert ds["count"].values.tolist() == [4, 10]
    assert json.loads(ds.attrs["profilers"]) == {"counting": {"scale": 2}}


def _hook_names() -> list[str]:
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]


def test_every_hook_is_documented():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for name in _hook_names():
        assert re.search(rf"`{name}\(register\)`", docs), f"docs/plugins.md does not document {name}"


def test_every_hook_has_a_test():
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != "test_plugins.py")
    tests += Path(__file__).read_text().split("def _hook_names")[0]
    for name in _hook_names():
        assert f"def {name}" in tests, f"no test implements the {name} hook"


def test_two_distributions_declaring_one_plugin_name_is_an_error_naming_both(monkeypatch, fresh_plugins):
    _fake_plugin("fake_real_plugin", "doubled", monkeypatch)
    _fake_plugin("fake_impostor_plugin", "doubled", monkeypatch)
    _install(
        monkeypatch,
        _Dist("xai-bench-real", "1.0", [_EntryPoint("gradcam", "fake_real_plugin")]),
        _Dist("impostor", "6.6", [_EntryPoint("gradcam", "fake_impostor_plugin")]),
    )
    monkeypatch.setenv("XAI_BENCH_LOAD_PLUGINS", "gradcam")
    with pytest.raises(PluginError, match=r"'gradcam' is declared by xai-bench-real 1.0 .* and impostor 6.6"):
        xai_bench.list_methods()
    # Naming the distribution as well picks the one meant.
    from xai_bench.plugins.manager import reset_plugin_manager

    reset_plugin_manager()
    monkeypatch.setenv("XAI_BENCH_LOAD_PLUGINS", "xai-bench-real:gradcam")
    assert [p.distribution for p in list_plugins() if p.name == "gradcam"] == ["xai-bench-real"]
