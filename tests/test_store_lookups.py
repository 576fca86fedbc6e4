"""Stores and lookups: scoring again with other parameters, misses that list what there is, stable string
coordinates, the methods' order kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xai_bench import Passes, Targets, evaluate, explain, open_maps, save_maps, select_map
from xai_bench.app.cli import main as cli
from xai_bench.core.errors import StoreExistsError
from xai_bench.testing import tiny_cnn


@pytest.fixture(scope="module")
def model():
    return tiny_cnn()


@pytest.fixture
def maps_store(model, tmp_path):
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    store = tmp_path / "maps.zarr"
    explain(model, x, methods=["saliency", "deeplift"], targets=[0, 1], store=store, passes=Passes(progress=False))
    return store


def _deletion(steps: int) -> dict:
    return {"deletion": {"steps": steps, "patch": 4}}


def test_scores_are_made_again_with_other_parameters_into_the_same_store_with_overwrite(model, maps_store):
    evaluate(open_maps(maps_store), model=model, metrics=_deletion(2), into=maps_store)
    again = evaluate(open_maps(maps_store), model=model, metrics=_deletion(4), into=maps_store, overwrite=True)
    stored = open_maps(maps_store)
    assert stored["deletion_fraction"].values.tolist() == [0, 0.25, 0.5, 0.75, 1]
    np.testing.assert_array_equal(stored["saliency_deletion_curve"].values, again["saliency_deletion_curve"].values)
    assert '"steps": 4' in stored["deeplift_deletion"].attrs["params"]


def test_scores_go_into_another_store_created_for_them(model, maps_store, tmp_path):
    evaluate(open_maps(maps_store), model=model, metrics=_deletion(2), into=maps_store)
    other = tmp_path / "scores.zarr"
    evaluate(open_maps(maps_store), model=model, metrics=_deletion(4), into=other)
    assert open_maps(other)["deletion_fraction"].size == 5
    assert open_maps(maps_store)["deletion_fraction"].size == 3  # the first scores are kept


def test_a_store_that_cannot_take_the_scores_is_refused_before_any_scoring(model, maps_store, tmp_path, monkeypatch):
    evaluate(open_maps(maps_store), model=model, metrics=_deletion(2), into=maps_store)
    from xai_bench.metrics.perturbation import Deletion

    def never(*args, **kwargs):
        raise AssertionError("scored before the store was checked")

    monkeypatch.setattr(Deletion, "score", never)
    # Only saliency again, with other steps: deeplift's curve keeps the axis.
    with pytest.raises(StoreExistsError, match="keeps deeplift_deletion_curve with other deletion parameters"):
        evaluate(open_maps(maps_store), model=model, metrics=_deletion(4), methods=["saliency"], into=maps_store,
                 overwrite=True)  # fmt: skip
    with pytest.raises(StoreExistsError, match="already holds"):
        evaluate(open_maps(maps_store), model=model, metrics=_deletion(4), into=maps_store)
    with pytest.raises(StoreExistsError, match="other sample values"):
        evaluate(open_maps(maps_store).isel(sample=[0, 1]), model=model, metrics=_deletion(2), into=maps_store,
                 overwrite=True)  # fmt: skip


@pytest.fixture
def labelled(model, tmp_path):
    x = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    store = tmp_path / "labelled.zarr"
    ids = [f"case{i:02d}" for i in range(12)]
    explain(
        model,
        x,
        methods=["saliency", "deeplift", "input_x_gradient"],
        sample_ids=ids,
        store=store,
        targets=Targets(["w", "z"], class_names=["w", "x", "y", "z"]),
        passes=Passes(progress=False),
    )
    return store


def test_select_map_lists_the_samples_and_targets_there_are_on_a_miss(labelled):
    ds = open_maps(labelled)
    assert select_map(ds, "saliency", sample="case03", target="z").dims == ("channel", "y", "x")
    with pytest.raises(KeyError, match=r"no sample 'case3' in the dataset; samples: case00, case01, .*case09, "
                       r"\.\.\. \(12 in all\)\. Did you mean 'case03'") as miss:  # fmt: skip
        select_map(ds, "saliency", sample="case3", target="z")
    assert "nearest" not in str(miss.value)
    with pytest.raises(KeyError, match=r"has no map of target 'y'; it has \['w', 'z'\]"):
        select_map(ds, "saliency", sample="case03", target="y")


def test_show_lists_the_samples_on_a_miss_and_says_where_it_wrote_the_picture(labelled, tmp_path, capsys,
                                                                              monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert cli(["show", str(labelled), "--sample", "case3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xai-bench: error: no sample 'case3'") and "samples: case00, case01," in err
    assert len(err.splitlines()) == 1
    assert cli(["show", str(labelled), "--sample", "case03", "--target", "z"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"picture written to {tmp_path / 'case03.png'}")
    assert (tmp_path / "case03.png").stat().st_size > 1000


def test_open_maps_keeps_the_methods_in_the_order_they_were_asked_for(labelled, model):
    evaluate(open_maps(labelled), model=model, metrics={"deletion": {"steps": 2, "patch": 4}}, into=labelled)
    names = list(open_maps(labelled).data_vars)
    owner = [next(m for m in ("saliency", "deeplift", "input_x_gradient", "") if n.startswith(m)) for n in names]
    # The methods as asked for (not by name), each followed by its own delta and scores.
    assert list(dict.fromkeys(owner)) == ["saliency", "deeplift", "input_x_gradient", ""]
    assert names.index("deeplift_delta") < names.index("input_x_gradient")


def test_string_coordinates_are_written_as_zarr_v3_strings_without_a_warning(labelled, model, tmp_path):
    import warnings

    import zarr

    ds = open_maps(labelled)  # sample ids and target names come back as fixed-width numpy strings
    assert ds["sample"].dtype.kind == "U"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zarr's UnstableSpecificationWarning among them
        save_maps(ds.isel(sample=[0, 1]), tmp_path / "part.zarr")
        evaluate(ds, model=model, metrics={"deletion": {"steps": 2, "patch": 4}}, into=tmp_path / "scores.zarr")
    for store in ("part.zarr", "scores.zarr"):
        group = zarr.open_group(tmp_path / store, mode="r")
        assert str(group["sample"].metadata.data_type.to_json(zarr_format=3)) == "string"
        assert open_maps(tmp_path / store)["sample"].values.tolist()[:2] == ["case00", "case01"]
