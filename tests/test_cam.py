"""The CAM family: pytorch-grad-cam's numbers in float64, the layer found and stated, passes that do not matter.

pytorch-grad-cam is the reference. Its raw CAMs come from its own ``get_cam_image`` (before the
[0, 1] scaling its ``__call__`` applies), with its ReLU, resized bilinearly with half-pixel centres
in float64 (``cv2.resize``'s ``INTER_LINEAR``, which pytorch-grad-cam uses, computes its interpolation
weights in float32: checked separately to that precision). It rounds to float32 in a few places
(``np.float32`` casts of scores and maps, ``torch.Tensor(scores)``); those run in float64 here, so
that the comparison is to 1e-9, not to float32's 1e-7.
"""

from __future__ import annotations

import contextlib
import copy

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from pytorch_grad_cam import AblationCAM, EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from xai_bench import InvalidParameterError, Targets, explain
from xai_bench.attributors.cam import ABLATIONS, CAM_METHODS, eigen_projection, find_layer, upsample
from xai_bench.testing import tiny_cnn

IDS = ["grad_cam", "grad_cam_plus_plus", "xgrad_cam", "layer_cam", "score_cam", "ablation_cam", "eigen_cam"]
GRADIENT = {"grad_cam": GradCAM, "grad_cam_plus_plus": GradCAMPlusPlus, "xgrad_cam": XGradCAM, "layer_cam": LayerCAM}
PEERS = {**GRADIENT, "score_cam": ScoreCAM, "ablation_cam": AblationCAM, "eigen_cam": EigenCAM}


class _Float64Numpy:
    """numpy with its ``float32`` made ``float64``: pytorch-grad-cam's own code, without its float32 rounding."""

    float32 = np.float64

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.fixture
def peer64(monkeypatch):
    import pytorch_grad_cam.ablation_cam
    import pytorch_grad_cam.utils.image
    import pytorch_grad_cam.utils.svd_on_activations

    for module in (
        pytorch_grad_cam.ablation_cam,
        pytorch_grad_cam.utils.image,
        pytorch_grad_cam.utils.svd_on_activations,
    ):
        monkeypatch.setattr(module, "np", _Float64Numpy())


@contextlib.contextmanager
def _default_float64():
    """Score-CAM builds its scores with ``torch.Tensor``, in the default dtype."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def peer_cams(methods, model, path, x, classes, *, keep_output=False, **kw):
    """pytorch-grad-cam's raw CAMs (N, H, W) of class ``classes[i]`` for sample i at module ``path``, per method:
    its ``get_cam_image`` (Eigen-CAM: its sign-corrected projection), its ReLU, resized to the input.

    One forward pass (and backward, for gradient methods) through its ``BaseCAM`` machinery gives the
    activations and gradients every method's ``get_cam_image`` reads, as its ``__call__`` does.
    ``keep_output`` gives the rest of the network a copy of the layer's output, so that an in-place op
    after the layer cannot rewrite the activations pytorch-grad-cam keeps (it keeps the tensor on the CPU).
    """
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    module = model.get_submodule(path)
    cams = {m: PEERS[m](model, [module], **(kw if m == "ablation_cam" else {})) for m in methods}
    runner = next((cams[m] for m in methods if cams[m].uses_gradients), cams[methods[0]])
    handle = module.register_forward_hook(lambda m, a, out: out.clone()) if keep_output else None
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    raw = {}
    try:
        with _default_float64():
            if runner.uses_gradients:
                runner(x, targets)  # one forward and backward; its hooks keep the activations and gradients
                grads = runner.activations_and_grads.gradients[0].numpy()
            else:
                with torch.no_grad():
                    runner.activations_and_grads(x)
                grads = None
            activations = runner.activations_and_grads.activations[0].numpy()
            for method, cam in cams.items():
                if method == "eigen_cam":
                    raw[method] = get_2d_projection_with_sign_correction(activations)
                else:
                    raw[method] = cam.get_cam_image(x, module, targets, activations, grads, False)
    finally:
        for cam in cams.values():
            cam.activations_and_grads.release()
        if handle is not None:
            handle.remove()
        for p in model.parameters():
            p.grad = None  # what its backward pass left
    # Resized in float64 with half-pixel centres: cv2.resize's INTER_LINEAR, whose float32 interpolation weights
    # would cost 1e-8 (test_resizing_is_cv2_inter_linear).
    size = tuple(x.shape[-2:])
    return {
        m: F.interpolate(torch.from_numpy(np.maximum(r, 0)).unsqueeze(1), size=size, mode="bilinear",
                         align_corners=False)[:, 0].numpy()
        for m, r in raw.items()
    }  # fmt: skip


def peer_scaled(method, model, path, x, classes, **kw):
    """pytorch-grad-cam's own output: its maps scaled to [0, 1] (N, H, W)."""
    net = copy.deepcopy(model)  # its backward pass leaves .grad on the parameters
    cam = PEERS[method](net, [net.get_submodule(path)], **kw)
    try:
        with _default_float64():
            return cam(x, [ClassifierOutputTarget(int(c)) for c in classes])
    finally:
        cam.activations_and_grads.release()


