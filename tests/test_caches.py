"""Caches keyed on everything a result depends on: worker models, rewritten views, fingerprints, class counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from xai_bench import Passes, StoreMismatchError, explain, open_maps, run
from xai_bench.core.provenance import model_fingerprint
from xai_bench.scale.factories import FactoryWithCheckpoint
from xai_bench.testing import tiny_cnn
from xai_bench.testing.data import SyntheticImages

ARGS = {"methods": ["saliency"], "targets": "all", "passes": Passes(batch_size=4, memory_budget="1GiB", progress=False)}
FACTORY = "xai_bench.testing.models:tiny_cnn"


def _save(path, seed: int) -> None:
    torch.save(tiny_cnn(seed=seed).state_dict(), path)


def test_workers_rebuild_the_model_when_the_checkpoint_changes(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    checkpoint = tmp_path / "weights.pt"
    factory = FactoryWithCheckpoint(FACTORY, str(checkpoint))
    data = SyntheticImages(6)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0", silence_logs=40
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        _save(checkpoint, seed=1)
        run(factory, data, store=tmp_path / "old.zarr", samples_per_block=2, client=client, **ARGS)
        _save(checkpoint, seed=2)  # the same factory, another checkpoint: the worker's model is stale
        run(factory, data, store=tmp_path / "new.zarr", samples_per_block=2, client=client, **ARGS)
    x = torch.stack([data[i]["image"] for i in range(6)])
    expected = explain(tiny_cnn(seed=2), x, **{k: v for k, v in ARGS.items() if k != "progress"})
    stored = open_maps(tmp_path / "new.zarr").load()
    np.testing.assert_allclose(stored["saliency"].values, expected["saliency"].values, rtol=1e-12)
    old = open_maps(tmp_path / "old.zarr").load()
    assert not np.allclose(old["saliency"].values, stored["saliency"].values)


def test_a_worker_checks_its_model_before_every_block(tmp_path):
    from xai_bench.core.errors import InvalidInputError
    from xai_bench.scale import cluster

    checkpoint = tmp_path / "weights.pt"
    _save(checkpoint, seed=1)
    factory = FactoryWithCheckpoint(FACTORY, str(checkpoint))
    data = SyntheticImages(4)
    store, reference = tmp_path / "maps.zarr", tmp_path / "reference.zarr"
    # A store with its first block done, the second to do.
    run(factory(), data, store=store, samples_per_block=2, **ARGS)
    run(factory(), data, store=reference, samples_per_block=2, **ARGS)
    from xai_bench.storage.sample_store import SampleStore

    SampleStore(store).mark_undone([2, 3])
    fingerprint = model_fingerprint(factory())
    net, _ = cluster._worker_model(factory, None, fingerprint)
    with torch.no_grad():
        net.fc.bias.add_(1)  # changed in place after it was built and checked
    from xai_bench.api.job import ExplainJob

    explain_args = ExplainJob.build(
        methods=["saliency"], targets="all", passes=Passes(batch_size=4, memory_budget="1GiB"), store_inputs=False,
        input_normalization=None, old={}, where="run", accepted=[],
    )  # fmt: skip
    # The kept model no longer has the run's weights: it is built again from the factory, and the block
    # gets the maps of the run's weights.
    assert cluster.explain_shard(factory, data, [2, 3], data.sample_ids, explain_args, str(store), None,
                                 fingerprint) == 2  # fmt: skip
    assert cluster._models[f"{factory!r}:None"][0] is not net
    xr.testing.assert_identical(open_maps(store).load(), open_maps(reference).load())
    # A factory that now builds other weights (its checkpoint replaced after the run started) is refused.
    SampleStore(store).mark_undone([2, 3])
    with torch.no_grad():
        cluster._models[f"{factory!r}:None"][0].fc.bias.add_(1)
    _save(checkpoint, seed=2)
    with pytest.raises(InvalidInputError, match="built other weights on a worker"):
        cluster.explain_shard(factory, data, [2, 3], data.sample_ids, explain_args, str(store), None, fingerprint)
    cluster._models.clear()


def _sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).double().eval()  # fmt: skip


def _swap_activation(m: nn.Sequential) -> None:
    m[1] = nn.GELU().eval()


def _swap_pooling(m: nn.Sequential) -> None:
    m[2] = nn.AdaptiveMaxPool2d(1).eval()


def _change_flag(m: nn.Sequential) -> None:
    m[0].padding = (1, 1)


def _extend_list(m: nn.Sequential) -> None:
    m[0].notes.append(2)


def _scale_tensor(m: nn.Sequential) -> None:
    m[0].scale.mul_(2)  # an unregistered tensor, changed in place


def _add_hook(m: nn.Sequential) -> None:
    m[4].register_forward_hook(lambda module, args, out: out / 3)


@pytest.mark.parametrize(
    "change", [_swap_activation, _swap_pooling, _change_flag, _extend_list, _scale_tensor, _add_hook]
)
def test_run_refuses_to_resume_onto_another_architecture(tmp_path, change):
    def build() -> nn.Sequential:
        model = _sequential()
        model[0].notes = [1]
        model[0].scale = torch.ones(2)
        return model

    data = SyntheticImages(2)
    run(build(), data, store=tmp_path / "maps.zarr", samples_per_block=2, **ARGS)
    assert model_fingerprint(build()) == model_fingerprint(build())
    changed = build()
    change(changed)
    assert model_fingerprint(changed) != model_fingerprint(build())
    with pytest.raises(StoreMismatchError):
        run(changed, data, store=tmp_path / "maps.zarr", samples_per_block=2, **ARGS)


class _Ordered(nn.Module):
    """Applies its layers in the order a plain list says: torch.fx unrolls the loop when it traces."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList([nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1)])
        self.block = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())  # traced into: its hooks are baked in
        self.order = [0, 1]
        self.scale = torch.tensor(1.0, dtype=torch.float64)  # not a buffer
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        for i in self.order:
            x = torch.relu(self.layers[i](x))
        x = self.block(x)
        return self.fc(x.mean((2, 3)) * self.scale)


X = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
DEEPLIFT = {"methods": ["deeplift"], "targets": [0, 2], "passes": 2}


def _fresh(model: nn.Module):
    """What a first explain of this model computes (no view cached for it)."""
    import copy

    return explain(copy.deepcopy(model), X, **DEEPLIFT)


def _hook_on_root(model):
    return model.register_forward_hook(lambda module, args, out: out / 3)


def _pre_hook_on_a_block(model):
    return model.block.register_forward_pre_hook(lambda module, args: (args[0] * 2,))


@pytest.mark.parametrize("add", [_hook_on_root, _pre_hook_on_a_block])
def test_a_hook_added_later_reaches_the_rewritten_view(add):
    model = _Ordered().double().eval()
    before = explain(model, X, **DEEPLIFT)
    handle = add(model)
    after = explain(model, X, **DEEPLIFT)
    expected = _fresh(model)
    with torch.no_grad():
        logits = model(X)
    np.testing.assert_allclose(after["score"].values, logits[:, [0, 2]].numpy(), rtol=1e-12)
    np.testing.assert_allclose(after["deeplift"].values, expected["deeplift"].values, rtol=1e-10, atol=1e-14)
    assert not np.allclose(after["deeplift"].values, before["deeplift"].values)
    handle.remove()
    again = explain(model, X, **DEEPLIFT)
    np.testing.assert_allclose(again["deeplift"].values, before["deeplift"].values, rtol=1e-10, atol=1e-14)


