"""Robustness metrics: Quantus 0.6.0's and captum's numbers on the same perturbed inputs, closed forms on a
linear model, and scores that depend on neither the pass size nor the slicing of the work."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import quantus
import quantus.helpers.utils as quantus_utils
import torch
from captum.attr import Saliency
from captum.metrics import infidelity, sensitivity_max
from torch import nn

from xai_bench import InvalidParameterError, Targets, explain
from xai_bench.api.evaluating import evaluate
from xai_bench.core.provenance import sample_key
from xai_bench.metrics import robustness
from xai_bench.metrics.robustness import (
    AvgSensitivity,
    Infidelity,
    LocalLipschitzEstimate,
    MaxSensitivity,
    RelativeInputStability,
)
from xai_bench.testing import tiny_cnn
from xai_bench.testing.data import maps_dataset

RE_EXPLAINING = ["max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate", "relative_input_stability"]


def _case(dtype=torch.float64, n=4):
    model = tiny_cnn(dtype=dtype)
    x = torch.rand(n, 3, 12, 12, generator=torch.Generator().manual_seed(0), dtype=dtype)
    return model, x, np.arange(n) % 4


def _copies(metric, x: torch.Tensor) -> np.ndarray:
    """The perturbed inputs ``metric`` uses: (N, n_samples, C, H, W), float64."""
    copies = [metric.perturbed(x[i], sample_key(i), range(metric.n_samples)) for i in range(len(x))]
    return torch.stack(copies).double().numpy()


def _quantus(metric, copies: np.ndarray, **call) -> np.ndarray:
    """Quantus's ``metric`` on the perturbed inputs ``copies``: step k of its loop makes every input its copy k."""
    steps = iter(range(copies.shape[1]))
    metric.perturb_func = lambda arr, **kwargs: copies[:, next(steps)].reshape(len(arr), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Quantus warns about its parameterisation and unchanged inputs
        return np.asarray(metric(channel_first=True, device="cpu", **call), dtype=np.float64)


def _saliency_for_quantus(dtype):
    """Quantus's explain_func: xai_bench's saliency, summed over channels as Quantus's own explain does."""

    def explain_func(model, inputs, targets, **kwargs):
        maps = explain(
            model, torch.as_tensor(inputs, dtype=dtype), methods=["saliency"], targets=torch.as_tensor(targets)
        )
        return maps["saliency"].values[:, 0].astype(np.float64).sum(1, keepdims=True)

    return explain_func


def _saliency(model, x, y) -> np.ndarray:
    """xai_bench's saliency maps (N, C, H, W), one target per sample."""
    return explain(model, x, methods=["saliency"], targets=torch.from_numpy(y))["saliency"].values[:, 0]


def _ours(model, x, y, metric, method="saliency") -> np.ndarray:
    ds = explain(model, x, methods=[method], targets=torch.from_numpy(y))
    return evaluate(ds, model=model, metrics=[metric])[f"{method}_{metric.id}"].values[:, 0]


QUANTUS = {
    "max_sensitivity": (lambda n: MaxSensitivity(n_samples=n, seed=3),
                        lambda n: quantus.MaxSensitivity(nr_samples=n, lower_bound=0.2, disable_warnings=True)),
    "avg_sensitivity": (lambda n: AvgSensitivity(n_samples=n, radius=0.05, seed=3),
                        lambda n: quantus.AvgSensitivity(nr_samples=n, lower_bound=0.05, disable_warnings=True)),
    # Quantus's normalise_by_max divides by the largest value of the whole batch unless told the axes of one map.
    "local_lipschitz_estimate": (
        lambda n: LocalLipschitzEstimate(n_samples=n, seed=3),
        lambda n: quantus.LocalLipschitzEstimate(nr_samples=n, disable_warnings=True,
                                                 normalise_func_kwargs={"normalise_axes": (1, 2, 3)})),
    "local_lipschitz_estimate_raw": (
        lambda n: LocalLipschitzEstimate(n_samples=n, std=0.3, normalise=False, seed=3),
        lambda n: quantus.LocalLipschitzEstimate(nr_samples=n, perturb_std=0.3, normalise=False,
                                                 disable_warnings=True)),
}  # fmt: skip


@pytest.mark.parametrize("name", list(QUANTUS))
def test_re_explaining_metrics_give_quantus_numbers_on_the_same_copies(name):
    model, x, y = _case()
    ours_metric, theirs_metric = QUANTUS[name]
    metric = ours_metric(5)
    ours = _ours(model, x, y, metric)
    a = _saliency(model, x, y).sum(1, keepdims=True)
    theirs = _quantus(theirs_metric(5), _copies(metric, x), model=model, x_batch=x.numpy(), y_batch=y, a_batch=a,
                      explain_func=_saliency_for_quantus(torch.float64))  # fmt: skip
    # Measured: 0 to 2e-16 relative for the sensitivities, 5e-11 for the Lipschitz estimate (Quantus adds 1e-10
    # to ||x' - x||).
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)
    assert np.all(ours > 0)