def ours(model, x, method, classes, **params):
    """Our maps (N, H, W) of class ``classes[i]`` for sample i (one per sample), checked shared by the channels."""
    ds = explain(model, x, methods={method: params}, targets=torch.as_tensor(classes), passes=64)
    maps = ds[method].values[:, 0]
    np.testing.assert_array_equal(maps, np.broadcast_to(maps[:, :1], maps.shape))
    return maps[:, 0]


def assert_close(got, expected, rtol=1e-9, *, empty=False):
    """Equal to ``rtol`` relative to the largest value (a map's small values carry its large ones' rounding);
    maps that are all 0 (a CAM negative everywhere) show nothing, so they fail unless ``empty`` allows them."""
    scale = max(float(np.abs(expected).max()), 1e-300)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)
    assert empty or float(np.abs(expected).max()) > 0, "a comparison of empty maps shows nothing"
    return float(np.abs(expected).max()) > 0


@pytest.fixture
def case(gen):
    return tiny_cnn(), torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)


# conv2: maps at the input's size; branch_conv: 5 x 5 maps resized to 12 x 12. Neither output is changed in place.
@pytest.mark.parametrize("path", ["branch_conv", "conv2"])
@pytest.mark.parametrize("method", IDS)
def test_raw_maps_match_pytorch_grad_cam(case, peer64, method, path):
    model, x = case
    classes = [0, 3, 1]
    # Ablation-CAM: one copy per batch, as its ablation value drifts by 1e7 per row of a batch where activations
    # are negative (it re-reads the minimum after each row it ablates).
    kw = {"batch_size": 1} if method == "ablation_cam" else {}
    expected = peer_cams([method], model, path, x, classes, **kw)[method]
    assert_close(ours(model, x, method, classes, layer=path), expected)


@pytest.mark.parametrize("method", [m for m in IDS if m != "eigen_cam"])
def test_normalize_gives_pytorch_grad_cams_scaled_maps(case, peer64, method):
    model, x = case
    kw = {"batch_size": 1} if method == "ablation_cam" else {}
    expected = peer_scaled(method, model, "branch_conv", x, [2, 0, 1], **kw)
    got = ours(model, x, method, [2, 0, 1], layer="branch_conv", normalize=True)
    assert_close(got, expected)
    assert got.min() >= 0 and got.max() <= 1