def test_a_forward_hook_scaling_the_output_by_a_third_scales_deeplift_by_a_third():
    model = _Ordered().double().eval()
    before = explain(model, X, **DEEPLIFT)
    model.register_forward_hook(lambda module, args, out: out / 3)
    after = explain(model, X, **DEEPLIFT)
    np.testing.assert_allclose(after["deeplift"].values, before["deeplift"].values / 3, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(after["score"].values, before["score"].values / 3, rtol=1e-12)


@pytest.mark.parametrize("change", ["list", "tensor"])
def test_attributes_changed_in_place_reach_the_rewritten_view(change):
    model = _Ordered().double().eval()
    before = explain(model, X, **DEEPLIFT)
    if change == "list":
        model.order.reverse()  # the same list object, in another order
    else:
        model.scale = torch.tensor(2.0, dtype=torch.float64)
    after = explain(model, X, **DEEPLIFT)
    np.testing.assert_allclose(after["deeplift"].values, _fresh(model)["deeplift"].values, rtol=1e-10, atol=1e-14)
    assert not np.allclose(after["deeplift"].values, before["deeplift"].values)


def _widen_in_place(model: nn.Sequential) -> None:
    head = model[4]
    head.weight = nn.Parameter(torch.randn(5, 4, dtype=torch.float64))
    head.bias = nn.Parameter(torch.randn(5, dtype=torch.float64))
    head.out_features = 5


def _swap_for_wider(model: nn.Sequential) -> None:
    model[4] = nn.Linear(4, 5).double().eval()


def _swap_for_narrower(model: nn.Sequential) -> None:
    model[4] = nn.Linear(4, 2).double().eval()


def _narrow_with_a_hook(model: nn.Sequential) -> None:
    model.register_forward_hook(lambda module, args, out: out[:, :2])  # no module and no shape changes


@pytest.mark.parametrize("swap", [_widen_in_place, _swap_for_wider, _swap_for_narrower, _narrow_with_a_hook])
@pytest.mark.parametrize("method", ["saliency", "deeplift"])
def test_a_replaced_head_gives_its_own_class_count(swap, method):
    import copy

    model = _sequential()
    args = {"methods": [method], "passes": 2}
    assert explain(model, X, targets="all", **args)[method].shape[1] == 3
    swap(model)
    with torch.no_grad():
        classes = model(X[:1]).shape[1]
    got = explain(model, X, targets="all", **args)
    expected = explain(copy.deepcopy(model), X, targets="all", **args)
    assert got[method].shape[1] == classes
    np.testing.assert_allclose(got[method].values, expected[method].values, rtol=1e-10, atol=1e-14)
    last = explain(model, X, targets=classes - 1, **args)
    np.testing.assert_allclose(last[method].values[:, 0], expected[method].values[:, -1], rtol=1e-10, atol=1e-14)


def test_the_fingerprint_follows_what_hooks_compute_not_what_they_record():
    def hooked(divisor: float) -> tuple[nn.Sequential, list]:
        model = _sequential()
        seen: list = []
        model.register_forward_hook(lambda module, args, out: seen.append(out.detach()))
        model.register_forward_hook(lambda module, args, out: out / divisor)
        return model, seen

    model, seen = hooked(3.0)
    before = model_fingerprint(model)
    model(X)
    assert seen and model_fingerprint(model) == before  # a recording hook records: the model is the same
    assert model_fingerprint(hooked(2.0)[0]) != before
    literal = _sequential()
    literal.register_forward_hook(lambda module, args, out: out / 3)
    other = _sequential()
    other.register_forward_hook(lambda module, args, out: out / 2)
    assert model_fingerprint(literal) != model_fingerprint(other)


def test_the_fingerprint_is_the_same_in_every_process():
    import os
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from xai_bench.core.provenance import model_fingerprint\n"
        "from xai_bench.testing import tiny_cnn\n"
        "m = tiny_cnn()\n"
        "m.names = {'a', 'b', 'c'}\n"
        "m.fc.register_forward_hook(lambda mod, args, out: out if mod.training in {'x', 'y'} else out / 3)\n"
        "print(model_fingerprint(m))\n"
    )
    prints = {
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True, text=True, check=True,
        ).stdout
        for seed in ("1", "2")
    }  # fmt: skip
    assert len(prints) == 1


def test_a_view_traced_through_the_root_hooks_is_in_eval_mode_and_leaves_the_model_alone():
    from xai_bench.surgery import trace

    model = _sequential()
    model.register_forward_hook(lambda module, args, out: out / 3)
    before = model_fingerprint(model)
    view = trace(model)
    assert not view.training and not model.training
    with torch.no_grad():
        torch.testing.assert_close(view(X), model(X), rtol=0, atol=0)
    assert model_fingerprint(model) == before


def test_a_hook_on_a_module_a_rule_replaces_is_refused_by_name():
    from xai_bench import SurgeryError

    model = _sequential()
    model[1].register_forward_hook(lambda module, args, out: out * 2)  # the ReLU DeepLIFT replaces
    with pytest.raises(SurgeryError, match="Modules with forward hooks, which a rule may have replaced: '1'"):
        explain(model, X, **DEEPLIFT)