def test_max_sensitivity_gives_captum_numbers_with_captums_own_saliency():
    model, x, y = _case()
    metric = MaxSensitivity(n_samples=6, seed=5)
    ours = _ours(model, x, y, metric)
    copies = torch.from_numpy(_copies(metric, x)).flatten(0, 1)  # captum repeats each input n times, in a row

    def channel_summed_saliency(inputs, target):
        # captum hands over the inputs as a tuple, and the perturbed ones as perturb_func returns them.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if isinstance(inputs, tuple):
                return (Saliency(model).attribute(inputs[0], target=target).sum(1, keepdim=True),)
            return Saliency(model).attribute(inputs, target=target).sum(1, keepdim=True)

    theirs = sensitivity_max(channel_summed_saliency, x, perturb_func=lambda inputs: copies, n_perturb_samples=6,
                             target=torch.from_numpy(y))  # fmt: skip
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-9)


def test_relative_input_stability_gives_quantus_numbers_over_the_copies_that_keep_the_prediction():
    # Quantus predicts in float32. Noise up to 0.5 changes some predictions of this model: some samples keep
    # theirs on every copy, some change on some copies, one on all.
    model, x, y = _case(torch.float32, n=6)
    metric = RelativeInputStability(n_samples=6, high=0.5, seed=1)
    ours = _ours(model, x, y, metric)
    copies = _copies(metric, x)
    a = _saliency(model, x, y).astype(np.float64).sum(1, keepdims=True)
    call = {"model": model, "x_batch": x.double().numpy(), "y_batch": y, "a_batch": a,
            "explain_func": _saliency_for_quantus(torch.float32)}  # fmt: skip
    # One copy at a time, Quantus gives each copy's value, NaN where the prediction changes.
    each = np.stack([_quantus(quantus.RelativeInputStability(nr_samples=1, disable_warnings=True),
                              copies[:, k : k + 1], **call) for k in range(6)], 1)  # fmt: skip
    changed = np.isnan(each).sum(1)
    assert {0, 6} <= set(changed.tolist()) and ((changed > 0) & (changed < 6)).any()  # every case is there
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN row
        expected = np.nanmax(each, 1)
    np.testing.assert_allclose(ours, expected, rtol=1e-6, equal_nan=True)
    assert np.isnan(ours).tolist() == (changed == 6).tolist()  # NaN only where every copy changed
    # All copies at once, Quantus's np.max makes a sample NaN as soon as one copy changes its prediction.
    together = _quantus(quantus.RelativeInputStability(nr_samples=6, disable_warnings=True), copies, **call)
    np.testing.assert_allclose(together[changed == 0], ours[changed == 0], rtol=1e-6)
    assert np.isnan(together[changed > 0]).all()


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
def test_infidelity_gives_captums_numbers_on_the_same_perturbations(method, normalize):
    model, x, y = _case()
    metric = Infidelity(n_samples=7, normalise=normalize, seed=4)
    ds = explain(model, x, methods=[method], targets=torch.from_numpy(y))
    ours = evaluate(ds, model=model, metrics=[metric])[f"{method}_infidelity"].values[:, 0]
    copies = torch.from_numpy(_copies(metric, x)).flatten(0, 1)
    theirs = infidelity(model, lambda inputs: (inputs - copies, copies), x, torch.from_numpy(ds[method].values[:, 0]),
                        target=torch.from_numpy(y), n_perturb_samples=7, normalize=normalize)  # fmt: skip
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-9)
    assert np.all(ours > 0)