def test_maps_are_of_the_layers_own_output_when_an_in_place_relu_follows(case, peer64):
    """tiny_cnn's conv3 output is rewritten by ``F.relu(..., inplace=True)``: the maps are those of its output,
    which are pytorch-grad-cam's when it is handed a copy. pytorch-grad-cam itself, on the CPU, keeps the tensor
    that the ReLU rewrites (``.cpu()`` does not copy there), so its activations are the ReLU's: its Score-CAM
    masks and Eigen-CAM components differ (gradient maps do not show it here, as the gradient is 0 where the
    ReLU cut)."""
    model, x = case
    classes = [1, 1, 2]
    assert find_layer(model, x[:1], None, "grad_cam").path == "conv3"
    expected = peer_cams(IDS, model, "conv3", x, classes, keep_output=True, batch_size=1)
    for method in IDS:
        assert_close(ours(model, x, method, classes), expected[method])

    own = {}
    handle = model.conv3.register_forward_hook(lambda m, a, out: own.update(a=out.detach().clone()))
    cam = GradCAM(model, [model.conv3])  # its hooks run after ours, which copied the output first
    try:
        with torch.no_grad():
            model(x)
        kept = cam.activations_and_grads.activations[0]
    finally:
        handle.remove()
        cam.activations_and_grads.release()
    assert bool((own["a"] < 0).any())
    torch.testing.assert_close(kept, own["a"].clamp_min(0), rtol=0, atol=0)
    for method in ("score_cam", "eigen_cam"):
        rewritten = peer_cams([method], model, "conv3", x, classes)[method]
        assert not np.allclose(rewritten, ours(model, x, method, classes), rtol=1e-6)


def test_per_sample_targets_equal_per_target_calls(case):
    model, x = case
    classes = torch.tensor([2, 0, 3])
    slots = explain(model, x, methods=IDS, targets=classes, passes=2)
    for t in range(4):
        dense = explain(model, x, methods=IDS, targets=[t], passes=2)
        rows = (classes == t).numpy()
        for method in IDS:
            np.testing.assert_allclose(slots[method].values[rows, 0], dense[method].values[rows, 0], rtol=1e-12)


@pytest.fixture(scope="module")
def all_classes():
    """tiny_cnn's maps of every class at branch_conv, in one pass per call: what any pass size must give."""
    model = tiny_cnn()
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    methods = {m: {"layer": "branch_conv"} for m in IDS}
    return model, x, methods, explain(model, x, methods=methods, targets=[0, 1, 2, 3], passes=64)


