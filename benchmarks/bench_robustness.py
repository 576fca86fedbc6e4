"""Max-sensitivity and infidelity against the bare model passes they need, and Quantus 0.6.0's and captum's
own calls against theirs, in one run.

Max-sensitivity is bound by the method's passes on the noisy copies (n_samples saliency maps per map);
infidelity by the forward passes of the copies. Each ratio is (time of the metric) / (time of the same
passes run bare, at the same pass size), so the libraries are compared on what they add to the model's
own work. Quantus's infidelity perturbs patch after patch instead of with noise: its bare passes are its
own number of forward passes. captum's sensitivity_max explains the inputs once more (xai_bench and
Quantus are given their maps).

    python benchmarks/bench_robustness.py [--images 8] [--size 224] [--samples 10] [--batch 16]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import quantus
import torch
import torchvision
from captum.attr import Saliency
from captum.metrics import infidelity, sensitivity_max

from xai_bench import explain
from xai_bench.api.evaluating import evaluate


def pool(x: torch.Tensor, batch: int) -> torch.Tensor:
    """``batch`` images to run bare passes on: ``x``'s, repeated if there are fewer."""
    return x.repeat(math.ceil(batch / len(x)), 1, 1, 1)[:batch]


def bare_forwards(model, x: torch.Tensor, images: int, batch: int) -> float:
    """Seconds for ``images`` forward passes in passes of ``batch`` (what infidelity needs)."""
    xb = pool(x, batch)
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, images, batch):
            model(xb[: min(batch, images - first)])
    return time.perf_counter() - start


def bare_saliency(model, x: torch.Tensor, images: int, batch: int) -> float:
    """Seconds for ``images`` saliency passes in passes of ``batch`` (what max-sensitivity's copies need)."""
    xs = pool(x, batch)
    start = time.perf_counter()
    for first in range(0, images, batch):
        xb = xs[: min(batch, images - first)].clone().requires_grad_(True)
        torch.autograd.grad(model(xb)[:, 0].sum(), xb)
    return time.perf_counter() - start


def row(work: str, library: str, seconds: float, bare: float) -> None:
    print(f"| {work} | {library} | {seconds:.1f} | {bare:.1f} | {seconds / bare:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--samples", type=int, default=10, help="noisy copies per map")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--quantus-patch", type=int, help="Quantus infidelity's patch (default: size // 4)")
    parser.add_argument("--only", choices=("sensitivity", "infidelity"), help="run one part")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(args.images, 3, args.size, args.size)
    with torch.no_grad():
        y = model(x).argmax(1)
    maps = explain(model, x, methods=["saliency"], targets=y, passes=args.batch)
    warm_up = explain(model, x[:2], methods=["saliency"], targets=y[:2], passes=args.batch)
    print(f"resnet18 (random weights), {args.images} images of {args.size} px, {args.samples} copies each, "
          f"{torch.get_num_threads()} threads, pass size {args.batch}")  # fmt: skip
    print("| work | library | seconds | bare passes (s) | ratio |\n|---|---|---:|---:|---:|")
    if args.only != "infidelity":
        sensitivity(model, x, y, maps, warm_up, args)
    if args.only != "sensitivity":
        infidelities(model, x, y, maps, warm_up, args)


def sensitivity(model, x, y, maps, warm_up, args) -> None:
    k, n = args.samples, args.images
    chosen = {"max_sensitivity": {"n_samples": k}}
    evaluate(warm_up, model=model, metrics=chosen, passes=args.batch)
    bare = bare_saliency(model, x, n * k, args.batch)
    work = f"max-sensitivity, saliency, {n} maps x {k} copies"
    start = time.perf_counter()
    evaluate(maps, model=model, metrics=chosen, passes=args.batch)
    row(work, "xai_bench", time.perf_counter() - start, bare)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.MaxSensitivity(nr_samples=k, lower_bound=0.2, disable_warnings=True)
        start = time.perf_counter()
        metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps["saliency"].values[:, 0].sum(1),
               explain_func=quantus.explain, explain_func_kwargs={"method": "Saliency"}, channel_first=True,
               device="cpu", batch_size=args.batch)  # fmt: skip
        row(work, "Quantus 0.6.0", time.perf_counter() - start, bare)

        saliency = Saliency(model)
        start = time.perf_counter()
        sensitivity_max(saliency.attribute, x, perturb_radius=0.2, n_perturb_samples=k, target=y,
                        max_examples_per_batch=args.batch)  # fmt: skip
        row(work, f"captum {captum_version()}", time.perf_counter() - start, bare)


def infidelities(model, x, y, maps, warm_up, args) -> None:
    k, n = args.samples, args.images
    chosen = {"infidelity": {"n_samples": k}}
    evaluate(warm_up, model=model, metrics=chosen, passes=args.batch)
    bare = bare_forwards(model, x, n * (k + 1), args.batch)
    work = f"infidelity, {n} maps x {k} copies"
    start = time.perf_counter()
    evaluate(maps, model=model, metrics=chosen, passes=args.batch)
    row(work, "xai_bench", time.perf_counter() - start, bare)

    attributions = torch.from_numpy(maps["saliency"].values[:, 0]).to(x.dtype)

    def noise(inputs):
        perturbation = 0.1 * torch.randn_like(inputs)
        return perturbation, inputs - perturbation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        infidelity(model, noise, x, attributions, target=y, n_perturb_samples=k, max_examples_per_batch=args.batch,
                   normalize=True)  # fmt: skip
        row(work, f"captum {captum_version()}", time.perf_counter() - start, bare)

        patch = args.quantus_patch or args.size // 4
        patches = math.ceil(args.size / patch) ** 2
        metric = quantus.Infidelity(perturb_patch_sizes=[patch], n_perturb_samples=1, disable_warnings=True)
        bare_q = bare_forwards(model, x, n * (patches + 1), args.batch)
        start = time.perf_counter()
        metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps["saliency"].values[:, 0],
               channel_first=True, device="cpu", batch_size=args.batch)  # fmt: skip
        row(f"infidelity, {n} maps x {patches} patches of {patch} px", "Quantus 0.6.0", time.perf_counter() - start,
            bare_q)  # fmt: skip


def captum_version() -> str:
    import captum

    return captum.__version__


if __name__ == "__main__":
    main()
