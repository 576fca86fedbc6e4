"""Store size and read memory of per-sample targets: ``targets="predicted"`` on a 1000-class model.

Per-sample targets are stored in slots (sample, slot, ...), so a store grows with the pairs
computed; the dense layout (sample, target, ...) would hold a map for every class.

    python benchmarks/bench_slots.py [--images 20] [--size 224]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc

import torch
import torchvision

from xai_bench import explain, open_maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(args.images, 3, args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "predicted.zarr")
        start = time.perf_counter()
        ds = explain(model, x, methods=["saliency"], targets="predicted", store=store)
        seconds = time.perf_counter() - start
        on_disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(store) for f in files)
        back = open_maps(store)
        back["saliency"].isel(sample=0).load()  # first read: metadata, codecs
        tracemalloc.start()
        one = back["saliency"].isel(sample=1).load()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    dense = args.images * 1000 * 3 * args.size * args.size * 4
    print(f"resnet18 (1000 outputs), {args.images} images of {args.size}x{args.size}, saliency, targets='predicted'")
    print("| | slot layout (0.2) | dense layout (0.1) |\n|---|---:|---:|")
    print(f"| maps shape | {tuple(ds['saliency'].shape)} | {(args.images, 1000, 3, args.size, args.size)} |")
    print(f"| nominal size | {ds['saliency'].nbytes / 2**20:.1f} MiB | {dense / 2**30:.1f} GiB |")
    print(f"| on disk | {on_disk / 2**20:.1f} MiB | - |")
    per_sample = dense / args.images / 2**20
    print(f"| one sample read | {one.nbytes / 2**20:.2f} MiB (peak {peak / 2**20:.1f} MiB) | {per_sample:.0f} MiB |")
    print(f"explain took {seconds:.2f} s")


if __name__ == "__main__":
    main()