@settings(max_examples=8)
@given(
    passes=st.sampled_from([1, 2, 3, 5, 7, 50]),
    targets=st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True),
)
def test_maps_do_not_depend_on_the_pass_size_or_the_other_targets(all_classes, passes, targets):
    """A sample's channels (Score-CAM, Ablation-CAM) may be split between passes anywhere."""
    model, x, methods, whole = all_classes
    part = explain(model, x, methods=methods, targets=targets, passes=passes)
    for method in IDS:
        np.testing.assert_allclose(part[method].values, whole[method].values[:, targets], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("passes", [1, 3, 50])
def test_score_and_ablation_cam_split_channels_anywhere(case, passes):
    model, x = case
    whole = explain(model, x, methods=["score_cam", "ablation_cam"], targets=[0, 2], passes=64)
    part = explain(model, x, methods=["score_cam", "ablation_cam"], targets=[0, 2], passes=passes)
    for method in ("score_cam", "ablation_cam"):
        np.testing.assert_allclose(part[method].values, whole[method].values, rtol=1e-10, atol=1e-14)


def test_ablation_cam_on_a_linear_head_is_its_closed_form(gen):
    """conv -> global average pool -> linear: zeroing channel k lowers the score by v_k mean(A_k), so
    w_k = v_k mean(A_k) / y, whether the layers after it run alone or the whole network does."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))
    model = model.double().eval()
    x = torch.rand(2, 3, 11, 11, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        a = model[0](x)
        y = model(x)[:, 2]
    weights = model[3].weight[2].detach() * a.mean((-2, -1)) / y[:, None]
    cam = torch.einsum("nk,nkhw->nhw", weights, a).clamp_min(0)
    expected = F.interpolate(cam[:, None], size=(11, 11), mode="bilinear", align_corners=False)[:, 0]
    got = ours(model, x, "ablation_cam", [2, 2], layer="0", ablation="zero")
    assert_close(got, expected.numpy())
    ds = explain(model, x, methods={"ablation_cam": {"layer": "0"}}, targets=[2])
    assert "ablated copies run only the layers after it" in ds["ablation_cam"].attrs["surgery"]


class _Skip(nn.Module):
    """A residual connection over ``body``: the layers after it also read the input."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head((self.body(x) + x).mean((-2, -1)))


def test_ablation_cam_runs_full_passes_where_a_connection_skips_over_the_layer(gen):
    torch.manual_seed(3)
    model = _Skip().double().eval()
    x = torch.rand(3, 3, 8, 8, generator=gen, dtype=torch.float64)
    ds = explain(model, x, methods={"ablation_cam": {"layer": "body", "ablation": "zero"}}, targets=[0], passes=2)
    assert "full forward passes" in ds["ablation_cam"].attrs["surgery"]
    # Closed form: the head is linear in the channel means, so zeroing channel k lowers y by v_k mean(body_k).
    with torch.no_grad():
        a = model.body(x)
        y = model(x)[:, 0]
    weights = model.head.weight[0].detach() * a.mean((-2, -1)) / y[:, None]
    expected = torch.einsum("nk,nkhw->nhw", weights, a).clamp_min(0)
    assert_close(ds["ablation_cam"].values[:, 0, 0], expected.numpy())


def test_ablation_auto_zeroes_after_a_relu_and_goes_below_the_minimum_elsewhere(case):
    model, x = case
    # After bn + residual + ReLU (the shared relu module runs twice, so take branch_pool: a max of ReLU outputs).
    after_relu = {m: explain(model, x, methods={"ablation_cam": {"layer": "branch_pool", "ablation": m}},
                             targets=[1])["ablation_cam"].values for m in ABLATIONS}  # fmt: skip
    np.testing.assert_array_equal(after_relu["auto"], after_relu["zero"])
    signed = {m: explain(model, x, methods={"ablation_cam": {"layer": "branch_conv", "ablation": m}},
                         targets=[1])["ablation_cam"].values for m in ABLATIONS}  # fmt: skip
    assert not np.allclose(signed["auto"], signed["zero"])


@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    seed=st.integers(0, 99),
)
def test_resizing_is_cv2_inter_linear(h, w, height, width, seed):
    """To cv2's precision: it computes its interpolation weights in float32, even for float64 images."""
    cam = np.random.default_rng(seed).standard_normal((h, w))
    expected = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width)
    got = upsample(torch.from_numpy(cam), (height, width)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=2 * np.finfo(np.float32).eps * np.abs(cam).max())


@given(seed=st.integers(0, 200), k=st.integers(2, 7), scale=st.floats(0.1, 10.0))
def test_eigen_projection_sign_is_a_convention_of_the_data(seed, k, scale):
    """The projection does not follow the solver's sign: permuting channels or scaling the activations by c > 0
    gives the same projection (times c), and it is pytorch-grad-cam's sign-corrected one."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    a = torch.from_numpy(np.random.default_rng(seed).standard_normal((2, k, 4, 3)))
    p = eigen_projection(a)
    permuted = eigen_projection(a[:, torch.randperm(k, generator=torch.Generator().manual_seed(seed))])
    np.testing.assert_allclose(permuted, p, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(eigen_projection(a * scale), p * scale, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(p, get_2d_projection_with_sign_correction(a.numpy()), rtol=1e-5, atol=1e-6)


def test_eigen_cam_is_pytorch_grad_cams_projection_with_its_sign_fixed(case):
    """EigenCAM's own projection keeps the solver's sign: ours is its ReLU or its negation's, per image."""
    model, x = case
    got = ours(model, x, "eigen_cam", [0, 0, 0], layer="branch_conv")
    net = copy.deepcopy(model)
    cam = EigenCAM(net, [net.branch_conv])
    try:
        with torch.no_grad():
            cam.activations_and_grads(x)
        raw = cam.get_cam_image(x, None, None, cam.activations_and_grads.activations[0].numpy(), None, False)
    finally:
        cam.activations_and_grads.release()
    for image, projection in zip(got, raw, strict=True):
        signed = [cv2.resize(np.maximum(s * projection.astype(np.float64), 0), (12, 12)) for s in (1, -1)]
        # Its projection is float32 (np.float32 in get_2d_projection).
        assert any(np.allclose(image, s, rtol=1e-5, atol=1e-6 * np.abs(s).max()) for s in signed)


