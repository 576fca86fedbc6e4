"""Time each method through ``xai_bench.explain`` and through captum called directly.

Same model, inputs, target, parameters and batching on both sides; prints the ratio
explain / captum per method (target: at most 1.05). captum cannot run DeepLIFT on an unmodified
torchvision ResNet (re-used ReLU modules), so its DeepLIFT and guided backprop run on a view of
the model where every ReLU call site is a distinct module: the best a captum user can do by hand.
(captum's DeepLIFT is then still not exact on overlapping max pooling; xai_bench's is.)

    python benchmarks/bench_overhead.py [--size 224] [--batch 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import torch
import torchvision
from captum.attr import DeepLift, GuidedBackprop, InputXGradient, IntegratedGradients, Occlusion, Saliency

from xai_bench import explain
from xai_bench.surgery import PLAIN, rewrite


def paired(first, second, repeats: int) -> tuple[float, float]:
    """Median times of two callables, run alternately so drifts in machine load hit both alike."""
    first(), second()  # warm-up: allocator, traced graphs, weight fingerprint
    a, b = [], []
    for _ in range(repeats):
        for fn, times in ((first, a), (second, b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ig-steps", type=int, default=16)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # captum announces the hooks it sets; not what is measured
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    plain, _ = rewrite(model, PLAIN)
    x = torch.rand(args.batch, 3, args.size, args.size)
    target = 7
    window = args.size // 4
    windows = 16
    ig_batch = args.batch * args.ig_steps

    def leaf():
        return x.clone().requires_grad_(True)

    captum = {
        "saliency": lambda: Saliency(model).attribute(leaf(), target=target),
        "input_x_gradient": lambda: InputXGradient(model).attribute(leaf(), target=target),
        "guided_backprop": lambda: GuidedBackprop(plain).attribute(leaf(), target=target),
        "integrated_gradients": lambda: IntegratedGradients(model).attribute(
            leaf(),
            target=target,
            n_steps=args.ig_steps,
            internal_batch_size=ig_batch,
            return_convergence_delta=True,
        ),
        "deeplift": lambda: DeepLift(plain).attribute(leaf(), target=target, return_convergence_delta=True),
        "occlusion": lambda: Occlusion(model).attribute(
            x,
            sliding_window_shapes=(3, window, window),
            strides=(3, window, window),
            target=target,
            perturbations_per_eval=windows,
        ),
    }
    params = {"integrated_gradients": {"n_steps": args.ig_steps}, "occlusion": {"window": window, "stride": window}}
    # Images per forward pass as captum runs them: all inputs at once, DeepLIFT with their references.
    batch_size = {"integrated_gradients": ig_batch, "occlusion": windows * args.batch, "deeplift": 2 * args.batch}

    print(
        f"resnet18 (random init), {args.batch} images of {args.size}x{args.size}, one target; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.machine()}; "
        f"median of {args.repeats}, alternating"
    )
    print("| method | captum (s) | explain (s) | explain / captum |\n|---|---:|---:|---:|")
    for method, run_captum in captum.items():
        t_captum, t_ours = paired(
            run_captum,
            lambda m=method: explain(
                model, x, methods={m: params.get(m, {})}, targets=[target], batch_size=batch_size.get(m, args.batch)
            ),
            args.repeats,
        )
        print(f"| {method} | {t_captum:.3f} | {t_ours:.3f} | {t_ours / t_captum:.3f} |")


if __name__ == "__main__":
    main()
