"""The class activation map family at a named layer, upsampled to the input.

Every method here weighs the channels of one layer's activations ``A`` (N, K, h, w), sums them
into a map (N, h, w), keeps its positive part (ReLU) and resizes it to the input's (H, W) with
bilinear interpolation, ``align_corners=False`` (OpenCV's ``cv2.resize`` with ``INTER_LINEAR``,
which pytorch-grad-cam uses, is the same interpolation with its weights rounded to float32). The
definitions are pytorch-grad-cam's (``pytorch_grad_cam/*.py``); unlike it, maps keep their raw
values (it scales each map to [0, 1]), so that maps of different methods, images and targets can
be compared and scored on one scale; ``normalize=True`` applies its scaling. The map is shared by
the input's channels.

**The layer.** ``layer`` names a module of the model (``model.named_modules()``); with
``output="sigmoid"`` or ``"softmax"`` the model runs under a probability head and keeps its names.
``layer=None`` picks the *last convolutional block*: among the modules that run exactly once in a
forward pass of the first input, return a 4-D (N, K, h, w) tensor and hold a ``Conv2d`` (or are
one), the one whose forward pass finishes last. A module that encloses others finishes after them,
so a whole block wins over its last convolution: torchvision's ResNets give ``layer4``, DenseNets
``features`` (its output is ``norm5``'s, before the ReLU of ``DenseNet.forward``), VGGs
``features``, Inception v3 ``Mixed_7c`` and timm's ``inception_resnet_v2`` ``conv2d_7b``, at every
input size (at small sizes their maps are 1 x 1, hence constant). The layer used, named or found,
is stated in the stored result's ``surgery`` attribute, as ``cam layer 'layer4' (...)``.

**Activations and gradients.** A forward hook copies the layer's output (a later in-place ReLU
would rewrite the tensor it keeps) and, for the gradient methods, feeds the rest of the network a
copy that autograd treats as a leaf: the layers before it run without autograd, and each target
column costs one ``torch.autograd.grad`` through the layers after it only.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.cache import cache_of
from ..core.errors import InvalidParameterError, PluginError, did_you_mean
from ..core.provenance import module_state
from .base import UNUSED_IS_ZERO, Attribution, Attributor, Batch, Cost, Prepared
from .layer import layer_paths

#: pytorch-grad-cam's constants: the ones its formulas add to denominators, and the offset below the
#: smallest activation that its Ablation-CAM ablates to where activations are not >= 0 with a zero.
_PLUS_PLUS_EPS = 1e-6
_XGRAD_EPS = 1e-7
_SCALE_EPS = 1e-7
_SCORE_MASK_EPS = 1e-8
_ABLATION_OFFSET = 1e7


@dataclass(frozen=True)
class CamLayer:
    """The layer a CAM reads: its name as the user gives it, its path in the model the passes run on,
    its channels and spatial size for inputs of one shape, and whether it was found automatically."""

    name: str
    path: str
    channels: int
    size: tuple[int, int]
    automatic: bool

    def describe(self) -> str:
        how = "found automatically: the last convolutional block" if self.automatic else "named"
        h, w = self.size
        return f"cam layer {self.name!r} ({how}; {self.channels} channels at {h}x{w})"


@dataclass
class _Record:
    calls: int = 0
    shape: tuple[int, ...] | None = None
    finished: int = -1


def _trace(model: nn.Module, example: Tensor, modules: dict[str, nn.Module]) -> dict[str, _Record]:
    """Run ``model`` on ``example`` once and record, per module, its calls, output shape and finishing order."""
    records = {path: _Record() for path in modules}
    order = itertools.count()

    def recorder(path: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            record = records[path]
            record.calls += 1
            record.shape = tuple(output.shape) if isinstance(output, Tensor) else None
            record.finished = next(order)

        return hook

    handles = [module.register_forward_hook(recorder(path)) for path, module in modules.items()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return records


def _holding_convolutions(model: nn.Module) -> set[str]:
    """Paths of the modules that are, or hold, a 2-D convolution."""
    paths: set[str] = set()
    for path, module in model.named_modules():
        if path and isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            parts = path.split(".")
            paths.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return paths


def _refusal(method: str, name: str, record: _Record) -> str | None:
    """Why ``name`` cannot be a CAM layer given its trace, or None."""
    if record.calls == 0:
        return f"{method}: layer {name!r} does not run in the model's forward pass; name one that does."
    if record.calls > 1:
        return (
            f"{method}: layer {name!r} runs {record.calls} times in one forward pass, so its activations are "
            "ambiguous; name a module that runs once."
        )
    if record.shape is None or len(record.shape) != 4:
        got = "a non-tensor" if record.shape is None else f"shape {record.shape}"
        return (
            f"{method}: layer {name!r} outputs {got}, not a 4-D (N, C, h, w) feature map; name a convolutional "
            "layer or block, or pass layer=None for the last convolutional block."
        )
    return None


def find_layer(model: nn.Module, example: Tensor, layer: str | None, method: str) -> CamLayer:
    """The layer ``layer`` names in ``model`` (None: the last convolutional block), checked on ``example`` (1, C, H, W).

    Refuses, in one line, a name the model lacks (with close matches) and a layer that does not run
    exactly once or whose output is not a 4-D (N, C, h, w) tensor.
    """
    paths, prefix = layer_paths(model)
    if layer is not None:
        if layer not in paths:
            shown = [p[len(prefix) :] if prefix and p.startswith(prefix) else p for p in paths.values()]
            raise InvalidParameterError(f"{method}: the model has no layer {layer!r}.{did_you_mean(layer, shown)}")
        path = paths[layer]
        record = _trace(model, example, {path: model.get_submodule(path)})[path]
        refusal = _refusal(method, layer, record)
        if refusal:
            raise InvalidParameterError(refusal)
        return CamLayer(layer, path, record.shape[1], tuple(record.shape[2:]), automatic=False)
    modules = {path: module for path, module in model.named_modules() if path}
    records = _trace(model, example, modules)
    convolutional = _holding_convolutions(model)
    candidates = [
        (record.finished, path)
        for path, record in records.items()
        if path in convolutional and _refusal(method, path, record) is None
    ]
    if not candidates:
        raise InvalidParameterError(
            f"{method}: the model has no convolutional block that runs once and outputs a 4-D (N, C, h, w) "
            "feature map; name the layer with layer=..."
        )
    path = max(candidates)[1]
    shape = records[path].shape
    name = path[len(prefix) :] if prefix and path.startswith(prefix) else path
    return CamLayer(name, path, shape[1], tuple(shape[2:]), automatic=True)


@contextlib.contextmanager
def _tapped(model: nn.Module, layer: CamLayer, method: str, on_output: Callable[[Tensor], Tensor | None]) -> Iterator:
    """Hook ``on_output`` (which may return a replacement) on the layer for one forward pass; check it ran once."""
    calls = [0]

    def hook(module: nn.Module, args: Any, output: Any) -> Tensor | None:
        calls[0] += 1
        record = _Record(calls[0], tuple(output.shape) if isinstance(output, Tensor) else None)
        refusal = _refusal(method, layer.name, record)
        if refusal:
            raise InvalidParameterError(refusal)
        return on_output(output)

    handle = model.get_submodule(layer.path).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
    if calls[0] != 1:
        raise InvalidParameterError(_refusal(method, layer.name, _Record(calls[0], (0, 0, 0, 0))) or "")


def _work_dtype(x: Tensor) -> torch.dtype:
    """float64 for float64 inputs, float32 otherwise (half-precision CAM sums lose their small channels)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _sum_dtype(x: Tensor) -> torch.dtype:
    """float64 for the sums over a layer's channels, where the device has it (Apple's MPS has none)."""
    return torch.float32 if x.device.type == "mps" else torch.float64


