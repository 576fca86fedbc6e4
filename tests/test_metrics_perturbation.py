"""Deletion and insertion: the closed form on a linear model, Quantus's region perturbation and pixel flipping."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import quantus
import torch
from torch import nn

from xai_bench import InvalidParameterError
from xai_bench.api.evaluating import evaluate
from xai_bench.testing.data import maps_dataset


class Linear(nn.Module):
    """logit_k = sum(w_k * x): deleting a pixel (to 0) removes exactly its term."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)  # (K, C, H, W)

    def forward(self, x):
        return torch.einsum("nchw,kchw->nk", x, self.w)


def _case(seed=0, n=3, c=1, h=8, w=8, classes=2):
    gen = torch.Generator().manual_seed(seed)
    model = Linear(torch.randn(classes, c, h, w, generator=gen, dtype=torch.float64)).eval()
    x = torch.rand(n, c, h, w, generator=gen, dtype=torch.float64)
    return model, x


@pytest.mark.parametrize("metric", ["deletion", "insertion"])
def test_deletion_and_insertion_on_a_linear_model_follow_the_closed_form(metric):
    model, x = _case()
    target = 1
    contribution = (model.w[target].detach() * x).numpy()  # the exact per-pixel terms, (N, C, H, W)
    ds = maps_dataset(contribution[:, None], [target], inputs=x.numpy())  # the ideal map: each pixel's term
    params = {"patch": 2, "steps": 4, "output": "logit"}  # 16 patches, 4 removed a step
    out = evaluate(ds, model=model, metrics={metric: params}, passes=5)
    curve = out[f"given_{metric}_curve"].values[:, 0]
    patch_sums = contribution[:, 0].reshape(3, 4, 2, 4, 2).sum((2, 4)).reshape(3, 16)
    order = np.argsort(-patch_sums, axis=1, kind="stable")
    for i in range(3):
        ranked = patch_sums[i, order[i]]
        removed = np.concatenate([[0.0], np.cumsum(ranked)[3::4]])  # after 0, 4, 8, 12, 16 patches
        expected = patch_sums[i].sum() - removed if metric == "deletion" else removed
        np.testing.assert_allclose(curve[i], expected, rtol=1e-12, atol=1e-12)
    auc = (curve[:, :-1] + curve[:, 1:]).sum(1) / 8
    np.testing.assert_allclose(out[f"given_{metric}"].values[:, 0], auc)


def test_the_best_map_deletes_fastest_and_lerf_is_the_reverse():
    model, x = _case(seed=1)
    contribution = (model.w[0].detach() * x).numpy()[:, None]
    noise = np.random.default_rng(0).standard_normal(contribution.shape)
    ds = maps_dataset(np.concatenate([contribution, noise], 1), [0, 0])  # an ideal and a random map
    chosen = {"deletion": {"patch": 1, "steps": 64, "output": "logit"}}
    area = evaluate(ds, model=model, inputs=x, metrics=chosen)["given_deletion"].values
    assert (area[:, 0] < area[:, 1]).all()  # removing the most positive terms first drops the logit fastest
    lerf = evaluate(ds, model=model, inputs=x, metrics={"deletion": {**chosen["deletion"], "order": "lerf"}})[
        "given_deletion"
    ]
    assert (lerf.values[:, 0] > area[:, 0]).all()


@pytest.mark.parametrize("replacement", ["min", "value"])
def test_region_perturbation_gives_quantus_numbers(replacement):
    model, x = _case(seed=2, n=4, c=3, h=8, w=8, classes=3)
    model, x = model.float(), x.float()  # Quantus runs models in float32
    maps = np.random.default_rng(1).standard_normal((4, 1, 8, 8))
    y = np.array([0, 1, 2, 1])
    params = {"patch": 2, "steps": 16, "output": "logit", "replacement": replacement, "value": 0.25}
    out = []
    for i in range(4):  # one target per sample: evaluate each against its own class
        # The map split over the channels: patches rank by their sum over channels, as Quantus's.
        single = maps_dataset(np.repeat(maps[i : i + 1, None], 3, 2) / 3, [int(y[i])])
        out.append(
            evaluate(single, model=model, inputs=x[i : i + 1], metrics={"deletion": params})[
                "given_deletion_curve"
            ].values[0, 0]
        )
    ours = np.stack(out)
    baseline = "black" if replacement == "min" else 0.25
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.RegionPerturbation(
            patch_size=2, order="morf", regions_evaluation=16, abs=False, normalise=False,
            perturb_baseline=baseline, disable_warnings=True,
        )(model=model, x_batch=x.numpy(), y_batch=y, a_batch=maps, channel_first=True, softmax=False,
          device="cpu")  # fmt: skip
    # Quantus records f(x) - f(x after k regions); ours the curve f(x after k regions), from k = 0.
    np.testing.assert_allclose(ours[:, :1] - ours[:, 1:], np.asarray(theirs), rtol=1e-5, atol=1e-6)


def test_pixel_flipping_gives_quantus_numbers_on_one_channel():
    model, x = _case(seed=3, n=3, c=1, h=6, w=6, classes=2)
    model, x = model.float(), x.float()  # Quantus runs models in float32
    maps = np.random.default_rng(2).standard_normal((3, 1, 6, 6))
    y = np.array([1, 0, 1])
    ours = np.stack([
        evaluate(maps_dataset(maps[i : i + 1, None], [int(y[i])]), model=model, inputs=x[i : i + 1],
                 metrics={"deletion": {"patch": 1, "steps": 12, "output": "logit", "replacement": "min"}},
                 )["given_deletion_curve"].values[0, 0]
        for i in range(3)
    ])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.PixelFlipping(
            features_in_step=3, abs=False, normalise=False, perturb_baseline="black", disable_warnings=True
        )(model=model, x_batch=x.numpy(), y_batch=y, a_batch=maps, channel_first=True, softmax=False, device="cpu")
    np.testing.assert_allclose(ours[:, 1:], np.asarray(theirs), rtol=1e-5, atol=1e-6)


def test_blur_and_mean_replacements_and_bad_parameters():
    model, x = _case(seed=4, n=2, c=1)
    ds = maps_dataset(np.random.default_rng(3).random((2, 1, 1, 8, 8)), [0], inputs=x.numpy())
    for replacement in ("blur", "mean"):
        out = evaluate(ds, model=model, metrics={"insertion": {"patch": 4, "steps": 2, "replacement": replacement}})
        curve = out["given_insertion_curve"].values[:, 0]
        probabilities = torch.softmax(model(x), 1)[:, 0].detach().numpy()
        np.testing.assert_allclose(curve[:, -1], probabilities)  # everything put back: the input itself
    with pytest.raises(
        InvalidParameterError, match="deletion: replacement must be one of 'value', 'min', 'mean', 'blur'"
    ):
        evaluate(ds, model=model, metrics={"deletion": {"replacement": "black"}})
