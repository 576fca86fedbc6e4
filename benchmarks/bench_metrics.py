"""Metrics against the bare model passes they need, and Quantus 0.6.0 against its own, in one run.

Deletion and insertion are forward-bound: their cost should be the forward passes of the
perturbed images. MPRT is bound by the method's passes on each randomised model. Each ratio is
(time of the metric) / (time of the same passes run bare, at the same pass size), so the two
libraries are compared on what they add to the model's own work.

    python benchmarks/bench_metrics.py [--maps 100] [--size 224] [--steps 20] [--batch 16]
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import numpy as np
import quantus
import torch
import torchvision

from xai_bench import explain
from xai_bench.api.evaluating import evaluate
from xai_bench.metrics.randomisation import randomised_layers
from xai_bench.testing.data import maps_dataset


def bare_forwards(model, x: torch.Tensor, images: int, batch: int) -> float:
    """Seconds for ``images`` forward passes in passes of ``batch`` (what the perturbation metrics need)."""
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, images, batch):
            model(x[: min(batch, images - first)])
    return time.perf_counter() - start


def bare_saliency(model, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """Seconds for one saliency pass over ``x`` on every randomised copy (what MPRT needs)."""
    private = copy.deepcopy(model)
    layers = randomised_layers(private)[::-1]
    start = time.perf_counter()
    for _, module in layers:
        module.reset_parameters()
        for first in range(0, len(x), batch):
            xb = x[first : first + batch].clone().requires_grad_(True)
            out = private(xb)
            torch.autograd.grad(out.gather(1, y[first : first + batch, None]).sum(), xb)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", type=int, default=100)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--quantus-maps", type=int, default=16)
    parser.add_argument("--mprt-samples", type=int, default=8)
    parser.add_argument("--mprt-size", type=int, default=112)
    parser.add_argument("--only", choices=("perturbation", "mprt"), help="run one part")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    rng = np.random.default_rng(0)
    print(f"resnet18 (random weights), {torch.get_num_threads()} threads, pass size {args.batch}")
    print("| work | library | seconds | bare passes (s) | ratio |\n|---|---|---:|---:|---:|")

    if args.only != "mprt":
        perturbation(model, rng, args)
    if args.only != "perturbation":
        mprt(model, args)


def perturbation(model, rng, args) -> None:
    # Deletion + insertion: (steps + 1) perturbed images per map and metric.
    x = torch.rand(args.maps, 3, args.size, args.size)
    ds = maps_dataset(rng.random((args.maps, 1, 3, args.size, args.size)), [0], inputs=x.numpy())
    patch = args.size // 14  # 16 px at 224: 196 patches, about 10 a step
    chosen = {"deletion": {"patch": patch, "steps": args.steps}, "insertion": {"patch": patch, "steps": args.steps}}
    warm_up = maps_dataset(rng.random((2, 1, 3, args.size, args.size)), [0], inputs=x[:2].numpy())
    evaluate(warm_up, model=model, metrics=chosen, passes=args.batch)
    images = 2 * args.maps * (args.steps + 1)
    bare = bare_forwards(model, x, images, args.batch)
    start = time.perf_counter()
    evaluate(ds, model=model, metrics=chosen, passes=args.batch)
    ours = time.perf_counter() - start
    print(f"| deletion + insertion, {args.maps} maps, {args.steps} steps | xai_bench | {ours:.1f} | {bare:.1f} | "
          f"{ours / bare:.3f} |")  # fmt: skip

    # Quantus region perturbation on its own work: maps x regions of 16 x 16, batch as above.
    q = args.quantus_maps
    xq, aq = x[:q].numpy(), rng.random((q, 1, args.size, args.size))
    yq = np.zeros(q, dtype=int)
    bare_q = bare_forwards(model, x, q * (args.steps + 1), args.batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.RegionPerturbation(patch_size=16, regions_evaluation=args.steps, normalise=False,
                                            disable_warnings=True)  # fmt: skip
        start = time.perf_counter()
        metric(model=model, x_batch=xq, y_batch=yq, a_batch=aq, channel_first=True, device="cpu", batch_size=args.batch,
               softmax=False)  # fmt: skip
        theirs = time.perf_counter() - start
    print(f"| region perturbation, {q} maps, {args.steps} regions | Quantus 0.6.0 | {theirs:.1f} | {bare_q:.1f} | "
          f"{theirs / bare_q:.3f} |")  # fmt: skip


def mprt(model, args) -> None:
    # MPRT with saliency: one saliency pass per randomised layer.
    n, s = args.mprt_samples, args.mprt_size
    xm = torch.rand(n, 3, s, s)
    ym = torch.zeros(n, dtype=torch.long)
    maps = explain(model, xm, methods=["saliency"], targets=ym, passes=args.batch)
    bare_m = bare_saliency(model, xm, ym, args.batch)
    for similarity in (["spearman"], ["spearman", "ssim"]):
        start = time.perf_counter()
        evaluate(maps, model=model, metrics={"parameter_randomisation": {"similarity": similarity}},
                 passes=args.batch)  # fmt: skip
        ours_m = time.perf_counter() - start
        work = (
            f"MPRT, saliency, {n} samples of {s} px, {len(randomised_layers(model))} layers, {' and '.join(similarity)}"
        )
        print(f"| {work} | xai_bench | {ours_m:.1f} | {bare_m:.1f} | {ours_m / bare_m:.3f} |")

    def explain_func(model, inputs, targets, **kwargs):
        xb = torch.as_tensor(inputs).requires_grad_(True)
        out = model(xb)
        (grad,) = torch.autograd.grad(out.gather(1, torch.as_tensor(targets)[:, None]).sum(), xb)
        return grad.abs().sum(1, keepdim=True).numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mprt = quantus.MPRT(normalise=False, abs=False, disable_warnings=True)
        a_batch = maps["saliency"].values[:, 0].sum(1, keepdims=True)
        start = time.perf_counter()
        mprt(model=model, x_batch=xm.numpy(), y_batch=ym.numpy(), a_batch=a_batch, explain_func=explain_func,
             channel_first=True, device="cpu", batch_size=args.batch)  # fmt: skip
        theirs_m = time.perf_counter() - start
    print(f"| MPRT, saliency, {n} samples of {s} px, spearman | Quantus 0.6.0 | {theirs_m:.1f} | {bare_m:.1f} | "
          f"{theirs_m / bare_m:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
