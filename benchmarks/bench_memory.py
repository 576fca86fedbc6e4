"""Time and peak memory of every method: xai_bench with a memory budget against captum.

For each method, in a fresh process each (peak RSS is a per-process high-water mark):
- ``xai_bench``: ``explain(..., passes=Passes(memory_budget=BUDGET))`` with ``batch_size="auto"``;
- ``captum default``: captum with its default batching (IG: all steps at once; occlusion: one
  window per pass), skipped when the measured per-image cost says it cannot fit in this machine;
- ``captum tuned``: captum at each batch size that fits, keeping the fastest.
captum computes the completeness delta of IG and DeepLIFT too, as xai_bench always does.
Work memory is peak RSS minus the RSS after the model and inputs were built. Each configuration
runs once to warm up (allocator; xai_bench's per-model probe and rewrite, paid once per data-set
run) and is timed on its second run.

    python benchmarks/bench_memory.py --model densenet161 --size 512 --budget 4GiB
    # on a GPU (peak = torch.cuda.max_memory_allocated; with --gpu-cap, a per-process memory cap):
    python benchmarks/bench_memory.py --device cuda --gpu-cap 11GiB --model resnet18 densenet161 --size 512
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings

METHODS = ["saliency", "input_x_gradient", "guided_backprop", "deeplift", "integrated_gradients", "occlusion"]
GiB = 2**30


def rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args: argparse.Namespace) -> None:
    """Run one configuration and print a JSON line with seconds and bytes."""
    import torch
    import torchvision
    from captum.attr import DeepLift, GuidedBackprop, InputXGradient, IntegratedGradients, Occlusion, Saliency

    from xai_bench import Passes, explain
    from xai_bench.surgery import PLAIN, rewrite

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    device = torch.device(args.device)
    if device.type == "cuda" and args.gpu_cap:
        from xai_bench.engine.memory import parse_budget

        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, parse_budget(args.gpu_cap, device) / total), device)
    model = getattr(torchvision.models, args.model)(weights=None).eval().to(device)
    x = torch.rand(args.images, 3, args.size, args.size, device=device)
    window = args.window
    method, config, size = args.child
    size = int(size)
    plain = rewrite(model, PLAIN)[0] if method in ("guided_backprop", "deeplift") and config != "xai_bench" else None
    params = {"integrated_gradients": {"n_steps": args.ig_steps}, "occlusion": {"window": window, "stride": window}}

    def work() -> int:
        if config == "xai_bench":
            ds = explain(
                model,
                x,
                methods={method: params.get(method, {})},
                targets=[0],
                passes=Passes(memory_budget=args.budget),
            )
            return ds[method].attrs["images_per_pass"]
        leaf = x.clone().requires_grad_(True)
        if method == "saliency":
            Saliency(model).attribute(leaf, target=0)
        elif method == "input_x_gradient":
            InputXGradient(model).attribute(leaf, target=0)
        elif method == "guided_backprop":
            GuidedBackprop(plain).attribute(leaf, target=0)
        elif method == "deeplift":
            DeepLift(plain).attribute(leaf, target=0, return_convergence_delta=True)
        elif method == "integrated_gradients":
            IntegratedGradients(model).attribute(
                leaf, target=0, n_steps=args.ig_steps, internal_batch_size=size or None, return_convergence_delta=True
            )
        else:
            Occlusion(model).attribute(
                x,
                sliding_window_shapes=(3, window, window),
                strides=(3, window, window),
                target=0,
                perturbations_per_eval=size or 1,
            )
        return size

    base = rss_now()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    work()  # warm-up: allocator, xai_bench's per-model probe and rewrite, as in a data-set run
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    settled = work()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss_peak()
    print(json.dumps({"seconds": seconds, "work_bytes": peak - base, "images_per_pass": settled}))


def measure(args: argparse.Namespace, method: str, config: str, size: int) -> dict | None:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        method,
        config,
        str(size),
        "--model",
        args.model,
        "--size",
        str(args.size),
        "--budget",
        args.budget,
        "--ig-steps",
        str(args.ig_steps),
        "--images",
        str(args.images),
        "--window",
        str(args.window),
        "--device",
        args.device,
    ]
    if args.gpu_cap:
        cmd += ["--gpu-cap", args.gpu_cap]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:80]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def cell(result: dict | None, key: str, scale: float = 1.0, needs: float = 0.0) -> str:
    if result is None:
        return f"not run (needs ~{needs / GiB:.0f} GiB)" if key == "seconds" else "-"
    if "error" in result:
        return result["error"]
    return f"{result[key] / scale:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="densenet161")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--budget", default="4GiB")
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpu-cap", default=None)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--child", nargs=3, default=None)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import torch
    import torchvision

    from xai_bench.engine.memory import free_memory, image_cost, parse_budget

    model = getattr(torchvision.models, args.model)(weights=None).eval()
    cost = image_cost(model, torch.rand(1, 3, args.size, args.size))
    room = 0.8 * free_memory(torch.device(args.device))
    budget = parse_budget(args.budget, torch.device("cpu"))
    windows = ((args.size - args.window) // args.window + 1) ** 2
    print(
        f"{args.model} at {args.size}x{args.size}, {args.images} image(s), target 0, budget {args.budget}; "
        f"IG {args.ig_steps} steps, occlusion {windows} windows of {args.window}; autograd keeps "
        f"{cost.saved / 2**20:.0f} MiB per image; {args.device}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    print(
        "| method | xai_bench s | xai_bench work GiB | images/pass | captum default s | default GiB | "
        "captum tuned s (size) | tuned GiB | time vs tuned |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method in args.methods:
        ours = measure(args, method, "xai_bench", 0)
        per_image = cost.saved if method != "occlusion" else cost.forward_peak
        expansion = {"integrated_gradients": args.ig_steps, "deeplift": 2}.get(method, 1) * args.images
        default = None
        if per_image * expansion < room:
            default = measure(args, method, "captum", 0)
        sizes = {"integrated_gradients": [1, 2, 4, 8, 16], "occlusion": [1, 2, 4, 8, 16]}.get(method, [0])
        tuned, tuned_size = None, None
        for size in sizes:
            if size and per_image * size > room:
                continue
            result = measure(args, method, "captum", size)
            if result and "seconds" in result and (tuned is None or result["seconds"] < tuned["seconds"]):
                tuned, tuned_size = result, size

        ratio = f"{ours['seconds'] / tuned['seconds']:.2f}" if ours and "seconds" in ours and tuned else "-"
        settled = ours.get("images_per_pass", "-") if ours else "-"
        print(
            f"| {method} | {cell(ours, 'seconds')} | {cell(ours, 'work_bytes', GiB)} | "
            f"{settled} | {cell(default, 'seconds', needs=per_image * expansion)} | "
            f"{cell(default, 'work_bytes', GiB)} | {cell(tuned, 'seconds')} ({tuned_size or 'one pass'}) | "
            f"{cell(tuned, 'work_bytes', GiB)} | {ratio} |",
            flush=True,
        )
    print(f"budget: {budget / GiB:.2f} GiB")


if __name__ == "__main__":
    main()
