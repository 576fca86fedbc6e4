"""Perturbation methods over grid features: ``explain`` against captum at its best ``perturbations_per_eval``.

For each method (feature ablation, Shapley value sampling, KernelSHAP, LIME) on resnet18 with
``cell`` × ``cell`` grid features (16 px cells on 224 px images: 196 features): captum called
directly at each ``perturbations_per_eval`` for one target, its fastest setting timed again in turn
with ``explain``'s steady state (``batch_size="auto"`` after its tuning calls), and then T targets:
one ``explain`` call, whose targets share every perturbed forward pass, against T captum calls at
its fastest setting. Targets: one target within 1.05 of captum's best; 14 targets at least 5x
faster than 14 captum calls. Feature ablation is deterministic, so its maps are compared too.

Shapley sampling costs ``shapley-samples`` × (features - 1) forward passes per image, KernelSHAP
and LIME ``samples`` each (captum's count, which for KernelSHAP includes the full and the empty
coalition); both libraries draw their own permutations and coalitions.

    python benchmarks/bench_perturbation.py [--size 224] [--images 8] [--cell 16] [--targets 14]
        [--samples 200] [--shapley-samples 2] [--repeats 3] [--methods ...]
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import warnings

import numpy as np
import torch
import torchvision
from captum.attr import FeatureAblation, KernelShap, Lime, ShapleyValueSampling
from timing import round_robin, timed

from xai_bench import explain

METHODS = ("feature_ablation", "shapley_sampling", "kernel_shap", "lime")
CAPTUM = {
    "feature_ablation": FeatureAblation,
    "shapley_sampling": ShapleyValueSampling,
    "kernel_shap": KernelShap,
    "lime": Lime,
}


def grid(size: int, cell: int) -> torch.Tensor:
    """Grid labels (1, 1, H, W): cells of ``cell`` pixels row by row, clipped at the border."""
    index = torch.arange(size) // cell
    return (index[:, None] * math.ceil(size / cell) + index[None, :])[None, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--cell", type=int, default=16)
    parser.add_argument("--targets", type=int, default=14)
    parser.add_argument("--samples", type=int, default=200, help="KernelSHAP's and LIME's forward passes per image")
    parser.add_argument("--shapley-samples", type=int, default=2, help="permutations per image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ppe", type=int, nargs="+", default=[1, 2, 4, 8], help="captum's perturbations_per_eval")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # captum warns that it fits one interpretable model per image
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(args.images, 3, args.size, args.size)
    mask = grid(args.size, args.cell)
    features = int(mask.max()) + 1
    targets = list(range(args.targets))
    ours_params = {
        "feature_ablation": {"cell": args.cell},
        "shapley_sampling": {"cell": args.cell, "n_samples": args.shapley_samples},
        "kernel_shap": {"cell": args.cell, "n_samples": args.samples},
        "lime": {"cell": args.cell, "n_samples": args.samples},
    }
    captum_params = {
        "feature_ablation": {},
        "shapley_sampling": {"n_samples": args.shapley_samples},
        "kernel_shap": {"n_samples": args.samples},
        "lime": {"n_samples": args.samples},
    }

    def ours(method: str, chosen: list[int]):
        return explain(model, x, targets=chosen, methods={method: ours_params[method]})

    def theirs(method: str, target: int, ppe: int):
        return CAPTUM[method](model).attribute(
            x, target=target, feature_mask=mask, perturbations_per_eval=ppe, **captum_params[method]
        )

    print(
        f"resnet18 (random init), {args.images} images of {args.size}x{args.size}, {features} grid features of "
        f"{args.cell} px; KernelSHAP and LIME {args.samples} samples, Shapley sampling {args.shapley_samples} "
        f"permutations; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"{platform.machine()}"
    )
    print(
        f"| method | captum best: ppe, s | explain 1 target s | 1 target: explain / captum | {args.targets} captum "
        f"calls s | explain {args.targets} targets s | {args.targets} targets: captum / explain | max |diff| |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    for method in args.methods:
        row(method, functools.partial(ours, method), functools.partial(theirs, method), targets, args)


def row(method: str, ours, theirs, targets: list[int], args: argparse.Namespace) -> None:
    """Time ``method`` (``ours(targets)``, ``theirs(target, ppe)``) and print its row of the table."""
    for _ in range(2):  # the first calls tune the pass size; later ones are the steady state
        ours(targets[:1])
    sweep = {ppe: timed(lambda ppe=ppe: theirs(0, ppe)) for ppe in args.ppe}
    best = min(sweep, key=sweep.get)
    one_ours, one_theirs = round_robin([lambda: ours(targets[:1]), lambda: theirs(0, best)], max(args.repeats, 1))
    many_theirs = timed(lambda: [theirs(t, best) for t in targets])
    many_ours = timed(lambda: ours(targets))
    difference = "n/a (random draws)"
    if method == "feature_ablation":
        maps = ours(targets[:1])[method].values[:, 0]
        difference = f"{np.abs(maps - theirs(0, best).numpy()).max():.2e}"
    print(
        f"| {method} | {best}, {one_theirs:.2f} | {one_ours:.2f} | {one_ours / one_theirs:.3f} | "
        f"{many_theirs:.2f} | {many_ours:.2f} | {many_theirs / many_ours:.2f} | {difference} |",
        flush=True,
    )
    print("    captum sweep: " + ", ".join(f"ppe={p}: {t:.2f}" for p, t in sweep.items()), flush=True)


if __name__ == "__main__":
    main()
