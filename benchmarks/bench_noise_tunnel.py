"""``smooth=`` against captum's NoiseTunnel called directly, on resnet18: time, images per pass, agreement.

captum's NoiseTunnel puts all N x samples noisy copies through the wrapped method in one call
(``nt_samples_batch_size`` to split them, by hand); xai_bench plans (sample, copy, item) triples in
passes like any other expansion axis. Both get the same noise (captum's draw is replaced by
xai_bench's), so the maps must agree to rounding.

    python benchmarks/bench_noise_tunnel.py [--images 4] [--size 224] [--samples 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
import torchvision
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

from xai_bench import explain
from xai_bench.attributors.noise_tunnel import Smoothing, noise
from xai_bench.core.provenance import sample_key


def best_of(repeats: int, call) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--ig-steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(args.images, 3, args.size, args.size)
    target = torch.arange(args.images) % 1000
    smoothing = Smoothing(args.samples, 0.15, "smoothgrad", 0)
    shape = tuple(x.shape[1:])
    drawn = torch.stack([noise(smoothing, sample_key(i), d, shape, x.dtype)
                         for i in range(args.images) for d in range(args.samples)])  # fmt: skip
    NoiseTunnel._add_noise_to_input = staticmethod(lambda inp, stdev, s: inp.repeat_interleave(s, dim=0) + drawn)
    cases = [
        ("saliency", {}, Saliency, {}),
        ("integrated_gradients", {"n_steps": args.ig_steps}, IntegratedGradients, {"n_steps": args.ig_steps}),
    ]
    print(f"resnet18, {args.images} images of {args.size}x{args.size}, smoothgrad with {args.samples} copies, "
          f"best of {args.repeats}; {torch.get_num_threads()} threads")  # fmt: skip
    print("| method | xai_bench (s) | images/pass | captum NoiseTunnel (s) | ratio | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|")
    for method, params, cls, kw in cases:
        chosen = {method: {**params, "smooth": smoothing.as_dict()}}
        explain(model, x, methods=chosen, targets=target)  # tunes the pass size
        ours_s, ds = best_of(args.repeats, lambda chosen=chosen: explain(model, x, methods=chosen, targets=target))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs_s, theirs = best_of(
                args.repeats,
                lambda cls=cls, kw=kw: NoiseTunnel(cls(model)).attribute(
                    x.clone().requires_grad_(True), nt_type="smoothgrad", nt_samples=args.samples, stdevs=0.15,
                    target=target, **kw,
                ),
            )  # fmt: skip
        diff = float((torch.from_numpy(ds[method].values[:, 0]) - theirs.detach()).abs().max())
        per_pass = ds[method].attrs["images_per_pass"]
        print(f"| {method} | {ours_s:.2f} | {per_pass} | {theirs_s:.2f} | {ours_s / theirs_s:.3f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
