"""LRP (``epsilon_plus_flat``): xai_bench's ``lrp`` against zennit's own call, on ResNet18 and VGG16.

For each model and number of targets: the time of ``explain(model, x, methods="lrp", targets=...)``
(every target of a pass shares its forward pass; the rewritten view is built and checked on the first
call, which is timed apart) and of zennit's ``Gradient`` attributor with ``EpsilonPlusFlat`` and the
model's canonizer (``ResNetCanonizer``, ``VGGCanonizer``), called once per target with the target's
score as the output relevance, as zennit's API takes it. Both run in turn, enough rounds for a few
seconds each, so that drifts in machine load hit both alike. Also printed: how far the maps differ,
relative to their largest value (zennit's merged batch norms scale by 1 / sqrt(1 + eps), so ResNet's
maps differ by about eps).

    python benchmarks/bench_lrp.py [--size 224] [--images 8] [--targets 1 14] [--models resnet18 vgg16]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform

import torch
import torchvision
from timing import round_robin, timed
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer, VGGCanonizer

from xai_bench import explain

MODELS = {
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), ResNetCanonizer),
    "vgg16": (lambda: torchvision.models.vgg16(weights=None), VGGCanonizer),
}


def zennit_lrp(model: torch.nn.Module, canonizer, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
    """zennit's maps (N, T, C, H, W): one call of its attributor per target."""
    maps = []
    with Gradient(model=model, composite=EpsilonPlusFlat(canonizers=[canonizer()])) as attributor:
        for t in targets:
            one_hot = torch.nn.functional.one_hot(torch.tensor(t), 1000).to(x.dtype)
            _, relevance = attributor(x, lambda out, one_hot=one_hot: out * one_hot)
            maps.append(relevance)
    return torch.stack(maps, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--targets", type=int, nargs="+", default=[1, 14], help="numbers of targets")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.rand(args.images, 3, args.size, args.size)
    print(
        f"{args.images} images of {args.size}x{args.size}, random init, float32; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.machine()}"
    )
    print(
        "| model | targets | xai_bench first call s | xai_bench s | zennit s | xai_bench / zennit | max diff / max |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    for name in args.models:
        factory, canonizer = MODELS[name]
        for count in args.targets:
            targets = [7 * i % 1000 for i in range(count)]
            net = factory().eval()  # a fresh model: nothing rewritten, checked or measured yet

            def ours(net=net, targets=targets):
                return torch.from_numpy(explain(net, x, methods="lrp", targets=targets)["lrp"].values)

            # zennit changes the model while it attributes (canonizers, hooks): it gets its own copy.
            theirs_net = copy.deepcopy(net)

            def theirs(net=theirs_net, targets=targets, canonizer=canonizer):
                return zennit_lrp(net, canonizer, x, targets)

            first = timed(ours)
            difference = (ours() - theirs()).abs().max() / theirs().abs().max()
            rounds = max(args.repeats, math.ceil(4.0 / max(first, 1e-3)))
            mine, zennit = round_robin([ours, theirs], rounds)
            print(
                f"| {name} | {count} | {first:.2f} | {mine:.2f} | {zennit:.2f} | {mine / zennit:.3f} | "
                f"{float(difference):.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