def test_infidelity_gives_quantus_numbers_on_the_same_perturbations(monkeypatch):
    # Quantus perturbs patch after patch (cumulatively) with a baseline: here its patch loop gets our copies.
    model, x, _ = _case(torch.float32)
    maps = np.random.default_rng(0).standard_normal((4, 1, 12, 12))  # one channel: both count it for every channel
    metric = Infidelity(n_samples=9, normalise=False, seed=2)
    ours = evaluate(maps_dataset(maps[:, None], [1]), model=model, inputs=x, metrics=[metric])["given_infidelity"]
    monkeypatch.setattr(quantus_utils, "get_block_indices", lambda arr, patch_size: range(9))
    theirs = _quantus(quantus.Infidelity(n_perturb_samples=1, perturb_patch_sizes=[4], disable_warnings=True),
                      _copies(metric, x), model=model, x_batch=x.double().numpy(), y_batch=np.ones(4, int),
                      a_batch=maps)  # fmt: skip
    np.testing.assert_allclose(ours.values[:, 0], theirs, rtol=1e-6)


class Linear(nn.Module):
    """logit_k = sum(w_k * x): the gradient is w_k everywhere."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)  # (K, C, H, W)

    def forward(self, x):
        return torch.einsum("nchw,kchw->nk", x, self.w)


def _linear(seed=0, n=3):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 3, 8, 8, generator=gen, dtype=torch.float64)
    w[0] += 2.0  # class 0 wins on positive images, with or without the noise
    return Linear(w).eval(), torch.rand(n, 3, 8, 8, generator=gen, dtype=torch.float64) + 0.5


def test_saliency_of_a_linear_model_does_not_move_at_all():
    model, x = _linear()
    ds = explain(model, x, methods=["saliency"], targets=[0, 2])
    out = evaluate(ds, model=model, metrics={name: {"n_samples": 4} for name in RE_EXPLAINING})
    for name in RE_EXPLAINING:
        assert np.all(out[f"saliency_{name}"].values == 0.0), name


def test_input_x_gradient_of_a_linear_model_follows_the_closed_forms():
    # a(x) = w_t * x, so the channel-summed map moves by sum_c w_tc (x'_c - x_c) exactly.
    model, x = _linear(seed=1)
    t = 2
    metrics = [MaxSensitivity(n_samples=5, seed=1), AvgSensitivity(n_samples=5, seed=1),
               LocalLipschitzEstimate(n_samples=5, normalise=False, seed=1),
               RelativeInputStability(n_samples=5, seed=1)]  # fmt: skip
    ds = explain(model, x, methods=["input_x_gradient"], targets=[t])
    out = evaluate(ds, model=model, metrics=metrics)
    w, xs = model.w[t].detach().numpy(), x.numpy()
    a = (w * xs).sum(1)  # (N, H, W)
    for metric in metrics:
        copies = _copies(metric, x)
        moved = (w * (copies - xs[:, None])).sum(2)  # (N, n, H, W)
        size = np.linalg.norm(a.reshape(3, -1), axis=1)[:, None]
        change = np.linalg.norm(moved.reshape(3, 5, -1), axis=2)
        step = np.linalg.norm((copies - xs[:, None]).reshape(3, 5, -1), axis=2)
        relative = np.linalg.norm((moved / a[:, None]).reshape(3, 5, -1), axis=2) / np.linalg.norm(
            ((copies - xs[:, None]) / xs[:, None]).reshape(3, 5, -1), axis=2
        )
        expected = {"max_sensitivity": (change / size).max(1), "avg_sensitivity": (change / size).mean(1),
                    "local_lipschitz_estimate": (change / step).max(1),
                    "relative_input_stability": relative.max(1)}[metric.id]  # fmt: skip
        np.testing.assert_allclose(out[f"input_x_gradient_{metric.id}"].values[:, 0], expected, rtol=1e-10)


def test_infidelity_of_the_gradient_of_a_linear_model_is_zero_and_of_twice_it_the_squared_change():
    # f(x) - f(x - I) = I . w_t exactly: the gradient predicts every change; twice it is off by I . w_t.
    model, x = _linear(seed=2)
    t = 1
    w = model.w[t].detach().numpy()
    exact = maps_dataset(np.broadcast_to(w, (3, 1, *w.shape)), [t], inputs=x.numpy())
    doubled = maps_dataset(np.broadcast_to(2 * w, (3, 1, *w.shape)), [t], inputs=x.numpy())
    for normalize in (False, True):
        chosen = {"infidelity": {"n_samples": 6, "normalise": normalize, "seed": 9}}
        zero = evaluate(exact, model=model, metrics=chosen)["given_infidelity"].values[:, 0]
        np.testing.assert_allclose(zero, 0.0, atol=1e-24)
        twice = evaluate(doubled, model=model, metrics=chosen)["given_infidelity"].values[:, 0]
        if normalize:  # the best scale of 2 w_t is 1/2: no error left
            np.testing.assert_allclose(twice, 0.0, atol=1e-24)
        else:
            perturbations = x.numpy()[:, None] - _copies(Infidelity(n_samples=6, seed=9), x)
            predicted = (perturbations * w).reshape(3, 6, -1).sum(2)
            np.testing.assert_allclose(twice, (predicted**2).mean(1), rtol=1e-10)


def test_scores_do_not_depend_on_the_pass_size_or_on_how_the_copies_are_sliced(monkeypatch):
    model, x, _ = _case(n=3)
    ds = explain(model, x, methods=["saliency"], targets=[[1], [0, 3], [2]])
    chosen = {name: {"n_samples": 2, "seed": 11} for name in [*RE_EXPLAINING, "infidelity"]}
    whole = evaluate(ds, model=model, metrics=chosen, passes=64)
    small = evaluate(ds, model=model, metrics=chosen, passes=2)
    monkeypatch.setattr(robustness, "CHUNK_ELEMENTS", 1)  # one copy per call to Context.explain
    sliced = evaluate(ds, model=model, metrics=chosen, passes=3)
    for name in chosen:
        variable = f"saliency_{name}"
        np.testing.assert_allclose(small[variable].values, whole[variable].values, rtol=1e-10, equal_nan=True)
        np.testing.assert_allclose(sliced[variable].values, whole[variable].values, rtol=1e-10, equal_nan=True)


def test_a_samples_copies_are_the_same_for_each_of_its_targets_and_whatever_else_is_scored():
    model, x, _ = _case(n=3)
    both = explain(model, x, methods=["saliency"], targets=[0, 2])
    alone = explain(model, x[:2], methods=["saliency"], targets=[2])
    chosen = {"max_sensitivity": {"n_samples": 3}, "infidelity": {"n_samples": 3}}
    together = evaluate(both, model=model, metrics=chosen)
    apart = evaluate(alone, model=model, metrics=chosen)
    for name in chosen:
        np.testing.assert_allclose(apart[f"saliency_{name}"].values[:, 0], together[f"saliency_{name}"].values[:2, 1],
                                   rtol=1e-10)  # fmt: skip
    # A sample's copies follow its id, not its row: the last two samples alone, under their own ids.
    later = explain(model, x[1:], methods=["saliency"], targets=[2], sample_ids=[1, 2])
    later = evaluate(later, model=model, metrics=chosen)
    for name in chosen:
        np.testing.assert_allclose(later[f"saliency_{name}"].values[:, 0], together[f"saliency_{name}"].values[1:, 1],
                                   rtol=1e-10)  # fmt: skip


def test_max_and_avg_sensitivity_share_one_set_of_maps_of_the_copies(monkeypatch):
    model, x, y = _case(n=2)
    ds = explain(model, x, methods=["saliency", "input_x_gradient"], targets=torch.from_numpy(y))
    calls = []
    per_copy = robustness.Reexplained.per_copy
    monkeypatch.setattr(
        robustness.Reexplained, "per_copy", lambda self, *a: calls.append(self.id) or per_copy(self, *a)
    )
    chosen = {"max_sensitivity": {"n_samples": 3}, "avg_sensitivity": {"n_samples": 3}}
    together = evaluate(ds, model=model, metrics=chosen)
    assert calls == ["max_sensitivity", "max_sensitivity"]  # once per method
    apart = evaluate(ds, model=model, metrics={"avg_sensitivity": {"n_samples": 3}})
    np.testing.assert_array_equal(apart["saliency_avg_sensitivity"].values, together["saliency_avg_sensitivity"].values)
    chosen["avg_sensitivity"] = {"n_samples": 4}
    other = evaluate(ds, model=model, metrics=chosen)
    assert calls[-2:] == ["max_sensitivity", "avg_sensitivity"]  # other copies: nothing shared
    assert not np.array_equal(other["saliency_avg_sensitivity"].values, together["saliency_avg_sensitivity"].values)


def test_the_callers_random_state_and_model_are_left_alone():
    from xai_bench.testing.conformance import assert_model_unchanged, model_state

    model, x, y = _case(n=2)
    ds = explain(model, x, methods=["saliency"], targets=torch.from_numpy(y))
    torch.manual_seed(123)
    np.random.seed(123)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    before = model_state(model)
    evaluate(ds, model=model, metrics={name: {"n_samples": 2} for name in [*RE_EXPLAINING, "infidelity"]})
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    assert_model_unchanged(before, model)


def test_a_perturbation_of_ones_own_replaces_the_noise():
    model, x, y = _case(n=2)
    unchanged = lambda image, generator: image.clone()  # noqa: E731
    out = evaluate(
        explain(model, x, methods=["saliency"], targets=torch.from_numpy(y)),
        model=model,
        metrics=[MaxSensitivity(n_samples=2, perturb=unchanged), LocalLipschitzEstimate(n_samples=2, perturb=unchanged),
                 Infidelity(n_samples=2, perturb=unchanged)],
    )  # fmt: skip
    assert np.all(out["saliency_max_sensitivity"].values == 0.0)
    assert np.isnan(out["saliency_local_lipschitz_estimate"].values).all()  # no input change to divide by
    assert np.all(out["saliency_infidelity"].values == 0.0)
    named = MaxSensitivity(perturb=unchanged).params()["perturb"]
    assert named == f"{__name__}.test_a_perturbation_of_ones_own_replaces_the_noise.<locals>.<lambda>"
    cropped = MaxSensitivity(n_samples=1, perturb=lambda image, generator: image[:, 1:])
    with pytest.raises(InvalidParameterError, match=r"max_sensitivity: perturb returned \(3, 11, 12\)"):
        evaluate(explain(model, x, methods=["saliency"], targets=[0]), model=model, metrics=[cropped])


@pytest.mark.parametrize(
    ("metric", "params", "message"),
    [
        ("max_sensitivity", {"n_samples": 0}, "n_samples must be a positive int"),
        ("avg_sensitivity", {"radius": -0.1}, r"radius \(of the uniform noise, per element\) must be > 0"),
        ("local_lipschitz_estimate", {"std": float("inf")}, "std .* must be a finite number"),
        ("local_lipschitz_estimate", {"normalise": "yes"}, "normalise must be True or False"),
        ("relative_input_stability", {"low": 0.3}, r"the noise is uniform in \[low, high\): high must be > low"),
        ("relative_input_stability", {"eps_min": 0}, "eps_min .* must be > 0"),
        ("infidelity", {"output": "probability"}, "output .* must be None .* or one of 'logit', 'softmax', 'sigmoid'"),
        ("infidelity", {"seed": 1.5}, "seed must be an int"),
        ("max_sensitivity", {"perturb": "uniform"}, "perturb must be None .* or a callable"),
    ],
)
def test_bad_parameters_are_refused_when_the_metric_is_made(metric, params, message):
    from xai_bench.plugins import registry

    with pytest.raises(InvalidParameterError, match=f"{metric}: {message}"):
        registry.resolve(registry.metrics, {metric: params})


def test_infidelity_scores_the_explained_probability_when_asked():
    model, x, y = _case(n=2)
    ds = explain(model, x, methods=["saliency"], targets=torch.from_numpy(y))
    copies = torch.from_numpy(_copies(Infidelity(n_samples=3), x)).flatten(0, 1)
    softmax = nn.Sequential(model, nn.Softmax(1))
    maps = torch.from_numpy(ds["saliency"].values[:, 0])
    theirs = infidelity(softmax, lambda inputs: (inputs - copies, copies), x, maps, target=torch.from_numpy(y),
                        n_perturb_samples=3, normalize=True)  # fmt: skip
    ours = evaluate(ds, model=model, metrics={"infidelity": {"n_samples": 3, "output": "softmax"}})
    np.testing.assert_allclose(ours["saliency_infidelity"].values[:, 0], theirs.numpy(), rtol=1e-9)
    # Maps that explain the softmax are scored on it without being told.
    explained = explain(model, x, methods=["saliency"], targets=Targets(torch.from_numpy(y), output="softmax"))
    softmax_maps = torch.from_numpy(explained["saliency"].values[:, 0])
    theirs = infidelity(softmax, lambda inputs: (inputs - copies, copies), x, softmax_maps,
                        target=torch.from_numpy(y), n_perturb_samples=3, normalize=True)  # fmt: skip
    ours = evaluate(explained, model=model, metrics={"infidelity": {"n_samples": 3}})
    np.testing.assert_allclose(ours["saliency_infidelity"].values[:, 0], theirs.numpy(), rtol=1e-9)


@pytest.mark.slow
def test_max_sensitivity_and_infidelity_of_a_resnet18_give_captums_numbers():
    # Batch norms in eval mode and in-place ReLUs on the copies' path; the model explained is a private copy.
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3).double().eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = np.array([0, 2])
    metrics = [MaxSensitivity(n_samples=3, seed=2), Infidelity(n_samples=3, seed=2)]
    ds = explain(model, x, methods=["saliency"], targets=torch.from_numpy(y))
    out = evaluate(ds, model=model, metrics=metrics)
    sensitivity_copies = torch.from_numpy(_copies(metrics[0], x)).flatten(0, 1)
    infidelity_copies = torch.from_numpy(_copies(metrics[1], x)).flatten(0, 1)

    def channel_summed_saliency(inputs, target):
        one = inputs[0] if isinstance(inputs, tuple) else inputs
        summed = Saliency(model).attribute(one, target=target).sum(1, keepdim=True)
        return (summed,) if isinstance(inputs, tuple) else summed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sensitivity = sensitivity_max(channel_summed_saliency, x, perturb_func=lambda inputs: sensitivity_copies,
                                      n_perturb_samples=3, target=torch.from_numpy(y))  # fmt: skip
    fidelity = infidelity(model, lambda inputs: (inputs - infidelity_copies, infidelity_copies), x,
                          torch.from_numpy(ds["saliency"].values[:, 0]), target=torch.from_numpy(y),
                          n_perturb_samples=3, normalize=True)  # fmt: skip
    np.testing.assert_allclose(out["saliency_max_sensitivity"].values[:, 0], sensitivity.numpy(), rtol=1e-9)
    np.testing.assert_allclose(out["saliency_infidelity"].values[:, 0], fidelity.numpy(), rtol=1e-9)


def test_infidelity_refuses_maps_that_do_not_fit_the_inputs():
    model, x, _ = _case(n=2)
    maps = maps_dataset(np.ones((2, 1, 2, 12, 12)), [0])  # two channels for three-channel inputs
    with pytest.raises(InvalidParameterError, match=r"infidelity: maps of shape \(2, 12, 12\) for inputs of shape"):
        evaluate(maps, model=model, inputs=x, metrics={"infidelity": {"n_samples": 1}})


def test_copies_made_again_keep_their_samples_per_sample_parameters(monkeypatch):
    """A method with parameters per sample (here a feature mask per sample) explains each copy with its own
    sample's, however the copies are sliced: with noise of 1e-9 the maps hardly move."""
    model, x, _ = _case(n=3)
    grid = torch.arange(144).view(12, 12)
    masks = torch.stack([grid // 36, (grid % 12) // 4, (grid // 12 < 6).long()])  # 4, 3 and 2 features
    ds = explain(model, x, methods={"feature_ablation": {"features": masks}}, targets=[1])
    monkeypatch.setattr(robustness, "CHUNK_ELEMENTS", 2 * x[0].numel())  # two copies per call: samples mix
    scores = evaluate(ds, model=model, metrics={"max_sensitivity": {"n_samples": 3, "radius": 1e-9}},
                      method_params={"feature_ablation": {"features": masks}})  # fmt: skip
    assert (scores["feature_ablation_max_sensitivity"].values < 1e-6).all()
