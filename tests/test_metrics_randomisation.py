"""Sanity checks: similarities against scipy and scikit-image, MPRT against Quantus, and bad methods caught."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import quantus
import scipy.stats
import skimage.metrics
import torch
from hypothesis import given
from hypothesis import strategies as st

import xai_bench
from xai_bench import explain
from xai_bench.api.evaluating import evaluate
from xai_bench.attributors.base import Attribution, OneTarget
from xai_bench.metrics.similarity import spearman, ssim
from xai_bench.testing import make_shapes, tiny_cnn
from xai_bench.testing import train_shapes as train


@given(seed=st.integers(0, 10_000), levels=st.integers(2, 50))
def test_spearman_equals_scipy_with_ties(seed, levels):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, levels, (3, 40)).astype(float)  # few levels: many ties
    b = a + rng.integers(0, levels, (3, 40))
    ours = spearman(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    theirs = [scipy.stats.spearmanr(a[i], b[i])[0] for i in range(3)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, equal_nan=True)


def test_ssim_equals_scikit_image():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 20, 17)), rng.standard_normal((4, 20, 17))
    b[0] = a[0] + 0.1 * b[0]
    ours = ssim(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    theirs = [
        skimage.metrics.structural_similarity(a[i], b[i], data_range=float(np.ptp(np.concatenate([a[i], b[i]]))))
        for i in range(4)
    ]
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    assert ssim(torch.from_numpy(a), torch.from_numpy(a)).numpy() == pytest.approx(np.ones(4))


def test_parameter_randomisation_gives_quantus_mprt_numbers():
    model = tiny_cnn(dtype=torch.float32)
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    y = np.array([0, 1, 2, 3])
    ds = explain(model, x, methods=["saliency"], targets=torch.from_numpy(y))
    ours = evaluate(ds, model=model, metrics="parameter_randomisation")["saliency_parameter_randomisation"]

    def explain_func(model, inputs, targets, **kwargs):
        maps = explain(model, torch.as_tensor(inputs, dtype=torch.float32), methods=["saliency"],
                       targets=torch.as_tensor(targets))  # fmt: skip
        return maps["saliency"].values[:, 0].sum(1, keepdims=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.MPRT(abs=False, normalise=False, disable_warnings=True, layer_order="top_down", seed=42)(
            model=model, x_batch=x.numpy(), y_batch=y, a_batch=ds["saliency"].values[:, 0].sum(1, keepdims=True),
            explain_func=explain_func, channel_first=True, device="cpu",
        )  # fmt: skip
    layers = [str(v) for v in ours["parameter_randomisation_layer"].values]
    assert layers == [name for name in theirs if name != "original"]
    expected = np.stack([theirs[name] for name in layers], 1)
    np.testing.assert_allclose(ours.values[:, 0], expected, rtol=1e-6, atol=1e-7)


class EdgeDetector(OneTarget):
    """Gradient magnitude of the image itself: a 'method' that ignores the model."""

    id = "edges"

    def attribute_target(self, model, inputs, target):
        gray = inputs.mean(1, keepdim=True)
        dy = torch.zeros_like(gray)
        dx = torch.zeros_like(gray)
        dy[..., 1:, :] = gray[..., 1:, :] - gray[..., :-1, :]
        dx[..., :, 1:] = gray[..., :, 1:] - gray[..., :, :-1]
        return Attribution((dx.square() + dy.square()).sqrt().expand_as(inputs).contiguous())


@pytest.mark.slow
def test_randomisation_fails_model_dependent_methods_and_passes_a_model_blind_one(add_plugin):
    add_plugin(EdgeDetector)
    images, labels, _ = make_shapes(300, seed=0)
    model = train(images[:256], labels[:256], steps=150)
    x = images[256:262]
    methods = {"saliency": {}, "integrated_gradients": {"n_steps": 16}, "deeplift": {}, "edges": {}}
    ds = explain(model, x, methods=methods, targets="predicted")
    out = evaluate(ds, model=model, metrics="parameter_randomisation")
    for method in ("saliency", "integrated_gradients", "deeplift"):
        curve = out[f"{method}_parameter_randomisation"].values[:, 0].mean(0)  # per layer, top layer first
        # Measured: saliency 0.94 -> 0.50, IG 0.39 -> 0.06, DeepLIFT 0.36 -> 0.03 from the top layer to all.
        assert curve[-1] < 0.6 and curve[-1] < curve[0] - 0.25, (method, curve)
    edges = out["edges_parameter_randomisation"].values[:, 0]
    assert np.all(edges > 0.999), edges
    shuffled = train(images[:256], labels[:256][torch.randperm(256, generator=torch.Generator().manual_seed(1))],
                     steps=150, seed=1)  # fmt: skip
    data = evaluate(ds, model=model, metrics={"data_randomisation": {"model": shuffled}})
    assert data["deeplift_data_randomisation"].mean() < 0.9
    assert np.all(data["edges_data_randomisation"].values > 0.999)


def test_the_similarity_parameter_picks_the_main_value_and_the_extras():
    model = tiny_cnn()
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ds = explain(model, x, methods=["saliency"], targets=[1])
    both = evaluate(ds, model=model, metrics={"parameter_randomisation": {"layers": ["fc", "conv1"]}})
    alone = evaluate(ds, model=model, metrics={"parameter_randomisation": {"layers": ["fc", "conv1"],
                                                                            "similarity": "ssim"}})  # fmt: skip
    np.testing.assert_array_equal(alone["saliency_parameter_randomisation"].values,
                                  both["saliency_parameter_randomisation_ssim"].values)  # fmt: skip
    assert "saliency_parameter_randomisation_ssim" not in alone
    with pytest.raises(xai_bench.InvalidParameterError, match="similarity must be 'spearman', 'ssim'"):
        evaluate(ds, model=model, metrics={"parameter_randomisation": {"similarity": "pearson"}})