def test_eigen_cam_is_the_same_for_every_target(case):
    model, x = case
    maps = explain(model, x, methods="eigen_cam", targets=[0, 1, 3])["eigen_cam"].values
    np.testing.assert_array_equal(maps[:, 0], maps[:, 1])
    np.testing.assert_array_equal(maps[:, 0], maps[:, 2])


def test_the_layer_is_stated_in_the_results_provenance(case):
    model, x = case
    ds = explain(model, x, methods={"grad_cam": {}, "score_cam": {"layer": "branch_conv"}}, targets=[1])
    assert "cam layer 'conv3' (found automatically" in ds["grad_cam"].attrs["surgery"]
    assert "cam layer 'branch_conv' (named; 6 channels at 5x5)" in ds["score_cam"].attrs["surgery"]
    assert '"layer": null' in ds["grad_cam"].attrs["params"]


def test_layer_names_are_the_models_under_a_probability_head(case):
    """``output="sigmoid"`` runs the model under a head; its layers keep their names, and the maps are those of
    the model written as ``nn.Sequential(model, nn.Sigmoid())`` by hand."""
    model, x = case
    methods = {"grad_cam": {"layer": "branch_conv"}, "eigen_cam": {}}
    ds = explain(model, x, methods=methods, targets=Targets([1], output="sigmoid"))
    assert "cam layer 'conv3' (found automatically" in ds["eigen_cam"].attrs["surgery"]
    wrapped = nn.Sequential(model, nn.Sigmoid()).eval()
    ref = explain(wrapped, x, methods={"grad_cam": {"layer": "0.branch_conv"}}, targets=[1])
    np.testing.assert_allclose(ds["grad_cam"].values, ref["grad_cam"].values, rtol=1e-12)


class _Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.spare = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        return self.conv(x).mean((-2, -1))


@pytest.mark.parametrize(
    ("model", "layer", "message"),
    [
        (tiny_cnn(), "conv4", r"^grad_cam: the model has no layer 'conv4'\. Did you mean 'conv3', 'conv2', 'conv1'\?$"),
        (tiny_cnn(), "fc", r"^grad_cam: layer 'fc' outputs shape \(1, 4\), not a 4-D \(N, C, h, w\) feature map"),
        (tiny_cnn(), "relu", r"^grad_cam: layer 'relu' runs 2 times in one forward pass"),
        (_Unused().double().eval(), "spare", r"^grad_cam: layer 'spare' does not run in the model's forward pass"),
    ],
)
def test_bad_layers_are_refused_by_name_in_one_line(model, layer, message):
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(InvalidParameterError, match=message) as caught:
        explain(model, x, methods={"grad_cam": {"layer": layer}}, targets=[0])
    assert "\n" not in str(caught.value)
    assert not any(m._forward_hooks for m in model.modules()), "the probe's hooks outlived the refusal"


@pytest.mark.parametrize("cls", CAM_METHODS)
@pytest.mark.parametrize("params", [{"layer": ""}, {"layer": 4}, {"normalize": "yes"}])
def test_bad_parameters_are_refused_at_construction(cls, params):
    with pytest.raises(InvalidParameterError, match=f"^{cls.id}: "):
        cls(**params)


def test_ablation_must_be_auto_or_zero():
    with pytest.raises(InvalidParameterError, match="ablation must be one of 'auto', 'zero'"):
        CAM_METHODS[5](ablation="mean")


def test_a_model_without_a_convolutional_block_is_refused():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).double().eval()
    with pytest.raises(InvalidParameterError, match="no convolutional block .* name the layer with layer="):
        explain(model, torch.rand(1, 3, 4, 4, dtype=torch.float64), methods="grad_cam", targets=[0])


