"""The CAM family: ``xai_bench.explain`` against pytorch-grad-cam's own call, 1 target and 14.

For each CAM method on resnet18 (random init) at its last convolutional block (``layer4``): the
time of ``explain`` in its steady state (after the calls its pass-size tuning takes) against
pytorch-grad-cam called directly, one call per target as it explains one class per image (its
``targets`` list); for Score-CAM and Ablation-CAM at each of its ``batch_size`` settings, the best
kept. Both sides then run in turn, enough rounds for a few seconds each, and the medians give the
ratio (below 1: xai_bench is faster). pytorch-grad-cam's maps are scaled to [0, 1] and xai_bench's
are not; the scaling is a few operations per map.

What differs: xai_bench runs one forward pass for all targets of a pass, where pytorch-grad-cam
runs one per target; its Score-CAM and Ablation-CAM share their per-channel passes between targets,
and its Ablation-CAM runs only the layers after ``layer4`` on the ablated copies where
pytorch-grad-cam runs every layer but ``layer4``.

    python benchmarks/bench_cam.py [--size 224] [--images 8] [--targets 1 14] [--repeats 3] [--methods ...]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import os
import platform
import warnings

import torch
import torchvision
from pytorch_grad_cam import AblationCAM, EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from timing import round_robin, timed

from xai_bench import explain

PEERS = {
    "grad_cam": GradCAM,
    "grad_cam_plus_plus": GradCAMPlusPlus,
    "xgrad_cam": XGradCAM,
    "layer_cam": LayerCAM,
    "score_cam": ScoreCAM,
    "ablation_cam": AblationCAM,
    "eigen_cam": EigenCAM,
}
#: pytorch-grad-cam's batching knob, where it has one (images per forward pass of the per-channel copies)
BATCH_SIZES = {"score_cam": [16, 32, 64, 128], "ablation_cam": [16, 32, 64, 128]}


def peer_call(method: str, net: torch.nn.Module, x: torch.Tensor, classes: list[int], batch_size: int | None):
    """pytorch-grad-cam's maps of each class in ``classes`` for every image: one call per class."""

    def call() -> None:
        cam = PEERS[method](net, [net.layer4])
        if batch_size is not None:
            cam.batch_size = batch_size  # Score-CAM reads the attribute; Ablation-CAM takes it as a parameter
        try:
            # Score-CAM and Ablation-CAM draw progress bars on stderr; they are not what is measured.
            with contextlib.redirect_stderr(io.StringIO()):
                for c in classes:
                    cam(input_tensor=x, targets=[ClassifierOutputTarget(c)] * len(x))
        finally:
            cam.activations_and_grads.release()

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--targets", type=int, nargs="+", default=[1, 14], help="target counts to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="least time per side in the round robin")
    parser.add_argument("--methods", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = torchvision.models.resnet18(weights=None).eval().to(device)
    x = torch.rand(args.images, 3, args.size, args.size, device=device)

    print(
        f"resnet18 (random init) at layer4, {args.images} images of {args.size}x{args.size} on {device}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.machine()}"
    )
    print(
        "| method | targets | xai_bench s | pytorch-grad-cam best: batch_size, s | xai_bench / pytorch-grad-cam |\n"
        "|---|---:|---:|---:|---:|"
    )
    for method in args.methods:
        for t in args.targets:
            classes = list(range(t))
            # Each side runs on its own copy: pytorch-grad-cam leaves gradients on the parameters.
            ours_net, peer_net = copy.deepcopy(model), copy.deepcopy(model)

            def ours(net=ours_net, m=method, classes=classes):
                return explain(net, x, methods={m: {"layer": "layer4"}}, targets=classes)

            for _ in range(7):  # the first call tunes the pass size over its next calls (at most 6)
                ours()
            sizes = BATCH_SIZES.get(method, [None])
            theirs = {b: timed(peer_call(method, peer_net, x, classes, b)) for b in sizes}
            best = min(theirs, key=theirs.get)
            rounds = max(args.repeats, math.ceil(args.seconds / max(theirs[best], 1e-3)))
            mine, peer = round_robin([ours, peer_call(method, peer_net, x, classes, best)], rounds)
            setting = "plain call" if best is None else f"batch_size={best}"
            print(f"| {method} | {t} | {mine:.3f} | {setting}, {peer:.3f} | {mine / peer:.3f} |", flush=True)
            if len(sizes) > 1:
                sweep = ", ".join(f"{b}: {s:.2f}" for b, s in theirs.items())
                print(f"    pytorch-grad-cam sweep: {sweep}", flush=True)


if __name__ == "__main__":
    main()
