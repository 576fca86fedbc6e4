"""Feature ablation, Shapley value sampling, KernelSHAP and LIME against captum, scikit-learn and closed forms."""

from __future__ import annotations

import itertools
import math
import sys
import warnings

import numpy as np
import pytest
import torch
from captum._utils.models.linear_model import SkLearnLasso, SkLearnLinearRegression
from captum.attr import FeatureAblation as CaptumFeatureAblation
from captum.attr import KernelShap as CaptumKernelShap
from captum.attr import Lime as CaptumLime
from captum.attr import ShapleyValueSampling as CaptumShapleyValueSampling
from sklearn.linear_model import Lasso, LinearRegression
from torch import nn

from xai_bench import explain
from xai_bench.attributors.perturbation import (
    FeatureAblation,
    KernelShap,
    Lime,
    ShapleyValueSampling,
    kernel_coalitions,
    lime_coalitions,
    permutations,
)
from xai_bench.core.errors import InvalidParameterError
from xai_bench.core.provenance import sample_key
from xai_bench.testing import AdditiveModel, LinearModel, tiny_cnn

METHODS = ("feature_ablation", "shapley_sampling", "kernel_shap", "lime")
# Small settings whose regressions are determined (more coalitions than features) on 9 or fewer features.
SMALL = {
    "feature_ablation": {},
    "shapley_sampling": {"n_samples": 3},
    "kernel_shap": {"n_samples": 40},
    "lime": {"n_samples": 40, "alpha": 0.0},
}


@pytest.fixture
def case(gen):
    return tiny_cnn(), torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)


@pytest.fixture
def mlp(gen):
    """A small non-additive model, cheap enough for the thousands of copies that convergence takes."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()
    return model, torch.rand(1, 3, 12, 12, generator=gen, dtype=torch.float64)


def grid(h: int, w: int, cell: int) -> torch.Tensor:
    """Cells of ``cell`` pixels numbered row by row, the last ones clipped at the border."""
    rows, cols = np.arange(h) // cell, np.arange(w) // cell
    return torch.from_numpy(rows[:, None] * math.ceil(w / cell) + cols[None, :])


def kept(x: torch.Tensor, labels: torch.Tensor, coalitions: torch.Tensor, baseline: float) -> torch.Tensor:
    """Copies (Z, C, H, W) of one image ``x`` with the features of each coalition (Z, F) kept, the rest at baseline."""
    pixels = coalitions.bool()[:, labels].unsqueeze(1)
    return torch.where(pixels, x, torch.tensor(baseline, dtype=x.dtype))


def per_feature(maps: np.ndarray, labels: torch.Tensor) -> np.ndarray:
    """The value of each feature (…, F) read from maps (…, C, H, W) at the feature's first pixel (channel 0)."""
    flat = labels.flatten().numpy()
    first = [int(np.flatnonzero(flat == f)[0]) for f in range(int(flat.max()) + 1)]
    return maps[..., 0, :, :].reshape(*maps.shape[:-3], -1)[..., first]


def quietly(fn, *args, **kwargs):
    with warnings.catch_warnings():
        # captum warns that a batch trains one interpretable model per example, and about its hooks
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


def exact_shapley(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, target: int, baseline: float):
    """Shapley values (F,) of the game v(S) = f(x with the features outside S at baseline), from every
    coalition, and the variance (F,) of a feature's marginal contribution over uniformly random orders."""
    f = int(labels.max()) + 1
    coalitions = torch.tensor(list(itertools.product([0, 1], repeat=f)))
    with torch.no_grad():
        values = model(kept(x, labels, coalitions, baseline))[:, target].numpy()
    value = {tuple(z.tolist()): v for z, v in zip(coalitions, values, strict=True)}
    phi, square = np.zeros(f), np.zeros(f)
    for j in range(f):
        for z, v in value.items():
            if z[j] == 0:
                s = sum(z)
                weight = math.factorial(s) * math.factorial(f - s - 1) / math.factorial(f)
                gain = value[(*z[:j], 1, *z[j + 1 :])] - v
                phi[j] += weight * gain
                square[j] += weight * gain**2
    return phi, square - phi**2


