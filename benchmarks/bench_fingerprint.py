"""Cost of recomputing the model fingerprint on every call, against the call it guards.

The fingerprint in every result's provenance (and in ``run``'s resume check) hashes every
parameter and buffer on each call, so that weights changed in place, through ``.data`` included,
can never reuse a stale one. Target: at most 2% of ``explain`` with saliency on DenseNet161,
8 images of 224 x 224.

    python benchmarks/bench_fingerprint.py [--model densenet161] [--images 8] [--size 224] [--repeats 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import time

import torch
import torchvision

from xai_bench import explain
from xai_bench.core.provenance import model_fingerprint


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="densenet161")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(weights=None).eval()
    x = torch.rand(args.images, 3, args.size, args.size)
    megabytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 2**20
    explain(model, x, methods=["saliency"], targets=[0], batch_size=args.images)  # warm-up
    call = median_time(
        lambda: explain(model, x, methods=["saliency"], targets=[0], batch_size=args.images), args.repeats
    )
    fingerprint = median_time(lambda: model_fingerprint(model), 5 * args.repeats)
    tensors = [t.detach().numpy() for t in [*model.parameters(), *model.buffers()]]
    blake = median_time(lambda: [hashlib.blake2b(t).digest() for t in tensors], args.repeats)
    print(
        f"{args.model} ({megabytes:.0f} MiB of parameters and buffers), saliency on {args.images} images of "
        f"{args.size}x{args.size}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    print("| explain (s) | fingerprint (ms) | fingerprint / explain | blake2b over the bytes instead (ms) |")
    print("|---:|---:|---:|---:|")
    print(f"| {call:.2f} | {1000 * fingerprint:.1f} | {fingerprint / call:.2%} | {1000 * blake:.1f} |")


if __name__ == "__main__":
    main()
