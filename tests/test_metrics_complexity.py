"""Sparseness and complexity: Quantus 0.6.0's numbers on the same maps, and the closed forms."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import quantus
from hypothesis import given
from hypothesis import strategies as st

from xai_bench import InvalidParameterError, UnknownParameterError
from xai_bench.api.evaluating import evaluate
from xai_bench.testing.data import maps_dataset


def _scores(maps: np.ndarray, **params) -> dict[str, np.ndarray]:
    """Sparseness and complexity of ``maps`` (N, C, H, W), one target per sample, through evaluate."""
    ds = maps_dataset(maps[:, None], [0])
    out = evaluate(ds, metrics={"sparseness": params, "complexity": {}})
    return {name: out[f"given_{name}"].values[:, 0] for name in ("sparseness", "complexity")}


def _quantus(cls, maps: np.ndarray, **kwargs) -> np.ndarray:
    """Quantus's scores of channel-summed ``maps`` (as its explanation functions sum them)."""
    a = maps.sum(1, keepdims=True)
    x = np.zeros((len(maps), 3, *maps.shape[2:]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Quantus warns about its parameterisation
        metric = cls(disable_warnings=True, **kwargs)
        return np.asarray(metric(model=None, x_batch=x, y_batch=np.zeros(len(maps), int), a_batch=a.copy(),
                                 channel_first=True))  # fmt: skip


def test_sparseness_and_complexity_give_quantus_numbers():
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((6, 3, 10, 12)) * rng.random((6, 1, 1, 1)) * 5
    maps[1, :, :5] = 0.0  # half the map without relevance
    maps[2] = np.abs(maps[2]) ** 6  # a few pixels hold most of it
    ours = _scores(maps)
    # Quantus's default divides every map by the largest value of the whole batch, which matters through its
    # 1e-7: normalising per map (its normalise_axes) is its score of each map alone, as here.
    per_map = {"normalise_func_kwargs": {"normalise_axes": (1, 2, 3)}}
    sparseness = _quantus(quantus.Sparseness, maps, **per_map)
    complexity = _quantus(quantus.Complexity, maps, **per_map)
    np.testing.assert_allclose(ours["sparseness"], sparseness, rtol=1e-12)
    # Quantus takes log(p + 1e-12), which lowers the entropy by sum_i p_i log(1 + 1e-12 / p_i) <= n * 1e-12.
    gap = ours["complexity"] - complexity
    assert np.all(gap >= -1e-14) and np.all(gap <= 120 * 1e-12 + 1e-14), gap
    alone = np.concatenate([_quantus(quantus.Sparseness, maps[i : i + 1]) for i in range(6)])
    np.testing.assert_allclose(ours["sparseness"], alone, rtol=1e-12)


def test_maps_are_summed_over_channels_before_their_magnitudes():
    rng = np.random.default_rng(1)
    one = rng.standard_normal((3, 1, 8, 8))
    split = np.concatenate([one * 2.0, -one * 0.5, -one * 0.5], 1)  # sums to the one-channel map
    np.testing.assert_allclose(_scores(split)["sparseness"], _scores(one)["sparseness"], rtol=1e-12)
    np.testing.assert_allclose(_scores(split)["complexity"], _scores(one)["complexity"], rtol=1e-12)
    cancelling = np.concatenate([one, -one], 1)  # a map of zeros once summed
    np.testing.assert_allclose(_scores(cancelling)["sparseness"], 0.0, atol=1e-15)
    assert np.isnan(_scores(cancelling)["complexity"]).all()


@given(
    side=st.integers(2, 9),
    where=st.integers(0, 80),
    value=st.floats(1e-3, 1e3) | st.floats(-1e3, -1e-3),
    eps=st.sampled_from([0.0, 1e-7, 1e-3]),
)
def test_one_hot_and_constant_maps_have_their_closed_forms(side, where, value, eps):
    n = side * side
    one_hot = np.zeros((1, 1, side, side))
    one_hot.flat[where % n] = value
    constant = np.full((1, 1, side, side), value)
    scores = _scores(np.concatenate([one_hot, constant]), eps=eps)
    # One-hot, sorted ascending: n - 1 values eps, then 1 + eps; the weights (2i - n - 1) sum to 0, so the
    # numerator is (n - 1) (1 + eps) - (n - 1) eps = n - 1 and the denominator n (1 + n eps).
    assert scores["sparseness"][0] == pytest.approx((n - 1) / (n * (1 + n * eps)), rel=1e-12)
    assert scores["sparseness"][1] == pytest.approx(0.0, abs=1e-12)
    assert scores["complexity"][0] == 0.0
    assert scores["complexity"][1] == pytest.approx(math.log(n), rel=1e-12)


@given(side=st.integers(2, 9), k=st.integers(1, 81), seed=st.integers(0, 1000))
def test_k_equal_pixels_give_gini_1_minus_k_over_n_and_entropy_log_k(side, k, seed):
    n = side * side
    k = min(k, n)
    on = np.random.default_rng(seed).permutation(n)[:k]
    flat = np.zeros(n)
    flat[on] = 3.5
    scores = _scores(flat.reshape(1, 1, side, side), eps=0.0)
    # Sorted: n - k zeros, then k equal values at ranks n-k+1..n: sum (2i - n - 1) = k (n - k), over n k.
    assert scores["sparseness"][0] == pytest.approx(1 - k / n, abs=1e-12)
    assert scores["complexity"][0] == pytest.approx(math.log(k), abs=1e-12)


def test_scores_do_not_change_with_the_maps_scale_or_sign():
    maps = np.random.default_rng(2).standard_normal((4, 3, 7, 9))
    base, scaled = _scores(maps, eps=0.0), _scores(-1e4 * maps, eps=0.0)
    for name in base:
        np.testing.assert_allclose(scaled[name], base[name], rtol=1e-12)


@pytest.mark.parametrize("eps", [-1e-7, float("nan"), "small", True])
def test_bad_parameters_are_refused_when_the_metric_is_made(eps):
    from xai_bench.metrics.complexity import Sparseness

    with pytest.raises(InvalidParameterError, match="sparseness: eps"):
        Sparseness(eps=eps)
    with pytest.raises(UnknownParameterError, match="complexity"):
        evaluate(maps_dataset(np.ones((1, 1, 1, 4, 4)), [0]), metrics={"complexity": {"eps": 1e-7}})
