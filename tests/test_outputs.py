"""``output=``: maps of the logits' sigmoid or softmax, as if the model ended in that module, recorded."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import xai_bench
from xai_bench import InvalidParameterError, InvalidTargetError, Targets, explain, run
from xai_bench.app.viz import plot_maps

METHODS = {
    "saliency": None,
    "integrated_gradients": {"n_steps": 16},
    "deeplift": None,
    "occlusion": {"window": 4, "stride": 2},
}


def _net(seed: int = 0, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, classes)
    ).eval()


def _inputs(seed: int = 1, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("output", "head"), [("sigmoid", nn.Sigmoid), ("softmax", lambda: nn.Softmax(dim=1))])
def test_maps_equal_those_of_the_model_with_the_head(output, head):
    """Independent reference: the same methods on ``nn.Sequential(model, head)``, the authors' wrapper."""
    model, x = _net(), _inputs()
    before = copy.deepcopy(model.state_dict())
    ds = explain(model, x, methods=METHODS, targets=Targets([0, 2], output=output), passes=2)
    ref = explain(nn.Sequential(model, head()).eval(), x, methods=METHODS, targets=[0, 2], passes=2)
    for method in METHODS:
        np.testing.assert_allclose(ds[method].values, ref[method].values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ds["score"].values, ref["score"].values, rtol=1e-6)
    assert ds.attrs["output"] == output and ref.attrs["output"] == "logit"
    assert output in ds["score"].attrs["description"]
    # The user's model: its own fingerprint recorded, not wrapped, weights and modes unchanged.
    assert ds.attrs["model_fingerprint"] == explain(model, x, methods="saliency", targets=0).attrs["model_fingerprint"]
    assert ds.attrs["model"].endswith("Sequential") and len(model) == 5 and not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_deeplift_sums_to_the_change_of_the_sigmoid():
    model, x = _net(), _inputs()
    ds = explain(model, x, methods="deeplift", targets=Targets([1], output="sigmoid"))
    with torch.no_grad():
        change = torch.sigmoid(model(x))[:, 1] - torch.sigmoid(model(torch.zeros_like(x)))[:, 1]
    np.testing.assert_allclose(ds["deeplift"].values.sum(axis=(2, 3, 4))[:, 0], change.numpy(), atol=1e-5)
    assert np.abs(ds["deeplift_delta"].values).max() < 1e-5


@given(seed=st.integers(0, 2**16), target=st.integers(0, 3))
def test_saliency_of_the_sigmoid_is_the_chain_rule(seed, target):
    """Closed form: d sigmoid(z)/dx = p (1 - p) dz/dx, so the signed gradient maps differ by p (1 - p)."""
    model, x = _net(seed), _inputs(seed + 1, n=2)
    params = {"saliency": {"abs": False}}
    logit = explain(model, x, methods=params, targets=[target])
    prob = explain(model, x, methods=params, targets=Targets([target], output="sigmoid"))
    p = torch.sigmoid(torch.as_tensor(logit["score"].values, dtype=torch.float64)).numpy()
    expected = logit["saliency"].values * (p * (1 - p))[:, :, None, None, None]
    np.testing.assert_allclose(prob["saliency"].values, expected, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(prob["score"].values, p, rtol=1e-6)


def test_predicted_multilabel_picks_the_same_labels_whichever_output():
    model, x = _net(3, classes=6), _inputs(4, n=6)
    for threshold in (0.3, 0.5, 0.7):
        a = explain(model, x, methods="saliency", targets=Targets("predicted", task="multilabel", threshold=threshold))
        b = explain(
            model,
            x,
            methods="saliency",
            targets=Targets("predicted", task="multilabel", threshold=threshold, output="sigmoid"),
        )
        np.testing.assert_array_equal(a["target_index"].values, b["target_index"].values)
        assert (b["score"].values[np.isfinite(b["score"].values)] > threshold).all()


def test_predicted_multiclass_is_the_arg_max_under_softmax():
    model, x = _net(5), _inputs(6, n=5)
    a = explain(model, x, methods="saliency", targets="predicted")
    b = explain(model, x, methods="saliency", targets=Targets("predicted", output="softmax"))
    np.testing.assert_array_equal(a["target_index"].values, b["target_index"].values)


def test_bad_outputs_are_refused_by_name():
    model, x = _net(), _inputs()
    with pytest.raises(InvalidParameterError, match="output must be one of 'logit', 'sigmoid', 'softmax'"):
        explain(model, x, methods="saliency", targets=Targets(0, output="probability"))
    with pytest.raises(InvalidTargetError, match="output='softmax'.*multilabel"):
        explain(model, x, methods="saliency", targets=Targets(0, output="softmax", task="multilabel"))


class _Images(torch.utils.data.Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def test_run_explains_the_same_output_and_refuses_a_store_of_another(tmp_path):
    model, x = _net(), _inputs(n=5)
    store = tmp_path / "maps.zarr"
    run(model, _Images(x), methods={"saliency": None}, store=store, samples_per_block=2,
        targets=Targets([1], output="sigmoid"), passes=2)  # fmt: skip
    stored = xai_bench.open_maps(store)
    ref = explain(model, x, methods="saliency", targets=Targets([1], output="sigmoid"), passes=2)
    np.testing.assert_allclose(stored["saliency"].values, ref["saliency"].values, rtol=1e-6)
    assert stored.attrs["output"] == "sigmoid"
    with pytest.raises(xai_bench.StoreMismatchError):
        run(model, _Images(x), methods={"saliency": None}, store=store, targets=[1], samples_per_block=2)


def test_metrics_remake_maps_of_the_stored_output(monkeypatch):
    """Maps a sanity check makes again explain what the stored ones explain: given the unchanged weights
    instead of randomised ones, they equal the stored maps."""
    from xai_bench.api import evaluating

    model, x = _net(), _inputs()
    ds = explain(model, x, methods={"integrated_gradients": {"n_steps": 8}}, targets=Targets([0], output="sigmoid"))
    original, remade = evaluating.method_maps, []

    def unchanged(private, *args, **kwargs):
        inner = private.model if hasattr(private, "head") else private
        inner.load_state_dict(model.state_dict())
        remade.append(original(private, *args, **kwargs))
        return remade[-1]

    monkeypatch.setattr(evaluating, "method_maps", unchanged)
    xai_bench.evaluate(ds, model=model, inputs=x, metrics={"parameter_randomisation": {"layers": ["4"]}})
    assert remade
    np.testing.assert_allclose(remade[0].numpy(), ds["integrated_gradients"].values, rtol=1e-5, atol=1e-8)


def test_pictures_and_report_name_the_output(tmp_path):
    model, x = _net(), _inputs()
    ds = explain(model, x, methods="saliency", targets=Targets([0], output="sigmoid", task="multilabel"))
    fig = plot_maps(ds, samples=[0])
    titles = [ax.get_title() for ax in fig.axes]
    assert any("(sigmoid " in t for t in titles) and not any("logit" in t for t in titles)
    store = tmp_path / "s.zarr"
    xai_bench.save_maps(ds, store)
    page = xai_bench.report([store], out=tmp_path / "html")
    text = (tmp_path / "html" / "index.html").read_text() if page is None else page.read_text()
    assert "sigmoid 0." in text and "logit " not in text.split("<body")[-1].split("signed maps")[0]
