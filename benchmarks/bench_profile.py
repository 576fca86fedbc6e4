"""Throughput of ``xai_bench.profile`` against bare forward passes over the same data.

NAPs and dead feature maps of the study's layers (``study_layers``) on random-init torchvision
models; prints profile time / forward time (target: at most 1.10).

    python benchmarks/bench_profile.py [--size 224] [--images 64] [--batch 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torchvision

from xai_bench import profile


def _study_layers(model: torch.nn.Module) -> dict[str, str | tuple[str, str]]:
    """The input, and the first and last blocks of a torchvision ResNet or DenseNet (those the NAP figures show)."""
    names = dict(model.named_modules())
    if "layer1" in names:
        return {"input": "input", "first_block": "layer1.0", "last_block": f"layer4.{len(model.layer4) - 1}"}
    return {"input": "input", "first_block": ("features.transition1.norm", "relu"),
            "last_block": ("features.norm5", "relu")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["resnet18", "densenet161"])
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.rand(args.images, 3, args.size, args.size)
    labels = torch.arange(args.images) % 3
    print(
        f"{args.images} images of {args.size}x{args.size}, batches of {args.batch}, 3 groups; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.machine()}; "
        f"median of {args.repeats}, alternating"
    )
    print("| model | forward (s) | profile (s) | profile / forward |\n|---|---:|---:|---:|")
    for name in args.models:
        model = getattr(torchvision.models, name)(weights=None).eval()
        layers = _study_layers(model)

        def bare(model=model):
            with torch.no_grad():
                for start in range(0, args.images, args.batch):
                    model(x[start : start + args.batch])

        def profiled(model=model, layers=layers):
            profile(model, x, layers=layers, groups=labels, group_names=["a", "b", "c"], passes=args.batch)

        bare(), profiled()
        times: dict[str, list[float]] = {"bare": [], "profile": []}
        for _ in range(args.repeats):
            for key, fn in (("bare", bare), ("profile", profiled)):
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
        t_bare, t_prof = statistics.median(times["bare"]), statistics.median(times["profile"])
        print(f"| {name} | {t_bare:.2f} | {t_prof:.2f} | {t_prof / t_bare:.3f} |")


if __name__ == "__main__":
    main()
