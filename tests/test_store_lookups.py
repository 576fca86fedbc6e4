"""Stores and lookups: scoring again with other parameters, misses that list what there is, stable string
coordinates, the methods' order kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xai_bench import evaluate, explain, open_maps
from xai_bench.core.errors import StoreExistsError
from xai_bench.testing import tiny_cnn


@pytest.fixture(scope="module")
def model():
    return tiny_cnn()


@pytest.fixture
def maps_store(model, tmp_path):
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    store = tmp_path / "maps.zarr"
    explain(model, x, methods=["saliency", "deeplift"], targets=[0, 1], store=store, progress=False)
    return store


def _deletion(steps: int) -> dict:
    return {"deletion": {"steps": steps, "patch": 4}}


def test_scores_are_made_again_with_other_parameters_into_the_same_store_with_overwrite(model, maps_store):
    evaluate(model, None, open_maps(maps_store), metrics=_deletion(2), store=maps_store)
    again = evaluate(model, None, open_maps(maps_store), metrics=_deletion(4), store=maps_store, overwrite=True)
    stored = open_maps(maps_store)
    assert stored["deletion_fraction"].values.tolist() == [0, 0.25, 0.5, 0.75, 1]
    np.testing.assert_array_equal(stored["saliency_deletion_curve"].values, again["saliency_deletion_curve"].values)
    assert '"steps": 4' in stored["deeplift_deletion"].attrs["params"]


def test_scores_go_into_another_store_created_for_them(model, maps_store, tmp_path):
    evaluate(model, None, open_maps(maps_store), metrics=_deletion(2), store=maps_store)
    other = tmp_path / "scores.zarr"
    evaluate(model, None, open_maps(maps_store), metrics=_deletion(4), store=other)
    assert open_maps(other)["deletion_fraction"].size == 5
    assert open_maps(maps_store)["deletion_fraction"].size == 3  # the first scores are kept


def test_a_store_that_cannot_take_the_scores_is_refused_before_any_scoring(model, maps_store, tmp_path, monkeypatch):
    evaluate(model, None, open_maps(maps_store), metrics=_deletion(2), store=maps_store)
    from xai_bench.metrics.perturbation import Deletion

    def never(*args, **kwargs):
        raise AssertionError("scored before the store was checked")

    monkeypatch.setattr(Deletion, "score", never)
    # Only saliency again, with other steps: deeplift's curve keeps the axis.
    with pytest.raises(StoreExistsError, match="keeps deeplift_deletion_curve with other deletion parameters"):
        evaluate(model, None, open_maps(maps_store), metrics=_deletion(4), methods=["saliency"], store=maps_store,
                 overwrite=True)  # fmt: skip
    with pytest.raises(StoreExistsError, match="already holds"):
        evaluate(model, None, open_maps(maps_store), metrics=_deletion(4), store=maps_store)
    with pytest.raises(StoreExistsError, match="other sample values"):
        evaluate(model, None, open_maps(maps_store).isel(sample=[0, 1]), metrics=_deletion(2), store=maps_store,
                 overwrite=True)  # fmt: skip
