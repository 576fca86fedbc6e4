"""Many targets per image: ``explain`` with T targets against T captum calls, one per target.

The study explains every label of every image (14 outputs). Occlusion scores every target from
one sweep of occluded images; integrated gradients shares each chunk's forward pass between the
targets. Prints time ratios (targets: occlusion at least 10x, IG at least 1.5x faster) and the
largest difference between the maps.

    python benchmarks/bench_targets.py [--size 224] [--targets 14] [--images 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
import torch
import torchvision
from captum.attr import IntegratedGradients, Occlusion

from xai_bench import explain


def clock(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--targets", type=int, default=14)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--ig-steps", type=int, default=16)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=args.targets).eval()
    x = torch.rand(args.images, 3, args.size, args.size)
    window = args.size // 8
    windows = ((args.size - window) // window + 1) ** 2
    per_pass = 64
    explain(model, x[:1], targets=[0], methods=["saliency"])  # warm-up: probe, allocator

    cases = {
        "occlusion": (
            lambda t: Occlusion(model).attribute(
                x,
                sliding_window_shapes=(3, window, window),
                strides=(3, window, window),
                target=t,
                perturbations_per_eval=per_pass // args.images,
            ),
            {"window": window, "stride": window},
        ),
        "integrated_gradients": (
            lambda t: IntegratedGradients(model).attribute(
                x.clone().requires_grad_(True),
                target=t,
                n_steps=args.ig_steps,
                internal_batch_size=per_pass,
            ),
            {"n_steps": args.ig_steps},
        ),
    }
    print(
        f"resnet18 (random init, {args.targets} outputs), {args.images} images of {args.size}x{args.size}, "
        f"all {args.targets} targets, {per_pass} images per pass; occlusion {windows} windows, IG {args.ig_steps} "
        f"steps; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"{platform.machine()}"
    )
    print("| method | captum, one call per target (s) | explain (s) | speed-up | max abs difference |")
    print("|---|---:|---:|---:|---:|")
    for method, (captum_call, params) in cases.items():
        t_captum, theirs = clock(lambda c=captum_call: [c(t).detach().numpy() for t in range(args.targets)])
        t_ours, ds = clock(lambda m=method, p=params: explain(model, x, targets="all", methods={m: p}, passes=per_pass))
        ours = ds[method].values  # (sample, target, C, H, W)
        diff = max(float(np.abs(ours[:, t] - theirs[t]).max()) for t in range(args.targets))
        print(f"| {method} | {t_captum:.2f} | {t_ours:.2f} | {t_captum / t_ours:.1f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
