"""``smooth=`` on every method: captum's NoiseTunnel given the same noise, batched by the planner."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from hypothesis import given
from hypothesis import strategies as st

from xai_bench import InvalidParameterError, explain, list_methods
from xai_bench.attributors.noise_tunnel import Smoothing, noise
from xai_bench.core.provenance import sample_key
from xai_bench.testing import tiny_cnn

SHAPE = (3, 10, 10)


def _inputs(n: int = 3) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


def _our_noise(smoothing: Smoothing, ids, dtype=torch.float64) -> torch.Tensor:
    """(N * S, C, H, W), sample-major: the rows captum's NoiseTunnel adds to its repeated inputs."""
    return torch.stack(
        [noise(smoothing, sample_key(i), d, SHAPE, dtype) for i in ids for d in range(smoothing.samples)]
    )


@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize(
    ("method", "captum_cls", "params", "captum_kw"),
    [
        ("saliency", Saliency, {}, {}),
        (
            "integrated_gradients",
            IntegratedGradients,
            {"n_steps": 4, "baseline": 0.2},
            {"n_steps": 4, "baselines": 0.2},
        ),
    ],
)
def test_smoothing_equals_captums_noise_tunnel_given_the_same_noise(
    monkeypatch, kind, method, captum_cls, params, captum_kw
):
    model, x = tiny_cnn(), _inputs()
    smoothing = Smoothing(samples=5, stdev=0.2, kind=kind, seed=11)
    ours = explain(model, x, methods={method: {**params, "smooth": smoothing.as_dict()}}, targets=[1], passes=4)[
        method
    ].values[:, 0]
    drawn = _our_noise(smoothing, range(len(x)))
    monkeypatch.setattr(
        NoiseTunnel, "_add_noise_to_input", staticmethod(lambda inp, stdev, s: inp.repeat_interleave(s, dim=0) + drawn)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = NoiseTunnel(captum_cls(model)).attribute(
            x.clone().requires_grad_(True), nt_type=kind, nt_samples=5, stdevs=0.2, target=1, **captum_kw
        )
    # captum's IG holds its quadrature weights in float32.
    tolerance = 1e-6 if method == "integrated_gradients" else 1e-12
    np.testing.assert_allclose(ours, expected.detach().numpy(), rtol=tolerance, atol=1e-12)


@given(batch_size=st.integers(1, 40), kind=st.sampled_from(["smoothgrad", "smoothgrad_sq", "vargrad"]))
def test_smoothed_maps_do_not_depend_on_the_pass_size(batch_size, kind):
    # DeepLIFT has 2 images an item and IG 6 items a copy: small passes split copies between passes.
    model, x = tiny_cnn(), _inputs(2)
    chosen = {
        "deeplift": {"smooth": {"samples": 3, "stdev": 0.1, "kind": kind}},
        "integrated_gradients": {"n_steps": 4, "smooth": {"samples": 3, "stdev": 0.1, "kind": kind}},
    }
    got = explain(model, x, methods=chosen, targets=[0, 2], passes=batch_size)
    whole = explain(model, x, methods=chosen, targets=[0, 2], passes=1000)
    for method in chosen:
        np.testing.assert_allclose(got[method].values, whole[method].values, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("method", ["deeplift", "occlusion", "guided_backprop", "input_x_gradient"])
def test_smoothgrad_is_the_mean_of_the_method_on_each_noisy_copy(method):
    model, x = tiny_cnn(), _inputs()
    params = {"window": 5, "stride": 5} if method == "occlusion" else {}
    smoothing = Smoothing(samples=4, stdev=0.1, kind="smoothgrad", seed=0)
    ds = explain(model, x, methods={method: {**params, "smooth": smoothing.as_dict()}}, targets=[0, 3])
    drawn = _our_noise(smoothing, range(len(x))).view(len(x), 4, *SHAPE)
    copies = [
        explain(model, x + drawn[:, d], methods={method: params}, targets=[0, 3])[method].values for d in range(4)
    ]
    np.testing.assert_allclose(ds[method].values, np.mean(copies, axis=0), rtol=1e-10, atol=1e-14)
    if method == "deeplift":  # each copy sums to its own f(x~) - f(0): so does their mean, exactly
        assert np.abs(ds["deeplift_delta"].values).max() < 1e-10


def test_noise_follows_the_sample_id_not_its_position():
    model, x = tiny_cnn(), _inputs(4)
    chosen = {"saliency": {"smooth": {"samples": 3, "stdev": 0.3}}}
    forward = explain(model, x, methods=chosen, targets=[0], sample_ids=["a", "b", "c", "d"])
    backward = explain(model, x.flip(0), methods=chosen, targets=[0], sample_ids=["d", "c", "b", "a"])
    np.testing.assert_array_equal(forward["saliency"].values, backward["saliency"].values[::-1])
    reseeded = {"saliency": {"smooth": {"samples": 3, "stdev": 0.3, "seed": 1}}}
    assert not np.allclose(
        forward["saliency"].values,
        explain(model, x, methods=reseeded, targets=[0], sample_ids=["a", "b", "c", "d"])["saliency"].values,
    )


def test_the_smoothing_is_in_the_provenance_and_the_listing():
    ds = explain(
        tiny_cnn(), _inputs(1), methods={"saliency": {"smooth": {"samples": 2, "kind": "vargrad"}}}, targets=[0]
    )
    params = json.loads(ds["saliency"].attrs["params"])
    assert params["smooth"] == {"samples": 2, "stdev": 0.15, "kind": "vargrad", "seed": 0}
    assert ds["saliency"].attrs["has_delta"] == 0
    assert all("smooth" in info["parameters"] for info in list_methods().values())


@pytest.mark.parametrize(
    ("smooth", "message"),
    [
        ({"sample": 4}, "smooth has no key 'sample'"),
        ({"kind": "smooth"}, "smooth\\['kind'\\] must be one of 'smoothgrad', 'smoothgrad_sq', 'vargrad'"),
        ({"stdev": -1}, "smooth\\['stdev'\\] is the noise's standard deviation"),
        ({"samples": 0}, "smooth\\['samples'\\]"),
        (16, "smooth must be a dict"),
    ],
)
def test_bad_smoothing_is_refused_with_what_to_fix(smooth, message):
    with pytest.raises(InvalidParameterError, match=message):
        explain(tiny_cnn(), _inputs(1), methods={"saliency": {"smooth": smooth}}, targets=[0])


def test_copies_are_batched_by_the_planner():
    ds = explain(tiny_cnn(), _inputs(2), methods={"deeplift": {"smooth": {"samples": 8}}}, targets=[0], passes=12)
    # Twelve images a pass: six (sample, copy) pairs of DeepLIFT's two images, over both samples.
    assert ds["deeplift"].attrs["images_per_pass"] == 12


def test_vargrad_is_never_negative_and_smoothgrad_keeps_the_methods_flags():
    x = _inputs(2)
    still = explain(tiny_cnn(), x, methods={"saliency": {"smooth": {"samples": 3, "stdev": 0.0, "kind": "vargrad"}}},
                    targets=[0])  # fmt: skip
    assert (still["saliency"].values >= 0).all() and still["saliency"].values.max() < 1e-10
    smoothed = explain(tiny_cnn(), x, methods={"deeplift": {"smooth": {"samples": 2}}}, targets=[0])
    assert smoothed["deeplift"].attrs["multiplies_by_inputs"] == 1