def test_vgg_gives_its_features():
    import torchvision

    model = torchvision.models.vgg11(weights=None, num_classes=3).eval()
    assert find_layer(model, torch.rand(1, 3, 32, 32), None, "grad_cam").name == "features"


# --- the study's five architectures (as built in test_study_models.py, at their smallest sizes) ---

# name: (factory, size, automatic layer, a layer with a map larger than 1 x 1, a layer with few channels).
# The few-channel layers (32 to 96, after a ReLU) keep Score-CAM and Ablation-CAM, a forward pass per channel
# here and in pytorch-grad-cam, to seconds.
STUDY = {
    "resnet18": (lambda tv, timm: tv.resnet18(weights=None, num_classes=3), 32, "layer4", "layer3", "layer1"),
    "resnet34": (lambda tv, timm: tv.resnet34(weights=None, num_classes=3), 32, "layer4", "layer3", "layer1"),
    "densenet161": (
        lambda tv, timm: tv.densenet161(weights=None, num_classes=3), 32, "features", "features.denseblock3",
        "features.pool0",
    ),
    "inception_v3": (
        lambda tv, timm: tv.inception_v3(weights=None, aux_logits=False, init_weights=True, num_classes=3),
        75, "Mixed_7c", "Mixed_6e", "Conv2d_1a_3x3",
    ),
    "inception_resnet_v2": (
        lambda tv, timm: timm.create_model("inception_resnet_v2", pretrained=False, num_classes=3), 75, "conv2d_7b",
        "repeat_1", "conv2d_1a",
    ),
}  # fmt: skip


@pytest.fixture(scope="module", params=list(STUDY))
def study(request):
    tv = pytest.importorskip("torchvision.models")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    factory, size, *layers = STUDY[request.param]
    model = factory(tv, timm).double().eval()
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return request.param, model, x, layers


@pytest.mark.slow
def test_study_models_automatic_layer_is_the_last_convolutional_block(study):
    _, model, x, (automatic, _, _) = study
    ds = explain(model, x[:1], methods="grad_cam", targets=[0])
    assert f"cam layer {automatic!r} (found automatically" in ds["grad_cam"].attrs["surgery"]


@pytest.mark.slow
def test_study_models_gradient_and_eigen_cams_match_pytorch_grad_cam(study, peer64):
    _, model, x, (automatic, spatial, _) = study
    x = x[:1]
    methods = [*GRADIENT, "eigen_cam"]
    expected = peer_cams(methods, model, spatial, x, [1])
    got = explain(model, x, methods={m: {"layer": spatial} for m in methods}, targets=[1])
    for method in methods:
        assert_close(got[method].values[:, 0, 0], expected[method])
    # The automatic layer, its map 1 x 1 at these sizes: a single value, 0 where Grad-CAM's is negative (Layer-CAM's
    # is not); DenseNet's features are followed by an in-place ReLU.
    expected = peer_cams(["grad_cam", "layer_cam"], model, automatic, x, [1], keep_output=True)
    got = explain(model, x, methods=["grad_cam", "layer_cam"], targets=[1])
    assert_close(got["layer_cam"].values[:, 0, 0], expected["layer_cam"])
    assert_close(got["grad_cam"].values[:, 0, 0], expected["grad_cam"], empty=True)


# Score-CAM and Ablation-CAM run a forward pass per channel, here and in pytorch-grad-cam: at a layer of few
# channels of each of the five models (DenseNet's concatenations make Ablation-CAM run full passes there).
@pytest.mark.slow
def test_study_models_score_and_ablation_cams_match_pytorch_grad_cam(study, peer64):
    _, model, x, (_, _, few) = study
    methods = ["score_cam", "ablation_cam"]
    expected = peer_cams(methods, model, few, x[:1], [1])
    got = explain(model, x[:1], methods={m: {"layer": few} for m in methods}, targets=[1])
    for method in methods:
        assert_close(got[method].values[:, 0, 0], expected[method])
    assert "only the layers after it" in got["ablation_cam"].attrs["surgery"]