# --- feature ablation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", [4, 5, 12])
def test_feature_ablation_matches_captum_on_a_grid_with_clipped_cells(case, cell):
    model, x = case
    ds = explain(model, x, targets=[1, 3], methods={"feature_ablation": {"cell": cell, "baseline": 0.3}})
    labels = grid(12, 12, cell)
    for column, target in enumerate([1, 3]):
        expected = CaptumFeatureAblation(model).attribute(
            x, target=target, feature_mask=labels[None, None], baselines=0.3
        )
        np.testing.assert_allclose(ds["feature_ablation"].values[:, column], expected.numpy(), rtol=1e-10, atol=1e-13)


def test_feature_ablation_matches_captum_on_label_masks_shared_and_per_sample(case, gen):
    model, x = case
    contiguous = torch.randint(0, 6, (3, 12, 12), generator=gen)
    sparse = contiguous * 7 - 100  # any integers: each distinct value is one feature, in increasing order
    shared = explain(model, x, targets=[2], methods={"feature_ablation": {"features": sparse[0]}})
    each = explain(model, x, targets=[2], methods={"feature_ablation": {"features": sparse}})
    for i in range(3):
        # captum numbers features 0..F-1: its mask is the labels' ranks
        ranks = torch.unique(contiguous[i], return_inverse=True)[1]
        expected = CaptumFeatureAblation(model).attribute(x[i : i + 1], target=2, feature_mask=ranks[None, None])
        np.testing.assert_allclose(each["feature_ablation"].values[i, 0], expected[0].numpy(), rtol=1e-10, atol=1e-13)
    ranks = torch.unique(contiguous[0], return_inverse=True)[1]
    expected = CaptumFeatureAblation(model).attribute(x, target=2, feature_mask=ranks[None, None])
    np.testing.assert_allclose(shared["feature_ablation"].values[:, 0], expected.numpy(), rtol=1e-10, atol=1e-13)


# --- Shapley value sampling ------------------------------------------------------------------------------------


def test_shapley_sampling_equals_captum_given_the_same_orders(case):
    model, x = case
    labels = grid(12, 12, 4)
    ds = explain(model, x, targets=[0], methods={"shapley_sampling": {"cell": 4, "n_samples": 5, "baseline": 0.2}})
    for i in range(3):
        orders = permutations(0, sample_key(i), 5, 9)
        captum = CaptumShapleyValueSampling(model)
        captum.permutation_generator = lambda features, samples, orders=orders: iter(orders.tolist())
        expected = captum.attribute(x[i : i + 1], target=0, feature_mask=labels[None, None], baselines=0.2, n_samples=5)
        # captum adds the contributions up in float32
        np.testing.assert_allclose(ds["shapley_sampling"].values[i, 0], expected[0].numpy(), rtol=1e-6, atol=1e-9)


def test_shapley_sampling_converges_to_the_exact_shapley_values(mlp):
    model, x = mlp
    labels = grid(12, 12, 6)  # 4 features: 16 coalitions
    for n in (100, 1000):
        ds = explain(model, x, targets=[1], methods={"shapley_sampling": {"cell": 6, "n_samples": n}})
        phi, variance = exact_shapley(model, x[0], labels, 1, 0.0)
        estimate = per_feature(ds["shapley_sampling"].values[0, 0], labels)
        # the mean of n independent marginal contributions: within 5 standard errors
        assert np.all(np.abs(estimate - phi) <= 5 * np.sqrt(variance / n)), (n, estimate, phi)


def test_shapley_sampling_is_exact_on_two_features_with_both_orders(case):
    model, x = case
    labels = (torch.arange(12)[None, :] >= 5).long().expand(12, 12)
    ds = explain(model, x, targets=[3], methods={"shapley_sampling": {"features": labels, "n_samples": 40}})
    for i in range(3):
        orders = permutations(0, sample_key(i), 40, 2)
        first = float((orders[:, 0] == 0).double().mean())  # share of the orders that start with feature 0
        with torch.no_grad():
            v = model(kept(x[i], labels, torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]]), 0.0))[:, 3].numpy()
        # feature 0 gains v({0}) - v({}) when it comes first and v({0, 1}) - v({1}) when it comes second
        expected = first * (v[1] - v[0]) + (1 - first) * (v[3] - v[2])
        assert 0 < first < 1
        np.testing.assert_allclose(per_feature(ds["shapley_sampling"].values[i, 0], labels)[0], expected, rtol=1e-10)


