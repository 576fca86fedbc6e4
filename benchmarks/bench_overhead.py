"""``batch_size="auto"`` against every fixed pass size and against captum's best setting, per method.

For each method on resnet18: the time of ``explain`` at each fixed pass size (images per pass),
captum called directly at each of its batching settings (occlusion's ``perturbations_per_eval``,
IG's ``internal_batch_size``; the plain call for the others), and ``batch_size="auto"`` twice:
its first call on a model it has not seen (tuning included) and its steady state (later calls,
which use the size tuning chose). The steady state and the best fixed size are then timed again
in turn with captum's best, all on the same copy of the model, enough rounds for a few seconds
each, so that drifts in machine load hit all three alike. Targets: steady state within 5% of the
best fixed size and of captum's best.

captum cannot run DeepLIFT on an unmodified torchvision ResNet (re-used ReLU modules), so its
DeepLIFT, guided backprop and deconvolution run on a view where every ReLU call site is a distinct
module. GradientSHAP draws ``--shap-samples`` points per image between it and one of 4 random
references; captum puts all of them in one pass (it has no batching knob for it).

    python benchmarks/bench_overhead.py [--size 224] [--images 8] [--repeats 3] [--methods ...]
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import platform
import warnings

import torch
import torchvision
from captum.attr import (
    Deconvolution,
    DeepLift,
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    Occlusion,
    Saliency,
)
from timing import round_robin, timed

from xai_bench import explain
from xai_bench.surgery import PLAIN, rewrite

METHODS = (
    "occlusion", "saliency", "input_x_gradient", "guided_backprop", "integrated_gradients", "deeplift",
    "deconvolution", "gradient_shap",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--window", type=int, default=32, help="occlusion window and stride")
    parser.add_argument("--shap-samples", type=int, default=8, help="GradientSHAP's draws per image")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # captum announces the hooks it sets; not what is measured
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    n = args.images
    x = torch.rand(n, 3, args.size, args.size)
    target = 7
    w = args.window

    def leaf():
        return x.clone().requires_grad_(True)

    refs = torch.rand(4, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    params = {
        "integrated_gradients": {"n_steps": args.ig_steps},
        "occlusion": {"window": w, "stride": w},
        "gradient_shap": {"n_samples": args.shap_samples, "baselines": refs},
    }
    # captum's batching knob per method: (name, values, images per pass of each value).
    captum_settings = {
        "occlusion": ("perturbations_per_eval", [1, 2, 4, 8], lambda v: v * n),
        "integrated_gradients": ("internal_batch_size", [8, 16, 32, 64, 128], lambda v: v),
    }
    captum_calls = {
        "saliency": lambda v, net, plain: Saliency(net).attribute(leaf(), target=target),
        "input_x_gradient": lambda v, net, plain: InputXGradient(net).attribute(leaf(), target=target),
        "guided_backprop": lambda v, net, plain: GuidedBackprop(plain).attribute(leaf(), target=target),
        "deconvolution": lambda v, net, plain: Deconvolution(plain).attribute(leaf(), target=target),
        "gradient_shap": lambda v, net, plain: GradientShap(net).attribute(
            leaf(), baselines=refs, n_samples=args.shap_samples, target=target
        ),
        "deeplift": lambda v, net, plain: DeepLift(plain).attribute(
            leaf(), target=target, return_convergence_delta=True
        ),
        "integrated_gradients": lambda v, net, plain: IntegratedGradients(net).attribute(
            leaf(), target=target, n_steps=args.ig_steps, internal_batch_size=v, return_convergence_delta=True
        ),
        "occlusion": lambda v, net, plain: Occlusion(net).attribute(
            x, sliding_window_shapes=(3, w, w), strides=(3, w, w), target=target, perturbations_per_eval=v
        ),
    }
    fixed_sizes = {
        "occlusion": [2, 4, 8, 16, 32, 64],
        "integrated_gradients": [2, 4, 8, 16, 32, 64],
        "deeplift": [2, 4, 8, 16],
        "gradient_shap": [4, 8, 16, 32, 64],
    }

    print(
        f"resnet18 (random init), {n} images of {args.size}x{args.size}, one target; occlusion {w}/{w}, "
        f"IG {args.ig_steps} steps; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    print(
        "| method | best fixed: images/pass, s | captum best: setting, s | auto first call s | auto steady s "
        "| auto images/pass | steady / fixed | steady / captum | first / fixed |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for method in args.methods:
        p = params.get(method, {})
        # Every call of this method runs on one copy of the model, so that all three sides find its
        # weights equally warm in the caches; the copy has nothing tuned, probed or rewritten yet.
        net = copy.deepcopy(model)
        plain, _ = rewrite(net, PLAIN)

        def ours(batch_size, net=net, m=method, p=p):
            return explain(net, x, methods={m: p}, targets=[target], passes=batch_size)

        first = timed(lambda: ours("auto"))
        for _ in range(6):  # later calls: tuning goes on until it has measured its candidates (at most 6 here)
            ours("auto")
        chosen = ours("auto")[method].attrs["images_per_pass"]

        sizes = fixed_sizes.get(method, [1, 2, 4, 8])
        fixed = {s: timed(lambda s=s: ours(s)) for s in sizes}
        best_fixed = min(fixed, key=fixed.get)

        name, values, _ = captum_settings.get(method, ("plain call", [None], None))
        call = functools.partial(captum_calls[method], net=net, plain=plain)
        call(values[-1])  # warm-up
        theirs = {v: timed(lambda v=v, call=call: call(v)) for v in values}
        best_captum = min(theirs, key=theirs.get)

        # Round robin over the three, enough rounds for a few seconds each: short calls are noisy.
        rounds = max(args.repeats, math.ceil(4.0 / fixed[best_fixed]))
        steady, fixed_again, captum_again = round_robin(
            [lambda: ours("auto"), lambda best=best_fixed: ours(best), lambda best=best_captum, call=call: call(best)],
            rounds,
        )
        setting = "plain" if best_captum is None else f"{name}={best_captum}"
        print(
            f"| {method} | {best_fixed}, {fixed_again:.2f} | {setting}, {captum_again:.2f} | {first:.2f} | "
            f"{steady:.2f} | {chosen} | {steady / fixed_again:.3f} | "
            f"{steady / captum_again:.3f} | {first / fixed_again:.3f} |",
            flush=True,
        )
        print(
            "    fixed sweep: " + ", ".join(f"{s}: {t:.2f}" for s, t in fixed.items())
            + "; captum sweep: " + ", ".join(f"{v}: {t:.2f}" for v, t in theirs.items()),
            flush=True,
        )  # fmt: skip


if __name__ == "__main__":
    main()
