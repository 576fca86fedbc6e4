"""DeepLIFT on modern architectures: xai_bench (exact) against captum's DeepLift (which misses summation
there) with the same batching: all images and their references in one pass, one target.

    python benchmarks/bench_deeplift_modern.py [--images 4] [--size 224] [--repeats 3]

Prints, per model, the median seconds of each and their ratio, and how far each is from summing to
f(x) - f(baseline) (max |sum(map) - Δf| / max |Δf|). The reference is a uniform grey image: with the
zero image, the randomly initialised ConvNeXt (whose stem has no bias) feeds its first layer norm a
constant, where DeepLIFT's terms cancel beyond float32's reach (xai_bench warns; see the docs).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torchvision
from captum.attr import DeepLift

from xai_bench import explain

MODELS = {
    "EfficientNet-B0": lambda: torchvision.models.efficientnet_b0(num_classes=10),
    "ConvNeXt-T": lambda: torchvision.models.convnext_tiny(num_classes=10),
}


def median_time(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up: rewrites, the memory probe, allocator
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.rand(args.images, 3, args.size, args.size)
    reference = torch.full_like(x, 0.5)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images of {args.size} px, "
          f"target 0, grey reference, median of {args.repeats}")  # fmt: skip
    print("| model | xai_bench s | captum s | xai_bench / captum | xai_bench miss | captum miss |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, factory in MODELS.items():
        model = factory().eval()
        with torch.no_grad():
            change = model(x)[:, 0] - model(reference[:1])[:, 0]
        ours_s, ds = median_time(
            lambda model=model: explain(model, x, methods={"deeplift": {"baseline": 0.5}}, targets=[0],
                                        store_inputs=False, passes=2 * args.images),
            args.repeats,
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # captum warns that it sets hooks on reused modules
            captum = DeepLift(model)
            theirs_s, theirs = median_time(
                lambda captum=captum: captum.attribute(x, baselines=reference, target=0), args.repeats
            )
        scale = float(change.abs().max())
        ours_miss = float((torch.as_tensor(ds["deeplift"].values[:, 0]).flatten(1).sum(1) - change).abs().max())
        theirs_miss = float((theirs.detach().flatten(1).sum(1) - change).abs().max())
        print(f"| {name} | {ours_s:.2f} | {theirs_s:.2f} | {ours_s / theirs_s:.3f} | {ours_miss / scale:.1e} | "
              f"{theirs_miss / scale:.1e} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
