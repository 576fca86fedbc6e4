"""Localisation metrics: known scores on toy cases, chance levels, and Quantus's numbers on the same data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import quantus
import torch

from xai_bench import InvalidInputError
from xai_bench.api.evaluating import evaluate
from xai_bench.testing.data import maps_dataset

H = W = 12
LOCALISATION = ["pointing_game", "energy_pointing_game", "relevance_mass", "relevance_rank", "top_k_iou"]


def _mask(n: int = 4) -> np.ndarray:
    mask = np.zeros((n, 1, H, W), dtype=bool)
    mask[:, :, 2:6, 3:9] = True  # 24 of 144 pixels
    return mask


def _scores(maps: np.ndarray, mask: np.ndarray, metrics) -> dict[str, np.ndarray]:
    """Scores of maps (N, C, H, W) for one target."""
    ds = maps_dataset(maps[:, None], [0])
    out = evaluate(ds, metrics=metrics, masks=torch.from_numpy(mask))
    return {name.removeprefix("given_"): out[name].values[:, 0] for name in out.data_vars}


def test_a_map_equal_to_the_mask_scores_perfectly_and_its_inverse_worst():
    mask = _mask()
    exact = _scores(mask.astype(float), mask, {**dict.fromkeys(LOCALISATION), "top_k_intersection": {"k": 24}})
    assert all(np.all(exact[m] == 1.0) for m in [*LOCALISATION, "top_k_intersection"] if m != "top_k_iou")
    # The top 10% (15 pixels) lie inside the 24-pixel mask: IoU 15 / 24.
    np.testing.assert_allclose(exact["top_k_iou"], 15 / 24)
    np.testing.assert_allclose(_scores(mask.astype(float), mask, {"top_k_iou": {"fraction": 24 / 144}})["top_k_iou"], 1)
    inverted = _scores(1.0 - mask, mask, LOCALISATION)
    assert all(np.all(inverted[m] == 0.0) for m in LOCALISATION)


def test_random_maps_score_near_their_chance_level():
    rng = np.random.default_rng(0)
    n = 400
    mask = _mask(n)
    share = 24 / 144
    scores = _scores(rng.random((n, 1, H, W)), mask, LOCALISATION)
    for metric in ("pointing_game", "energy_pointing_game", "relevance_mass", "relevance_rank"):
        assert abs(scores[metric].mean() - share) < 0.05, (metric, scores[metric].mean())
    # Top 15 random pixels against 24 mask pixels: E|T ∩ M| = 15 * 24 / 144 = 2.5, IoU ≈ 2.5 / 36.5.
    assert abs(scores["top_k_iou"].mean() - 2.5 / 36.5) < 0.02


def test_energy_pointing_game_by_hand():
    m = np.zeros((1, 1, H, W))
    m[0, 0, 3, 4] = 3.0  # inside
    m[0, 0, 10, 10] = 1.0  # outside
    m[0, 0, 2, 3] = -5.0  # negative: no energy
    mask = _mask(1)
    assert _scores(m, mask, ["energy_pointing_game"])["energy_pointing_game"][0] == pytest.approx(3 / 4)
    assert _scores(m, mask, {"relevance_mass": {"positive": False}})["relevance_mass"][0] == pytest.approx(-2 / -1)


def test_pointing_game_tolerance_counts_near_misses():
    m = np.zeros((1, 1, H, W))
    m[0, 0, 7, 5] = 1.0  # one row below the mask (rows 2..5)
    mask = _mask(1)
    assert _scores(m, mask, ["pointing_game"])["pointing_game"][0] == 0.0
    assert _scores(m, mask, {"pointing_game": {"tolerance": 2}})["pointing_game"][0] == 1.0


def _quantus(metric, maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    x = np.zeros((len(maps), 3, H, W))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(
            metric(model=None, x_batch=x, y_batch=np.zeros(len(maps), dtype=int), a_batch=maps, s_batch=mask,
                   channel_first=True),
            dtype=float,
        )  # fmt: skip


@pytest.mark.parametrize("absolute", [False, True])
def test_localisation_metrics_give_quantus_numbers(absolute):
    rng = np.random.default_rng(1)
    maps = rng.standard_normal((16, 1, H, W))
    mask = np.zeros((16, 1, H, W), dtype=bool)
    for i in range(16):  # masks of different sizes and places
        top, left = rng.integers(0, 6, 2)
        mask[i, 0, top : top + rng.integers(2, 7), left : left + rng.integers(2, 7)] = True
    kw = {"abs": absolute, "normalise": False, "disable_warnings": True}
    ours = _scores(maps, mask, {
        "pointing_game": {"abs": absolute}, "relevance_mass": {"positive": False, "abs": absolute},
        "relevance_rank": {"abs": absolute}, "top_k_intersection": {"k": 20, "abs": absolute},
    })  # fmt: skip
    np.testing.assert_array_equal(ours["pointing_game"], _quantus(quantus.PointingGame(**kw), maps, mask))
    np.testing.assert_allclose(ours["relevance_mass"], _quantus(quantus.RelevanceMassAccuracy(**kw), maps, mask))
    np.testing.assert_allclose(ours["relevance_rank"], _quantus(quantus.RelevanceRankAccuracy(**kw), maps, mask))
    np.testing.assert_allclose(ours["top_k_intersection"], _quantus(quantus.TopKIntersection(k=20, **kw), maps, mask))
    influence = _scores(maps, mask, {"top_k_intersection": {"k": 20, "concept_influence": True, "abs": absolute}})
    expected = _quantus(quantus.TopKIntersection(k=20, concept_influence=True, **kw), maps, mask)
    np.testing.assert_allclose(influence["top_k_intersection"], expected)


def test_relevance_mass_of_positive_maps_is_quantus_attribution_localisation():
    rng = np.random.default_rng(2)
    maps = rng.random((8, 1, H, W))
    mask = _mask(8)
    ours = _scores(maps, mask, ["relevance_mass"])["relevance_mass"]
    theirs = _quantus(quantus.AttributionLocalisation(abs=False, normalise=False, disable_warnings=True), maps, mask)
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)  # Quantus adds 1e-9 to the denominator


def test_masks_per_target_and_as_a_dataarray_are_aligned_with_the_maps():
    import xarray as xr

    rng = np.random.default_rng(3)
    maps = rng.random((2, 2, 1, H, W))
    ds = maps_dataset(maps, [1, 3])
    per_target = np.zeros((2, 2, H, W), dtype=bool)
    per_target[:, 0, :6] = True
    per_target[:, 1, 6:] = True
    direct = evaluate(ds, metrics="relevance_mass", masks=torch.from_numpy(per_target))
    labelled = xr.DataArray(per_target[:, ::-1], dims=("sample", "target", "y", "x"),
                            coords={"sample": [0, 1], "target": [3, 1]})  # fmt: skip
    aligned = evaluate(ds, metrics="relevance_mass", masks=labelled)
    np.testing.assert_array_equal(direct["given_relevance_mass"].values, aligned["given_relevance_mass"].values)
    expected = maps[:, 0, 0, :6].sum((1, 2)) / maps[:, 0, 0].sum((1, 2))
    np.testing.assert_allclose(direct["given_relevance_mass"].values[:, 0], expected)
    with pytest.raises(InvalidInputError, match=r"masks of shape \(2, 3, 12, 12\) do not fit the maps"):
        evaluate(ds, metrics="relevance_mass", masks=torch.zeros(2, 3, H, W))
    with pytest.raises(InvalidInputError, match="localisation metrics need masks"):
        evaluate(ds, metrics="pointing_game")