# --- closed forms: linear and additive models -------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_linear_model_gets_each_features_share_of_w_times_x_minus_baseline(method, gen):
    torch.manual_seed(5)
    model = LinearModel(in_shape=(2, 8, 8), num_classes=3).double().eval()
    x = torch.rand(2, 2, 8, 8, generator=gen, dtype=torch.float64)
    params = {**SMALL[method], "cell": 3, "baseline": 0.25}
    ds = explain(model, x, targets=[0, 2], methods={method: params})
    labels = grid(8, 8, 3)
    weight = model.fc.weight.detach().view(3, 2, 64)
    for column, target in enumerate([0, 2]):
        terms = (weight[target] * (x.view(2, 2, 64) - 0.25)).sum(1)  # (N, pixels)
        expected = torch.zeros(2, 9, dtype=torch.float64).index_add_(1, labels.flatten(), terms)
        got = per_feature(ds[method].values[:, column], labels)
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_additive_model_gets_its_per_feature_terms(method, gen):
    weight = torch.randn(3, 3, 12, 12, generator=gen, dtype=torch.float64)
    model = AdditiveModel(weight).double().eval()
    x = torch.randn(2, 3, 12, 12, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 5, (12, 12), generator=gen) * 3  # non-contiguous labels: features 0..4
    ds = explain(model, x, targets=[1], methods={method: {**SMALL[method], "features": labels, "baseline": -0.5}})
    terms = (weight[1] * (torch.tanh(x) - math.tanh(-0.5))).sum(1).flatten(1)  # (N, pixels)
    ranks = torch.unique(labels, return_inverse=True)[1]
    expected = torch.zeros(2, 5, dtype=torch.float64).index_add_(1, ranks.flatten(), terms)
    np.testing.assert_allclose(per_feature(ds[method].values[:, 0], ranks), expected.numpy(), rtol=1e-9, atol=1e-12)


# --- KernelSHAP -------------------------------------------------------------------------------------------------


def test_kernel_shap_solves_the_constrained_regression_as_scikit_learn_does(case):
    model, x = case
    labels = grid(12, 12, 4)
    ds = explain(model, x, targets=[0, 2], methods={"kernel_shap": {"cell": 4, "n_samples": 30, "baseline": 0.1}})
    for i in range(3):
        coalitions = kernel_coalitions(0, sample_key(i), 28, 9).long()
        with torch.no_grad():
            scores = model(kept(x[i], labels, coalitions, 0.1)).numpy()
            ends = model(kept(x[i], labels, torch.tensor([[0] * 9, [1] * 9]), 0.1)).numpy()
        for column, target in enumerate([0, 2]):
            empty, full = ends[0, target], ends[1, target]
            z = coalitions.numpy().astype(float)
            # sum(phi) = f(x) - f(empty): phi_last = (f(x) - f(empty)) - sum(others), substituted into the fit
            design = z[:, :-1] - z[:, -1:]
            response = scores[:, target] - empty - z[:, -1] * (full - empty)
            fit = LinearRegression(fit_intercept=False).fit(design, response)
            expected = np.append(fit.coef_, (full - empty) - fit.coef_.sum())
            got = per_feature(ds["kernel_shap"].values[i, column], labels)
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_kernel_shap_agrees_with_captum_given_the_same_coalitions(case):
    model, x = case
    labels = grid(12, 12, 4)
    ds = explain(model, x, targets=[1], methods={"kernel_shap": {"cell": 4, "n_samples": 30}})
    for i in range(3):
        coalitions = kernel_coalitions(0, sample_key(i), 28, 9).long()

        def same(inputs, coalitions=coalitions, **kwargs):
            yield torch.ones(1, 9, dtype=torch.long)
            yield torch.zeros(1, 9, dtype=torch.long)
            yield from (z[None] for z in coalitions)

        captum = CaptumKernelShap(model)
        captum.perturb_func = same
        expected = quietly(captum.attribute, x[i : i + 1], target=1, feature_mask=labels[None, None], n_samples=30)
        got = ds["kernel_shap"].values[i, 0]
        # captum fits in float32 and holds f(x) and f(empty) with weight 1e6 instead of exactly
        np.testing.assert_allclose(got, expected[0].numpy(), rtol=0, atol=1e-5 * np.abs(got).max())