def upsample(cam: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize maps (..., h, w) to ``size`` bilinearly with half-pixel centres (``cv2.resize``'s ``INTER_LINEAR``,
    in the maps' precision where cv2 rounds its interpolation weights to float32)."""
    lead = cam.shape[:-2]
    flat = cam.reshape(-1, 1, *cam.shape[-2:])
    if tuple(flat.shape[-2:]) != tuple(size):
        flat = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return flat.reshape(*lead, *size)


def _scale(maps: Tensor) -> Tensor:
    """pytorch-grad-cam's ``scale_cam_image`` of each map (..., h, w): minus its minimum, over its range + 1e-7."""
    flat = maps.flatten(-2)
    shifted = flat - flat.amin(-1, keepdim=True)
    return (shifted / (_SCALE_EPS + shifted.amax(-1, keepdim=True))).view_as(maps)


def cam_maps(cam: Tensor, size: tuple[int, int], normalize: bool) -> Tensor:
    """Maps (N, T, 1, H, W) from CAMs (N, T, h, w) at the layer: ReLU, then resized (and scaled as pytorch-grad-cam
    does: each map to [0, 1] at the layer, resized, and to [0, 1] again, if ``normalize``)."""
    cam = cam.clamp_min(0)
    if normalize:
        return _scale(upsample(_scale(cam), size)).unsqueeze(2)
    return upsample(cam, size).unsqueeze(2)


def _channel_maps(inputs: Tensor, maps: Tensor) -> Tensor:
    """The maps (N, T, 1, H, W) in the inputs' dtype, shared by their channels."""
    return maps.to(inputs.dtype).expand(-1, -1, inputs.shape[1], -1, -1).contiguous()


class _ClassActivationMap(Attributor):
    """What every CAM shares: the layer, found and checked before any pass, and the map's resizing."""

    reports_outputs: ClassVar[bool] = True

    def __init__(self, *, layer: str | None = None, normalize: bool = False) -> None:
        if layer is not None and (not isinstance(layer, str) or not layer):
            raise InvalidParameterError(
                f"{self.id}: layer must be a module name such as 'layer4' (see model.named_modules()), or None "
                f"for the last convolutional block; got {layer!r}."
            )
        if not isinstance(normalize, bool):
            raise InvalidParameterError(f"{self.id}: normalize must be True or False, got {normalize!r}.")
        self.layer = layer
        self.normalize = normalize
        # The layer found for the model last prepared, and that model (weakly: the instance must not keep it alive).
        self._found: tuple[weakref.ref[nn.Module], tuple[int, ...], CamLayer] | None = None

    def prepare(self, model: nn.Module, example: Tensor) -> Prepared:
        layer = self._layer(model, example)
        return Prepared(model, surgery=(layer.describe(),))

    def _layer(self, model: nn.Module, example: Tensor) -> CamLayer:
        """The layer on ``model`` for inputs shaped like ``example``: remembered per model state and input."""
        shape = tuple(example.shape[1:])
        if self._found is not None and self._found[0]() is model and self._found[1] == shape:
            return self._found[2]
        key = ("cam layer", self.layer, module_state(model), shape, example.dtype, str(example.device))
        known = cache_of(model, "probes")
        if key not in known:
            known[key] = find_layer(model, example[:1], self.layer, self.id)
        self._found = (weakref.ref(model), shape, known[key])
        return known[key]

    def _known_layer(self, input_shape: tuple[int, ...]) -> CamLayer | None:
        """The layer last prepared for inputs of ``input_shape``, if any (its channels size the expansion)."""
        if self._found is not None and self._found[1] == tuple(input_shape):
            return self._found[2]
        return None

    def finish(self, inputs: Tensor, total: Attribution) -> Attribution:
        return Attribution(_channel_maps(inputs, total.maps))


class _GradientCam(_ClassActivationMap):
    """A CAM from the layer's activations ``A`` (n, K, h, w) and the target score's gradients ``G`` with respect
    to them: one forward pass for all targets of a pass, one backward through the layers after it per target."""

    @abc.abstractmethod
    def _cam(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """The CAM (n, h, w), before its ReLU, from activations and gradients (n, K, h, w)."""

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        x = batch.inputs
        layer = self._layer(model, x)
        leaf: dict[str, Tensor] = {}

        def detach(output: Tensor) -> Tensor:
            leaf["a"] = output.detach().clone().requires_grad_(True)
            # The layers before ran without autograd; those after build the graph the gradients need.
            torch.set_grad_enabled(True)
            return leaf["a"].clone()  # an in-place op after the layer must not touch the leaf

        with _tapped(model, layer, self.id, detach), torch.no_grad():
            out = model(x)
        activations = leaf["a"]
        dtype = _work_dtype(x)
        cams = x.new_zeros((x.shape[0], batch.targets.shape[1], *layer.size), dtype=dtype)
        columns = batch.columns()
        for i, (column, rows) in enumerate(columns):
            score = out[rows, batch.targets[rows, column]].sum()
            if score.requires_grad:
                (grads,) = torch.autograd.grad(score, activations, retain_graph=i < len(columns) - 1, **UNUSED_IS_ZERO)
            else:  # the scores do not depend on the layer
                grads = torch.zeros_like(activations)
            cams[rows, column] = self._cam(activations.detach()[rows].to(dtype), grads[rows].to(dtype))
        maps = cam_maps(cams, tuple(x.shape[-2:]), self.normalize)
        return Attribution(maps, outputs=out.detach())


class GradCAM(_GradientCam):
    """Grad-CAM (Selvaraju et al., 2017): channels weighted by the spatial mean of the target score's gradient.

    ``cam = ReLU(sum_k mean_ij(dy/dA_kij) A_k)`` at ``layer`` (a module name; None: the last
    convolutional block, see :mod:`xai_bench.attributors.cam`), resized to the input's (H, W) and shared
    by its channels. Raw values; ``normalize=True`` scales each map to [0, 1] as pytorch-grad-cam does.
    """

    id: ClassVar[str] = "grad_cam"

    def _cam(self, activations: Tensor, gradients: Tensor) -> Tensor:
        weights = gradients.mean((-2, -1))
        return torch.einsum("nk,nkhw->nhw", weights, activations)


class GradCAMPlusPlus(_GradientCam):
    """Grad-CAM++ (Chattopadhay et al., 2018), as pytorch-grad-cam computes it.

    With ``g = dy/dA`` and ``S_k = sum_ij A_kij``: ``alpha = g² / (2 g² + S_k g³ + 1e-6)`` where
    ``g != 0`` (else 0), ``w_k = sum_ij ReLU(g) alpha`` and ``cam = ReLU(sum_k w_k A_k)``, resized to
    the input. Parameters as :class:`GradCAM`.
    """

    id: ClassVar[str] = "grad_cam_plus_plus"

    def _cam(self, activations: Tensor, gradients: Tensor) -> Tensor:
        square = gradients * gradients
        total = activations.sum((-2, -1), keepdim=True)
        alpha = square / (2 * square + total * square * gradients + _PLUS_PLUS_EPS)
        alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
        weights = (gradients.clamp_min(0) * alpha).sum((-2, -1))
        return torch.einsum("nk,nkhw->nhw", weights, activations)


class XGradCAM(_GradientCam):
    """XGrad-CAM (Fu et al., 2020): ``w_k = sum_ij g_kij A_kij / (sum_ij A_kij + 1e-7)``, ``cam = ReLU(sum_k w_k A_k)``.

    ``g = dy/dA`` at ``layer``; resized to the input. Parameters as :class:`GradCAM`.
    """

    id: ClassVar[str] = "xgrad_cam"

    def _cam(self, activations: Tensor, gradients: Tensor) -> Tensor:
        total = activations.sum((-2, -1), keepdim=True)
        weights = (gradients * activations / (total + _XGRAD_EPS)).sum((-2, -1))
        return torch.einsum("nk,nkhw->nhw", weights, activations)


class LayerCAM(_GradientCam):
    """Layer-CAM (Jiang et al., 2021): each activation weighted by its own positive gradient.

    ``cam = ReLU(sum_k ReLU(dy/dA_k) A_k)`` at ``layer``, resized to the input. Parameters as :class:`GradCAM`.
    """

    id: ClassVar[str] = "layer_cam"

    def _cam(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return (gradients.clamp_min(0) * activations).sum(1)


def _capture(store: dict[str, Tensor]) -> Callable[[Tensor], None]:
    """A layer hook that keeps a copy of the output (a later in-place op would rewrite the tensor itself)."""

    def keep(output: Tensor) -> None:
        store["a"] = output.detach().clone()

    return keep


def _from_sums(sums: Tensor | None, layer: CamLayer | None, method: str) -> tuple[Tensor, CamLayer]:
    """The summed layer-resolution CAM terms of every pass, (N, T, ...) as the method added them, and the layer."""
    if sums is None or layer is None:
        raise PluginError(
            f"{method}: finish() got no per-sample sums; its passes add them in Attribution.sums, which whatever "
            "wraps the method (smooth=) must hand through."
        )
    return sums, layer


class ScoreCAM(_ClassActivationMap):
    """Score-CAM (Wang et al., 2020): channels weighted by the softmax of the scores of the input masked by them.

    For channel k of ``A`` at ``layer``: ``M_k`` is ``A_k`` resized to the input with
    ``align_corners=True`` (``nn.UpsamplingBilinear2d``, as pytorch-grad-cam does) and scaled to
    [0, 1] (``(M - min) / (max - min + 1e-8)``); ``s_k`` is the target's score of ``x * M_k``;
    ``cam = ReLU(sum_k softmax(s)_k A_k)``, resized to the input (``align_corners=False``).
    Parameters as :class:`GradCAM`.

    The expansion axis is the layer's K channels: forward passes only, every target sharing them.
    Each pass also runs its samples' clean inputs, for ``A``. The softmax needs every channel's
    score, so each pass puts the scores ``s_k`` of its channels in their places of ``sums`` (per
    sample: T x K scores, then the K x h x w activations, which the pass holding channel 0 adds);
    ``finish`` takes the softmax of all of them at once, stable for scores of any size, whichever
    passes the channels were split between. That costs K x (T + h x w) float64 numbers per sample.
    """

    id: ClassVar[str] = "score_cam"

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        layer = self._known_layer(input_shape)
        # Before the model is prepared the channels are unknown; the engine asks again after.
        return Cost(items=layer.channels if layer is not None else 1, backward=False)

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        x, targets = batch.inputs, batch.targets
        n, t = targets.shape
        layer = self._layer(model, x)
        store: dict[str, Tensor] = {}
        with _tapped(model, layer, self.id, _capture(store)), torch.no_grad():
            clean = model(x)
        activations = store["a"]
        k = activations.shape[1]
        sample, item = batch.sample.to(x.device), batch.item.to(x.device)
        chosen = activations[sample, item].unsqueeze(1)  # (P, 1, h, w)
        with torch.no_grad():
            masks = F.interpolate(chosen, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=True)
            low = masks.amin((-2, -1), keepdim=True)
            high = masks.amax((-2, -1), keepdim=True)
            masks = (masks - low) / (high - low + _SCORE_MASK_EPS)
            scores = model(x[sample] * masks).gather(1, targets[sample])  # (P, T)
        dtype = _sum_dtype(x)
        placed = torch.zeros((n, t, k), dtype=dtype, device=x.device)
        placed[sample, :, item] = scores.to(dtype)
        first = torch.zeros((n, k, *layer.size), dtype=dtype, device=x.device)
        starts = sample[item == 0]
        first[starts] = activations[starts].to(dtype)
        sums = torch.cat([placed.flatten(1), first.flatten(1)], 1)
        maps = x.new_zeros((n, t, 1, 1, 1))
        return Attribution(maps, outputs=clean.detach(), sums=sums)

    def finish(self, inputs: Tensor, total: Attribution) -> Attribution:
        sums, layer = _from_sums(total.sums, self._known_layer(tuple(inputs.shape[1:])), self.id)
        k, t = layer.channels, (sums.shape[1] // layer.channels) - layer.size[0] * layer.size[1]
        weights = sums[:, : t * k].unflatten(1, (t, k)).softmax(-1)
        activations = sums[:, t * k :].unflatten(1, (k, *layer.size))
        cam = torch.einsum("ntk,nkhw->nthw", weights, activations)
        return Attribution(_channel_maps(inputs, cam_maps(cam, tuple(inputs.shape[-2:]), self.normalize)))


ABLATIONS = ("auto", "zero")


class AblationCAM(_ClassActivationMap):
    """Ablation-CAM (Desai & Ramaswamy, 2020): channels weighted by the relative score drop when each is ablated.

    ``w_k = (y - y_k) / y``, with ``y`` the target's score and ``y_k`` its score with channel k of
    the activations ``A`` at ``layer`` ablated; ``cam = ReLU(sum_k w_k A_k)``, resized to the
    input. ``ablation="auto"`` ablates as pytorch-grad-cam does: to 0 where the sample's smallest
    activation at the layer is 0 (a layer after a ReLU), else to that minimum minus 1e7;
    ``"zero"`` always to 0, as the paper does. Other parameters as :class:`GradCAM`.

    The expansion axis is the layer's K channels: forward passes only, every target sharing them.
    Each pass computes its samples' activations and clean scores once and, where that gives the same
    scores as full forward passes (checked on two images when the model is prepared: no connection
    skips over the layer), runs only the layers after it on the ablated copies; otherwise each copy
    is a full forward pass whose layer output has the channel ablated by a hook. Every channel adds
    ``w_k A_k`` to ``sums``; ``finish`` applies the ReLU.
    """

    id: ClassVar[str] = "ablation_cam"

    def __init__(self, *, layer: str | None = None, normalize: bool = False, ablation: str = "auto") -> None:
        super().__init__(layer=layer, normalize=normalize)
        if ablation not in ABLATIONS:
            raise InvalidParameterError(
                f"{self.id}: ablation must be one of {', '.join(map(repr, ABLATIONS))} (what an ablated channel "
                f"is set to), got {ablation!r}."
            )
        self.ablation = ablation
        # Whether the layers after the layer suffice, for the model last prepared (held weakly).
        self._tail: tuple[weakref.ref[nn.Module], CamLayer, bool] | None = None

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        layer = self._known_layer(input_shape)
        return Cost(items=layer.channels if layer is not None else 1, backward=False)

    def prepare(self, model: nn.Module, example: Tensor) -> Prepared:
        layer = self._layer(model, example)
        key = ("ablation after the layer", self.ablation, layer, module_state(model), example.dtype,
               str(example.device))  # fmt: skip
        known = cache_of(model, "probes")
        if key not in known:
            known[key] = self._layers_after_suffice(model, example[:1], layer)
        self._tail = (weakref.ref(model), layer, known[key])
        how = "only the layers after it" if known[key] else "full forward passes (a connection skips over it)"
        return Prepared(model, surgery=(layer.describe(), f"ablated copies run {how}"))

    def _layers_after_suffice(self, model: nn.Module, example: Tensor, layer: CamLayer) -> bool:
        """Whether the layers after ``layer``, fed ablated activations, give the full forward passes' scores.

        Checked on ``example`` and a second image with three ablations (two of one sample, one of
        the other): a tensor from before the layer that reaches past it has the samples' count of
        rows, not the copies', so those layers fail or give other scores.
        """
        gen = torch.Generator().manual_seed(0)
        other = example.mean() + example.std().nan_to_num() * torch.randn(example.shape, generator=gen).to(example)
        x = torch.cat([example, other])
        sample = torch.tensor([0, 0, 1], device=x.device)
        item = torch.tensor([0, layer.channels - 1, 0], device=x.device)
        _, clean, ablated = self._forward(model, x, layer, sample, item, tail_only=False)
        try:
            _, clean_tail, ablated_tail = self._forward(model, x, layer, sample, item, tail_only=True)
        except Exception:  # a tensor from before the layer met the copies' rows: full passes are needed
            return False
        expected = torch.cat([clean, ablated])
        got = torch.cat([clean_tail, ablated_tail])
        if got.shape != expected.shape:
            return False
        eps = torch.finfo(expected.dtype).eps
        scale = float(expected.abs().max()) + torch.finfo(expected.dtype).tiny
        return float((got - expected).abs().max()) <= min(1000 * eps, 1e-2) * scale

    def _ablation_values(self, activations: Tensor) -> Tensor:
        """What each sample's ablated channel is set to: (n,)."""
        if self.ablation == "zero":
            return activations.new_zeros(activations.shape[0])
        low = activations.flatten(1).amin(1)
        return torch.where(low == 0, torch.zeros_like(low), low - _ABLATION_OFFSET)

    def _forward(
        self, model: nn.Module, x: Tensor, layer: CamLayer, sample: Tensor, item: Tensor, *, tail_only: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Activations (n, K, h, w) of ``x`` (n, C, H, W), its scores (n, classes) and those with channel
        ``item[j]`` of sample ``sample[j]`` ablated (P, classes), from one forward pass."""
        n = x.shape[0]
        store: dict[str, Tensor] = {}

        def ablate(output: Tensor) -> Tensor:
            clean = output[:n]
            store["a"] = clean.detach().clone()
            copies = clean[sample].clone() if tail_only else output[n:].clone()
            rows = torch.arange(len(sample), device=copies.device)
            copies[rows, item] = self._ablation_values(store["a"])[sample].to(copies.dtype)[:, None, None]
            return torch.cat([clean, copies])

        images = x if tail_only else torch.cat([x, x[sample]])
        with _tapped(model, layer, self.id, ablate), torch.no_grad():
            out = model(images)
        return store["a"], out[:n], out[n:]

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        x, targets = batch.inputs, batch.targets
        layer = self._layer(model, x)
        # Without prepare() for this model and layer, full passes: they are right on every model.
        tail_only = self._tail is not None and self._tail[0]() is model and self._tail[1] == layer and self._tail[2]
        sample, item = batch.sample.to(x.device), batch.item.to(x.device)
        activations, clean, ablated = self._forward(model, x, layer, sample, item, tail_only=tail_only)
        dtype = _sum_dtype(x)
        score = clean.gather(1, targets).to(dtype)[sample]  # (P, T)
        weight = (score - ablated.gather(1, targets[sample]).to(dtype)) / score
        terms = weight.unsqueeze(-1) * activations[sample, item].flatten(1).to(dtype).unsqueeze(1)  # (P, T, hw)
        sums = torch.zeros((x.shape[0], *terms.shape[1:]), dtype=dtype, device=x.device).index_add_(0, sample, terms)
        maps = x.new_zeros((x.shape[0], targets.shape[1], 1, 1, 1))
        return Attribution(maps, outputs=clean.detach(), sums=sums)

    def finish(self, inputs: Tensor, total: Attribution) -> Attribution:
        sums, layer = _from_sums(total.sums, self._known_layer(tuple(inputs.shape[1:])), self.id)
        cam = sums.unflatten(-1, layer.size)
        return Attribution(_channel_maps(inputs, cam_maps(cam, tuple(inputs.shape[-2:]), self.normalize)))


def eigen_projection(activations: Tensor) -> Tensor:
    """Projections (n, h, w) of activations (n, K, h, w) on their first principal component, with a fixed sign.

    Per sample, the positions' K-vectors are centred and projected on the first right singular
    vector ``v`` of that (h*w, K) matrix, as pytorch-grad-cam's ``get_2d_projection`` does. SVD
    leaves the sign of ``v`` to the solver; here ``v``'s largest entry is made positive, then the
    projection is negated where its most negative value outweighs its largest
    (``get_2d_projection_with_sign_correction``, Eq. 13 of Seg-Eigen-CAM), so the result does not
    depend on the solver and equals pytorch-grad-cam's sign-corrected projection.
    """
    points = activations.flatten(2).transpose(1, 2)  # (n, hw, K)
    points = points - points.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(points, full_matrices=False)
    v = vh[:, 0, :]  # (n, K)
    v = v * torch.sign(v.gather(1, v.abs().argmax(1, keepdim=True)))
    projection = torch.einsum("npk,nk->np", points, v)
    flip = projection.amin(1).abs() > projection.amax(1).abs()
    projection = torch.where(flip[:, None], -projection, projection)
    return projection.unflatten(1, tuple(activations.shape[-2:]))


class EigenCAM(_ClassActivationMap):
    """Eigen-CAM (Muhammad & Yeasin, 2020): the activations' first principal component, the same for every target.

    ``cam = ReLU(X v)`` with ``X`` the (h*w, K) activations at ``layer``, centred per channel, and
    ``v`` its first right singular vector, signed as :func:`eigen_projection` says; resized to the
    input. Forward passes only. Parameters as :class:`GradCAM`.
    """

    id: ClassVar[str] = "eigen_cam"

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        return Cost(backward=False)

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        x = batch.inputs
        layer = self._layer(model, x)
        store: dict[str, Tensor] = {}
        with _tapped(model, layer, self.id, _capture(store)), torch.no_grad():
            out = model(x)
        projection = eigen_projection(store["a"].to(_sum_dtype(x)))
        cams = projection.unsqueeze(1).expand(-1, batch.targets.shape[1], -1, -1)
        maps = cam_maps(cams.to(_work_dtype(x)), tuple(x.shape[-2:]), self.normalize)
        return Attribution(maps, outputs=out.detach())


#: the classes this module registers as built-ins
CAM_METHODS: tuple[type[Attributor], ...] = (
    GradCAM,
    GradCAMPlusPlus,
    XGradCAM,
    LayerCAM,
    ScoreCAM,
    AblationCAM,
    EigenCAM,
)
