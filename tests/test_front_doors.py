"""0.3's front doors: typed methods and metrics, ``Passes``, the ``ds.xai`` accessor and the list_* names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

import xai_bench
from xai_bench import (
    Deletion,
    IntegratedGradients,
    InvalidParameterError,
    Occlusion,
    Passes,
    PointingGame,
    Saliency,
    Targets,
    UnknownMethodError,
    evaluate,
    explain,
)
from xai_bench.testing import tiny_cnn


def _x(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# Typed methods and metrics ------------------------------------------------------------------------------------


def test_typed_methods_give_the_maps_of_their_ids():
    model, x = tiny_cnn(), _x()
    typed = explain(model, x, methods=[IntegratedGradients(n_steps=8), "saliency", Occlusion(window=4, stride=4)],
                    targets=[1], passes=6)  # fmt: skip
    named = explain(model, x, methods={"integrated_gradients": {"n_steps": 8}, "saliency": {},
                                       "occlusion": {"window": 4, "stride": 4}}, targets=[1], passes=6)  # fmt: skip
    xr.testing.assert_identical(typed.drop_attrs(), named.drop_attrs())
    assert typed["integrated_gradients"].attrs["params"] == named["integrated_gradients"].attrs["params"]
    assert typed.xai.methods == ["integrated_gradients", "saliency", "occlusion"]


def test_a_typed_method_alone_and_typed_metrics():
    model, x = tiny_cnn(), _x()
    ds = explain(model, x, methods=Saliency(), targets=[0])
    masks = torch.zeros(3, 1, 12, 12, dtype=torch.bool)
    masks[:, :, 2:6, 2:6] = True
    typed = evaluate(ds, model=model, metrics=[Deletion(steps=4, patch=4), PointingGame()], masks=masks, passes=6)
    named = evaluate(ds, model=model, metrics={"deletion": {"steps": 4, "patch": 4}, "pointing_game": {}}, masks=masks,
                     passes=6)  # fmt: skip
    xr.testing.assert_identical(typed.drop_attrs(), named.drop_attrs())


def test_typed_methods_are_refused_by_name_when_unregistered_or_listed_twice():
    class Unregistered(Saliency):
        id = "unregistered"

    model, x = tiny_cnn(), _x()
    with pytest.raises(UnknownMethodError, match="Unregistered.*not registered as a method"):
        explain(model, x, methods=[Unregistered()], targets=[0])
    with pytest.raises(InvalidParameterError, match="'saliency' is listed twice"):
        explain(model, x, methods=[Saliency(), "saliency"], targets=[0])


def test_a_smoothed_typed_method_is_the_smoothed_id():
    from xai_bench.plugins import registry

    ((entry, smoothed),) = registry.resolve(registry.attributors, {"saliency": {"smooth": {"samples": 4}}})
    ((again, same),) = registry.resolve(registry.attributors, [smoothed])
    assert again is entry and same is smoothed


# Passes -------------------------------------------------------------------------------------------------------


def test_passes_are_checked_when_made_and_built_from_plain_forms():
    assert Passes.of(None) == Passes()
    assert Passes.of(8) == Passes(batch_size=8) and Passes.of("auto") == Passes()
    assert Passes.of({"memory_budget": "4GiB"}).memory_budget == "4GiB"
    assert Passes(batch_size=4).fixed_images == 4 and Passes().fixed_images is None
    with pytest.raises(InvalidParameterError, match="batch_size must be 'auto' or a positive int"):
        Passes(batch_size=0)
    with pytest.raises(InvalidParameterError, match="is not a size"):
        Passes(memory_budget="four gigs")
    with pytest.raises(InvalidParameterError, match="progress must be True, False or 'auto'"):
        Passes(progress="yes")
    with pytest.raises(InvalidParameterError, match="passes has no field 'batch'"):
        Passes.of({"batch": 4})
    with pytest.raises(InvalidParameterError, match="passes must be a Passes"):
        Passes.of(True)


# The ds.xai accessor ------------------------------------------------------------------------------------------


@given(rows=st.lists(st.lists(st.integers(0, 3), max_size=3, unique=True), min_size=1, max_size=4))
def test_pairs_are_exactly_the_pairs_with_maps(rows):
    """Property: in the slot layout, pairs() lists each (sample, target) whose map was computed, in order."""
    model, x = tiny_cnn(), _x(len(rows))
    labels = ["cat", "dog", "cow", "owl"]
    ds = explain(model, x, methods="saliency", targets=Targets(rows, class_names=labels))
    expected = [(i, labels[c]) for i, row in enumerate(rows) for c in row]
    assert ds.xai.pairs() == expected
    assert ds.xai.targets() == list(dict.fromkeys(t for _, t in expected))
    for sample, target in expected:
        picked = ds.xai.select("saliency", sample, target)
        assert picked.dims == ("channel", "y", "x") and np.isfinite(picked.values).all()
        xr.testing.assert_identical(picked, xai_bench.select_map(ds, "saliency", sample=sample, target=target))
    for i, row in enumerate(rows):
        assert ds.xai.targets(i) == [labels[c] for c in row]


def test_the_accessor_reads_both_layouts_alike(tmp_path):
    model, x = tiny_cnn(), _x()
    dense = explain(model, x, methods=["saliency", "deeplift"], targets=[2, 0], store=tmp_path / "d.zarr")
    stored = xai_bench.open_maps(tmp_path / "d.zarr")
    for ds in (dense, stored):
        assert ds.xai.layout == "dense" and ds.xai.methods == ["saliency", "deeplift"]
        assert ds.xai.pairs() == [(s, t) for s in range(3) for t in (2, 0)]
        assert ds.xai.targets() == [2, 0] and ds.xai.output == "logit"
        assert ds.xai.inputs is not None and ds.xai.inputs.shape == (3, 3, 12, 12)
        with torch.no_grad():
            logit = float(model(x[1:2])[0, 0])
        assert ds.xai.score(1, 0) == pytest.approx(logit)
    slot = explain(model, x, methods="saliency", targets=torch.tensor([3, 1, 3]), store_inputs=False)
    assert slot.xai.layout == "slot" and slot.xai.pairs() == [(0, 3), (1, 1), (2, 3)] and slot.xai.inputs is None
    assert np.isnan(slot.xai.score(0, 1))


def test_metric_scores_are_found_without_parsing_names():
    model, x = tiny_cnn(), _x()
    ds = explain(model, x, methods=["saliency", "deeplift"], targets=[0])
    scores = evaluate(ds, model=model, metrics={"deletion": {"steps": 4, "patch": 4}, "completeness": {}})
    assert scores.xai.metrics == ["deletion", "completeness"]
    assert scores.xai.metric("deletion", "deeplift").equals(scores["deeplift_deletion"])
    assert scores.xai.metric("deletion", "saliency", "curve").dims[-1] == "deletion_fraction"
    with pytest.raises(KeyError, match="deletion of saliency has no part 'cruve'; it has"):
        scores.xai.metric("deletion", "saliency", "cruve")
    with pytest.raises(KeyError, match="no completeness scores of 'saliency'"):
        scores.xai.metric("completeness", "saliency")  # saliency has no delta: skipped


# Names --------------------------------------------------------------------------------------------------------


def test_list_names_and_the_old_spelling():
    assert "deletion" in xai_bench.list_metrics() and "naps" in xai_bench.list_profilers()
    listing = xai_bench.list_methods()
    assert "integrated_gradients" in listing and listing["integrated_gradients"]["parameters"]["n_steps"] == 50
    with pytest.deprecated_call(match=r"xai_bench.methods\(\) is deprecated .* use xai_bench.list_methods\(\)"):
        assert xai_bench.methods() == listing


# One cache per model --------------------------------------------------------------------------------------------


def test_one_cache_per_model_that_forget_drops_and_that_goes_with_the_model():
    import gc
    import weakref

    from xai_bench.core import cache

    model, x = tiny_cnn(), _x()
    before = cache.cached_models()
    first = explain(model, x, methods=["deeplift"], targets=[0])
    for kind in ("costs", "measurements", "trace", "rewrites", "checked views"):
        assert cache.cache_of(model, kind), f"nothing cached as {kind}"
    xai_bench.forget(model)
    assert not cache.cache_of(model, "rewrites") and not cache.cache_of(model, "costs")
    again = explain(
        model,
        x,
        methods=["deeplift"],
        targets=[0],
        passes=Passes(batch_size=first["deeplift"].attrs["images_per_pass"]),
    )
    np.testing.assert_allclose(again["deeplift"].values, first["deeplift"].values, rtol=1e-12, atol=1e-14)
    alive = weakref.ref(model)
    del model, first, again
    gc.collect()
    # Nothing cached keeps the model alive, and its caches went with it.
    assert alive() is None and cache.cached_models() <= before


# The spellings of 0.2 -------------------------------------------------------------------------------------------

LABELS = ["cat", "dog", "cow", "owl"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"batch_size": 4}, {"passes": 4}),
        ({"batch_size": 4, "memory_budget": "1GiB", "progress": False},
         {"passes": Passes(batch_size=4, memory_budget="1GiB", progress=False)}),
        ({"labels": LABELS, "task": "multilabel", "threshold": 0.4, "max_targets": 4, "batch_size": 4},
         {"targets": Targets("predicted", class_names=LABELS, task="multilabel", threshold=0.4, max_targets=4),
          "passes": 4}),
    ],
)  # fmt: skip
def test_old_keywords_of_explain_warn_with_the_new_spelling_and_give_the_same_result(old, new):
    model, x = tiny_cnn(), _x()
    with pytest.deprecated_call(match=r"explain\(\w+=\.\.\.\) is deprecated .* use (passes|targets)=") as caught:
        before = explain(model, x, methods="saliency", **old)
    assert len(caught) == len(old)  # one warning per old keyword
    xr.testing.assert_identical(before, explain(model, x, methods="saliency", **new))


def test_the_old_forms_of_evaluate_run_and_profile(tmp_path):
    model, x = tiny_cnn(), _x()
    ds = explain(model, x, methods="saliency", targets=[0])
    chosen = {"deletion": {"steps": 4, "patch": 4}}
    with pytest.deprecated_call(match=r"evaluate\(model, inputs, maps, \.\.\.\) is deprecated"):
        before = evaluate(model, None, ds, metrics=chosen, passes=4)
    xr.testing.assert_identical(before, evaluate(ds, model=model, metrics=chosen, passes=4))
    with pytest.deprecated_call(match=r"evaluate\(store=\.\.\.\) is deprecated.*evaluate\(into=\.\.\.\)"):
        evaluate(ds, model=model, metrics=chosen, passes=4, store=tmp_path / "scores.zarr")
    assert xai_bench.open_maps(tmp_path / "scores.zarr").xai.metrics == ["deletion"]
    with pytest.deprecated_call(match=r"run\(dataset=\.\.\.\) is deprecated"):
        summary = xai_bench.run(model, dataset=x, methods="saliency", targets=[0], store=tmp_path / "r.zarr",
                                passes=4)  # fmt: skip
    assert summary.computed == 3
    with pytest.deprecated_call(match=r"profile\((data|batch_size)=\.\.\.\) is deprecated") as caught:
        xai_bench.profile(model, data=x, layers=["conv1"], groups=torch.tensor([0, 1, 0]), group_names=["a", "b"],
                          batch_size=2)  # fmt: skip
    assert {str(w.message).split(")")[0] for w in caught} == {"profile(data=...", "profile(batch_size=..."}


def test_old_and_new_spellings_together_or_unknown_keywords_are_refused_by_name():
    model, x = tiny_cnn(), _x()
    both = pytest.raises(InvalidParameterError, match=r"got passes= and batch_size=: give batch_size inside passes")
    with both, pytest.deprecated_call():
        explain(model, x, methods="saliency", passes=4, batch_size=2)
    both = pytest.raises(InvalidParameterError, match=r"got targets=Targets\(\.\.\.\) and task=")
    with both, pytest.deprecated_call():
        explain(model, x, methods="saliency", targets=Targets([0]), task="multilabel")
    with pytest.raises(TypeError, match=r"explain\(\) got an unexpected keyword argument 'batchsize'.*'batch_size'"):
        explain(model, x, methods="saliency", batchsize=2)
    with pytest.raises(TypeError, match=r"evaluate\(\) got an unexpected keyword argument 'metric'.*'metrics'"):
        evaluate(explain(model, x, methods="saliency", targets=[0]), metrics="completeness", metric="x")


def test_the_command_lines_old_flags_still_work_with_a_note(tmp_path, capsys):
    from xai_bench.app.cli import main

    argv = ["run", "--model", "xai_bench.testing.models:tiny_cnn",
            "--dataset", "xai_bench.testing.data:SyntheticImages", "--methods", "saliency", "--targets", "0",
            "--store", str(tmp_path / "s.zarr"), "--budget", "256MiB", "--labels", "a,b,c,d"]  # fmt: skip
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "--budget is deprecated; use --memory-budget" in err and "--labels is deprecated; use --class-names" in err
    stored = xai_bench.open_maps(tmp_path / "s.zarr")
    assert stored.xai.targets(stored.xai.samples[0]) == ["a"] and stored.attrs["memory_budget"] == 256 * 2**20


# One reading of data-set items ----------------------------------------------------------------------------------


def test_run_evaluate_and_profile_read_items_alike(tmp_path):
    """(image, label) pairs as torchvision's data sets and TensorDataset yield them, and dicts: the label is
    never taken for a sample id (a class index 0 would collide with sample 0's position)."""
    model, x = tiny_cnn(), _x(4)
    labels = torch.tensor([1, 0, 1, 1])
    pairs = torch.utils.data.TensorDataset(x, labels)
    dicts = [{"image": image, "label": int(label)} for image, label in zip(x, labels, strict=True)]
    summary = xai_bench.run(model, pairs, methods="saliency", targets=[0], store=tmp_path / "p.zarr", passes=4)
    stored = summary.open()
    assert stored.xai.samples == [0, 1, 2, 3]
    xr.testing.assert_allclose(
        stored["saliency"], explain(model, x, methods="saliency", targets=[0], passes=4)["saliency"]
    )
    for data in (pairs, dicts):
        scores = evaluate(stored, model=model, inputs=data, metrics={"deletion": {"steps": 2, "patch": 6}}, passes=4)
        assert np.isfinite(scores.xai.metric("deletion", "saliency").values).all()
    loader = torch.utils.data.DataLoader(pairs, batch_size=2)
    by_pairs = xai_bench.profile(model, loader, layers=["conv1"], group_names=["a", "b"], passes=4)
    by_dicts = xai_bench.profile(model, [{"image": x[:2], "label": labels[:2]}, {"image": x[2:], "label": labels[2:]}],
                                 layers=["conv1"], group_names=["a", "b"], passes=4)  # fmt: skip
    xr.testing.assert_allclose(by_pairs["conv1"], by_dicts["conv1"])
    with pytest.raises(xai_bench.InvalidInputError, match="batch 0 is a str; expected an image tensor"):
        xai_bench.profile(model, ["not an image"], layers=["conv1"], group_names=["a", "b"])


def test_one_name_for_reading_every_checksum(tmp_path):
    model, x = tiny_cnn(), _x()
    store = tmp_path / "s.zarr"
    xai_bench.run(model, x, methods="saliency", targets=[0], store=store, passes=4)
    assert xai_bench.verify_store(store, checksums=True).ok and xai_bench.open_maps(store, checksums=True).xai.methods
    with pytest.deprecated_call(match=r"verify_store\(read=\.\.\.\) is deprecated.*verify_store\(checksums=\.\.\.\)"):
        assert xai_bench.verify_store(store, read=False).ok
    with pytest.deprecated_call(match=r"open_maps\(verify=\.\.\.\) is deprecated.*open_maps\(checksums=\.\.\.\)"):
        xai_bench.open_maps(store, verify=True)
    with pytest.deprecated_call(match=r"run\(verify=\.\.\.\) is deprecated.*run\(checksums=\.\.\.\)"):
        assert (
            xai_bench.run(model, x, methods="saliency", targets=[0], store=store, passes=4, verify=False).skipped == 3
        )
    with pytest.raises(TypeError, match=r"open_maps\(\) got an unexpected keyword argument 'checksum'.*'checksums'"):
        xai_bench.open_maps(store, checksum=True)


def test_what_the_review_found_stays_fixed(tmp_path):
    model, x = tiny_cnn(), _x()
    ds = explain(model, x, methods="saliency", targets=[0], store_inputs=False)
    chosen = {"deletion": {"steps": 2, "patch": 6}}
    # numpy inputs, as a whole array and as a list of arrays, score like the tensor
    want = evaluate(ds, model=model, inputs=x, metrics=chosen, passes=4)
    for inputs in (x.numpy(), list(x.numpy())):
        xr.testing.assert_identical(evaluate(ds, model=model, inputs=inputs, metrics=chosen, passes=4), want)
    # an instance given with parameters, and both spellings of one thing, are refused rather than one ignored
    with pytest.raises(InvalidParameterError, match="IntegratedGradients is given as an instance and with parameters"):
        explain(model, x, methods={IntegratedGradients(): {"n_steps": 5}}, targets=[0])
    store = tmp_path / "s.zarr"
    with pytest.raises(InvalidParameterError, match="got into= and store="), pytest.deprecated_call():
        evaluate(ds, model=model, metrics=chosen, into=store, store=store)
    with pytest.raises(InvalidParameterError, match="got inputs= and dataset="), pytest.deprecated_call():
        xai_bench.run(model, x, dataset=x, methods="saliency", targets=[0], store=store)
    xai_bench.run(model, x, methods="saliency", targets=[0], store=store, passes=4)
    with pytest.raises(InvalidParameterError, match="got checksums= and verify="), pytest.deprecated_call():
        xai_bench.open_maps(store, checksums=True, verify=False)
    with pytest.deprecated_call(
        match=r"explain\(output=\.\.\.\) is deprecated.*targets=Targets\(\.\.\., output=\.\.\.\)"
    ):
        assert explain(model, x, methods="saliency", targets=[0], output="sigmoid").xai.output == "sigmoid"


def test_the_class_count_is_probed_once_per_model_state_and_input_shape(monkeypatch):
    from xai_bench.api import explaining

    calls = []
    real = explaining.probe
    monkeypatch.setattr(explaining, "probe", lambda net, inputs: calls.append(1) or real(net, inputs))
    model, x = tiny_cnn(), _x()
    for _ in range(3):
        explain(model, x, methods="saliency", targets=[0], passes=4)
    assert len(calls) == 1  # the same weights, module tree and inputs: the one-image pass runs once
    explain(model, _x(3, seed=1)[:, :, :8, :8], methods="saliency", targets=[0], passes=4)
    assert len(calls) == 2  # another input shape
    with torch.no_grad():
        model.fc.weight.mul_(2.0)  # weights changed in place: the fingerprint changes
    explain(model, x, methods="saliency", targets=[0], passes=4)
    explain(model, x, methods="saliency", targets=Targets([0], output="sigmoid"), passes=4)  # another head
    assert len(calls) == 4
    xai_bench.forget(model)
    explain(model, x, methods="saliency", targets=[0], passes=4)
    assert len(calls) == 5