def test_kernel_shap_and_captum_both_converge_to_the_exact_shapley_values(mlp):
    model, x = mlp
    labels = grid(12, 12, 6)
    ds = explain(model, x[:1], targets=[2], methods={"kernel_shap": {"cell": 6, "n_samples": 1000}})
    phi, _ = exact_shapley(model, x[0], labels, 2, 0.0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = quietly(
            CaptumKernelShap(model).attribute, x[:1], target=2, feature_mask=labels[None, None], n_samples=1000,
            perturbations_per_eval=250,
        )  # fmt: skip
    ours = per_feature(ds["kernel_shap"].values[0, 0], labels)
    theirs = per_feature(theirs[0].numpy(), labels)
    scale = np.abs(phi).max()
    assert np.abs(ours - phi).max() < 0.02 * scale, (ours, phi)
    assert np.abs(theirs - phi).max() < 0.02 * scale, (theirs, phi)
    np.testing.assert_allclose(ours.sum(), phi.sum(), rtol=1e-9)  # the efficiency constraint holds exactly


# --- LIME -------------------------------------------------------------------------------------------------------


def lime_data(model, x, labels, key, n, target, baseline=0.0, width=1.0):
    """LIME's coalitions (n, F), the scores of their images and their cosine-kernel weights, built here."""
    coalitions = lime_coalitions(0, key, n, int(labels.max()) + 1).long()
    images = kept(x, labels, coalitions, baseline)
    with torch.no_grad():
        scores = model(images)[:, target].numpy()
    a, b = x.flatten().numpy(), images.flatten(1).numpy()
    cosine = b @ a / (np.linalg.norm(b, axis=1) * np.linalg.norm(a))
    weights = np.exp(-((1 - cosine) ** 2) / (2 * width**2))
    return coalitions.numpy().astype(float), scores, weights


@pytest.mark.parametrize("alpha", [0.0, 1e-4])
def test_lime_fit_equals_scikit_learn_on_the_same_weighted_coalitions(case, alpha):
    model, x = case
    labels = grid(12, 12, 4)
    params = {"cell": 4, "n_samples": 30, "alpha": alpha, "kernel_width": 0.5}
    ds = explain(model, x, targets=[0, 3], methods={"lime": params})
    zeros = 0
    for i in range(3):
        for column, target in enumerate([0, 3]):
            z, y, w = lime_data(model, x[i], labels, sample_key(i), 30, target, width=0.5)
            if alpha == 0:
                fit = LinearRegression().fit(z, y, sample_weight=w)
            else:
                fit = Lasso(alpha=alpha, tol=1e-14, max_iter=1_000_000).fit(z, y, sample_weight=w)
            got = per_feature(ds["lime"].values[i, column], labels)
            np.testing.assert_allclose(got, fit.coef_, rtol=1e-7, atol=1e-10)
            zeros += int((fit.coef_ == 0).sum())
    assert (zeros > 0) == (alpha > 0)  # the penalty sets some coefficients to zero, and least squares none


def test_lime_agrees_with_captum_given_the_same_coalitions(case):
    model, x = case
    labels = grid(12, 12, 4)
    ds = explain(model, x, targets=[2], methods={"lime": {"cell": 4, "n_samples": 30, "alpha": 0.0}})
    for i in range(3):
        coalitions = iter(lime_coalitions(0, sample_key(i), 30, 9).long())

        def same(inputs, coalitions=coalitions, **kwargs):
            return next(coalitions)[None]

        captum = CaptumLime(model, interpretable_model=SkLearnLinearRegression(), perturb_func=same)
        expected = quietly(captum.attribute, x[i : i + 1], target=2, feature_mask=labels[None, None], n_samples=30)
        got = ds["lime"].values[i, 0]
        # captum computes the kernel weights and fits in float32
        np.testing.assert_allclose(got, expected[0].numpy(), rtol=0, atol=1e-5 * np.abs(got).max())


def test_lime_default_lasso_is_captums_default(case):
    model, x = case
    labels = grid(12, 12, 4)
    ds = explain(model, 10 * x[:1], targets=[1], methods={"lime": {"cell": 4, "n_samples": 30}})
    coalitions = iter(lime_coalitions(0, sample_key(0), 30, 9).long())
    captum = CaptumLime(model, perturb_func=lambda inputs, **kw: next(coalitions)[None])
    assert isinstance(captum.interpretable_model, SkLearnLasso)
    expected = quietly(captum.attribute, 10 * x[:1], target=1, feature_mask=labels[None, None], n_samples=30)
    got = ds["lime"].values[0, 0]
    assert np.abs(got).max() > 0
    # captum's Lasso stops at scikit-learn's default tolerance (1e-4) and fits in float32
    np.testing.assert_allclose(got, expected[0].numpy(), rtol=0, atol=1e-3 * np.abs(got).max())


def test_lime_and_captum_both_converge_to_the_population_fit(mlp):
    model, x = mlp
    labels = grid(12, 12, 6)
    n = 1000
    ds = explain(model, x[:1], targets=[0], methods={"lime": {"cell": 6, "n_samples": n, "alpha": 0.0}})
    every = torch.tensor(list(itertools.product([0, 1], repeat=4)))
    images = kept(x[0], labels, every, 0.0)
    with torch.no_grad():
        scores = model(images)[:, 0].numpy()
    a, b = x[0].flatten().numpy(), images.flatten(1).numpy()
    norms = np.maximum(np.linalg.norm(b, axis=1) * np.linalg.norm(a), 1e-8)
    weights = np.exp(-((1 - b @ a / norms) ** 2) / 2)
    # every coalition is drawn with probability 1/16: the fit on all of them, so weighted, is the limit
    limit = LinearRegression().fit(every.numpy(), scores, sample_weight=weights).coef_
    with torch.random.fork_rng():
        torch.manual_seed(0)
        captum = CaptumLime(model, interpretable_model=SkLearnLinearRegression())
        theirs = quietly(captum.attribute, x[:1], target=0, feature_mask=labels[None, None], n_samples=n,
                         perturbations_per_eval=500)  # fmt: skip
    ours = per_feature(ds["lime"].values[0, 0], labels)
    theirs = per_feature(theirs[0].numpy(), labels)
    scale = np.abs(limit).max()
    assert np.abs(ours - limit).max() < 0.02 * scale, (ours, limit)
    assert np.abs(theirs - limit).max() < 0.02 * scale, (theirs, limit)


# --- all four: batching, targets, per-sample features, draws ---------------------------------------------------


class Counting(nn.Module):
    """Counts the images put through ``model``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x):
        self.images += len(x)
        return self.model(x)


@pytest.mark.parametrize("method", METHODS)
def test_five_targets_cost_the_forward_passes_of_one(method, gen):
    model = Counting(tiny_cnn(num_classes=6)).eval()
    x = torch.rand(2, 3, 12, 12, generator=gen, dtype=torch.float64)
    params = {**SMALL[method], "cell": 4}
    explain(model, x, targets=[0], methods={method: params}, passes=16)  # the call's one-image probe, once
    counted = {}
    for targets in ([3], [0, 1, 2, 4, 5]):
        model.images = 0
        explain(model, x, targets=targets, methods={method: params}, passes=16)
        counted[len(targets)] = model.images
    items = {"feature_ablation": 1 + 9, "shapley_sampling": 2 + 3 * 8, "kernel_shap": 40, "lime": 40}[method]
    scores = 2 if method == "lime" else 0  # LIME's copies do not include the input: its scores take a pass
    assert counted == {1: 2 * items + scores, 5: 2 * items + scores}


def uneven_masks(gen) -> torch.Tensor:
    """Per-sample masks (3, 12, 12) with 9, 5 and 1 features."""
    masks = torch.stack([grid(12, 12, 4), torch.randint(0, 5, (12, 12), generator=gen), torch.zeros(12, 12).long()])
    masks[1].view(-1)[:5] = torch.arange(5)  # every label of the second mask is there
    return masks


@pytest.mark.parametrize("method", METHODS)
def test_maps_do_not_depend_on_the_pass_size_with_uneven_feature_counts(method, case, gen):
    model, x = case
    params = {**SMALL[method], "features": uneven_masks(gen)}
    whole = explain(model, x, targets=[0, 2], methods={method: params})[method].values
    for passes in (1, 3, 50):
        part = explain(model, x, targets=[0, 2], methods={method: params}, passes=passes)[method].values
        np.testing.assert_allclose(part, whole, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("method", METHODS)
def test_per_sample_masks_give_each_sample_the_maps_of_its_own_mask(method, case, gen):
    model, x = case
    masks = uneven_masks(gen)
    together = explain(model, x, targets=[1], methods={method: {**SMALL[method], "features": masks}})[method].values
    for i in range(3):
        alone = explain(model, x[i : i + 1], targets=[1], sample_ids=[i],
                        methods={method: {**SMALL[method], "features": masks[i]}})  # fmt: skip
        np.testing.assert_allclose(together[i], alone[method].values[0], rtol=1e-9, atol=1e-13)
    assert np.all(together[2] == together[2].flat[0])  # one feature: one value
    if method in ("feature_ablation", "kernel_shap", "shapley_sampling"):
        with torch.no_grad():
            drop = (model(x[2:]) - model(torch.zeros_like(x[2:])))[0, 1].item()
        np.testing.assert_allclose(together[2, 0, 0, 0, 0], drop, rtol=1e-10)


@pytest.mark.parametrize("method", ["shapley_sampling", "kernel_shap", "lime"])
def test_draws_follow_the_sample_id_not_its_position_or_the_global_rng(method, case):
    model, x = case
    params = {**SMALL[method], "cell": 4}
    torch.manual_seed(1)
    first = explain(model, x, targets=[0], methods={method: params})[method].values
    torch.manual_seed(2)
    shuffled = explain(model, x[[2, 0, 1]], targets=[0], sample_ids=[2, 0, 1], methods={method: params})
    np.testing.assert_allclose(shuffled[method].values, first[[2, 0, 1]], rtol=1e-10, atol=1e-13)
    other = explain(model, x, targets=[0], methods={method: {**params, "seed": 1}})[method].values
    assert not np.allclose(other, first)


def test_per_sample_targets_read_the_same_forward_passes(case, gen):
    from xai_bench.testing import CHECKS

    for method in METHODS:
        CHECKS["per_sample_targets"](method, {**SMALL[method], "features": uneven_masks(gen)})


# --- superpixels --------------------------------------------------------------------------------------------------


@pytest.fixture
def blocky(gen):
    """Images of 3 × 3 flat patches with a little noise: SLIC finds 9, 8 and 7 segments in them."""
    g = torch.Generator().manual_seed(3)
    coarse = torch.rand(3, 3, 3, 3, generator=g, dtype=torch.float64)
    noise = 0.05 * torch.rand(3, 3, 12, 12, generator=g, dtype=torch.float64)
    return torch.nn.functional.interpolate(coarse, size=(12, 12), mode="nearest") + noise


def skimage_segments(images: torch.Tensor, segments: int, compactness: float) -> torch.Tensor:
    from skimage.segmentation import slic

    return torch.stack([
        torch.from_numpy(slic(image.permute(1, 2, 0).numpy(), n_segments=segments, compactness=compactness,
                              channel_axis=-1).astype("int64"))
        for image in images
    ])  # fmt: skip


@pytest.mark.parametrize("method", ["feature_ablation", "kernel_shap"])
def test_slic_features_are_scikit_images_superpixels_of_each_image(method, blocky):
    model = tiny_cnn()
    segments = skimage_segments(blocky, 9, 5.0)
    assert len({len(torch.unique(s)) for s in segments}) > 1  # counts differ between the samples
    slic = explain(model, blocky, targets=[0, 1], methods={method: {"features": "slic", "segments": 9,
                                                                     "compactness": 5.0}})  # fmt: skip
    given = explain(model, blocky, targets=[0, 1], methods={method: {"features": segments}})
    np.testing.assert_allclose(slic[method].values, given[method].values, rtol=1e-12, atol=1e-15)


def test_smoothed_copies_keep_the_superpixels_of_the_clean_image(blocky):
    model = tiny_cnn()
    segments = skimage_segments(blocky, 9, 10.0)
    params = {"features": "slic", "segments": 9, "smooth": {"samples": 2, "stdev": 0.3}}
    maps = explain(model, blocky, targets=[2], methods={"feature_ablation": params})["feature_ablation"].values
    for i in range(3):
        for label in torch.unique(segments[i]):
            values = maps[i, 0][:, segments[i] == label]
            assert np.ptp(values) == 0


def test_slic_without_scikit_image_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.segmentation", None)
    with pytest.raises(InvalidParameterError, match=r"pip install scikit-image") as error:
        FeatureAblation(features="slic")
    assert "\n" not in str(error.value)


# --- parameters ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "params", "message"),
    [
        (FeatureAblation, {"features": "patches"}, "features must be one of 'grid', 'slic'"),
        (FeatureAblation, {"features": [[0, 1]]}, "integer label mask tensor"),
        (FeatureAblation, {"features": torch.rand(4, 4)}, "integer labels, got dtype torch.float32"),
        (FeatureAblation, {"features": torch.zeros(1, 1, 4, 4).long()}, r"got shape \(1, 1, 4, 4\)"),
        (FeatureAblation, {"features": "slic", "cell": 8}, "cell applies to features='grid' only"),
        (FeatureAblation, {"segments": 8}, "segments applies to features='slic' only"),
        (FeatureAblation, {"features": "slic", "segments": 0}, "segments must be a positive int"),
        (FeatureAblation, {"features": "slic", "compactness": -1.0}, "compactness must be a finite number > 0"),
        (FeatureAblation, {"cell": (4, 0)}, "cell must be a positive int or a pair"),
        (FeatureAblation, {"baseline": float("nan")}, "baseline must be a finite number"),
        (ShapleyValueSampling, {"n_samples": 0}, "n_samples must be a positive int"),
        (ShapleyValueSampling, {"seed": 1.5}, "seed must be an int"),
        (KernelShap, {"n_samples": 1}, "must be at least 2"),
        (Lime, {"alpha": -0.1}, "alpha is the fit's L1 penalty"),
        (Lime, {"kernel_width": 0}, "kernel_width must be a finite number > 0"),
        (Lime, {"distance": "manhattan"}, "distance must be one of 'cosine', 'euclidean'"),
    ],
)
def test_bad_parameters_are_refused_when_the_method_is_made(cls, params, message):
    with pytest.raises(InvalidParameterError, match=message) as error:
        cls(**params)
    assert "\n" not in str(error.value)


def test_masks_that_do_not_fit_the_inputs_are_refused_before_any_pass(case):
    model, x = case
    for mask in (torch.zeros(10, 12).long(), torch.zeros(2, 12, 12).long()):
        with pytest.raises(InvalidParameterError, match="do not fit inputs of shape"):
            explain(model, x, targets=[0], methods={"feature_ablation": {"features": mask}})


def test_regressions_refuse_more_features_than_their_sums_hold(gen):
    model = LinearModel(in_shape=(1, 48, 48), num_classes=2).double().eval()
    x = torch.rand(1, 1, 48, 48, generator=gen, dtype=torch.float64)
    for method in ("kernel_shap", "lime"):
        with pytest.raises(InvalidParameterError, match="2304 features.*at most 2048"):
            explain(model, x, targets=[0], methods={method: {"cell": 1}})


def test_per_sample_masks_are_refused_by_run_and_superpixels_are_not(tmp_path, case, gen):
    from xai_bench import run

    model, x = case
    with pytest.raises(InvalidParameterError, match=r"features given per sample, \(N, H, W\)"):
        run(model, list(x), methods={"feature_ablation": {"features": uneven_masks(gen)}}, store=tmp_path / "a.zarr")
    summary = run(model, list(x), methods={"kernel_shap": {"features": "slic", "segments": 9}}, targets=[1],
                  store=tmp_path / "b.zarr", samples_per_block=2)  # fmt: skip
    assert summary is not None
    import xai_bench

    stored = xai_bench.open_maps(tmp_path / "b.zarr")["kernel_shap"].values
    direct = explain(model, x, targets=[1], methods={"kernel_shap": {"features": "slic", "segments": 9}})
    np.testing.assert_allclose(stored, direct["kernel_shap"].values, rtol=1e-9, atol=1e-13)


def test_params_record_the_features():
    assert KernelShap(cell=(4, 8)).params() == {
        "features": "grid", "cell": [4, 8], "baseline": 0.0, "n_samples": 25, "seed": 0,
    }  # fmt: skip
    assert Lime(features="slic").params()["segments"] == 100
    recorded = FeatureAblation(features=torch.zeros(4, 4).long()).params()["features"]
    assert recorded.startswith("tensor(shape=[4, 4], dtype=torch.int64")


# --- the study's architectures ------------------------------------------------------------------------------------

STUDY = {
    "resnet18": ("torchvision", lambda tv, timm: tv.models.resnet18(weights=None, num_classes=3), 32),
    "resnet34": ("torchvision", lambda tv, timm: tv.models.resnet34(weights=None, num_classes=3), 32),
    "densenet161": ("torchvision", lambda tv, timm: tv.models.densenet161(weights=None, num_classes=3), 32),
    "inception_v3": (
        "torchvision",
        lambda tv, timm: tv.models.inception_v3(weights=None, aux_logits=False, init_weights=True, num_classes=3),
        75,
    ),
    "inception_resnet_v2": (
        "timm",
        lambda tv, timm: timm.create_model("inception_resnet_v2", pretrained=False, num_classes=3),
        75,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STUDY))
def test_study_architectures_match_captum_and_add_up(name):
    tv, timm = pytest.importorskip("torchvision"), pytest.importorskip("timm")
    _, factory, size = STUDY[name]
    torch.manual_seed(0)
    model = factory(tv, timm).double().eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cell = size // 2 + 1  # four cells, the last row and column clipped
    methods = {
        "feature_ablation": {"cell": cell, "baseline": 0.5},
        "shapley_sampling": {"cell": cell, "baseline": 0.5, "n_samples": 1},
        "kernel_shap": {"cell": cell, "baseline": 0.5, "n_samples": 4},
    }
    ds = explain(model, x, targets=[0, 2], methods=methods, passes=8)
    labels = grid(size, size, cell)
    expected = CaptumFeatureAblation(model).attribute(x, target=2, feature_mask=labels[None, None], baselines=0.5)
    np.testing.assert_allclose(ds["feature_ablation"].values[:, 1], expected.numpy(), rtol=1e-9, atol=1e-12)
    with torch.no_grad():
        difference = (model(x) - model(torch.full_like(x, 0.5)))[:, [0, 2]].numpy()
    for method in ("shapley_sampling", "kernel_shap"):
        np.testing.assert_allclose(per_feature(ds[method].values, labels).sum(-1), difference, rtol=1e-9, atol=1e-12)


def test_typed_methods_give_the_maps_of_their_ids(case):
    model, x = case
    typed = [ShapleyValueSampling(cell=4, n_samples=2), Lime(cell=6, n_samples=12, alpha=0.0)]
    by_type = explain(model, x, targets=[1], methods=typed)
    by_id = explain(model, x, targets=[1], methods={"shapley_sampling": {"cell": 4, "n_samples": 2},
                                                   "lime": {"cell": 6, "n_samples": 12, "alpha": 0.0}})  # fmt: skip
    for method in ("shapley_sampling", "lime"):  # the same copies, perhaps in passes of other sizes
        np.testing.assert_allclose(by_type[method].values, by_id[method].values, rtol=1e-10, atol=1e-15)


def test_lime_says_when_every_kernel_weight_underflows():
    """Euclidean distances of a whole image dwarf kernel_width=1: exp(-d²/2) is 0 for every coalition."""
    from xai_bench import XaiBenchWarning
    from xai_bench.testing import tiny_cnn

    x = torch.rand(1, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 20
    with pytest.warns(XaiBenchWarning, match="every coalition's kernel weight is 0"):
        explain(tiny_cnn(), x, targets=[0], methods={"lime": {"cell": 4, "n_samples": 8, "distance": "euclidean"}})
