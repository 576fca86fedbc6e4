"""Cost of the model fingerprint and of the rewritten view's check, against the calls they guard.

The fingerprint in every result's provenance (and in ``run``'s resume check and the dask workers'
check before each block) hashes every parameter and buffer and describes the module tree (types,
attributes, hooks) on each call, so that weights changed in place, through ``.data`` included,
or a changed architecture can never reuse a stale result. A rewritten view (DeepLIFT, guided
backprop) is checked against the model when that key, or the hooks' identities, changed; the
alternative, checking it on every call, costs a forward pass of the model and of the view on the
method's batch (two images for DeepLIFT). Target: the key at most 2% of ``explain`` with saliency
on DenseNet161, 8 images of 224 x 224.

    python benchmarks/bench_fingerprint.py [--model densenet161] [--images 8] [--size 224] [--repeats 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import time

import torch
import torchvision

from xai_bench import explain
from xai_bench.api.explaining import resolve_methods
from xai_bench.core import provenance
from xai_bench.core.provenance import model_fingerprint, module_state, tensor_checksum


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tensors_only(model: torch.nn.Module) -> str:
    """The fingerprint as it was before it covered the module tree: the class and the tensors."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        digest.update(tensor_checksum(tensor))
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="densenet161")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(weights=None).eval()
    x = torch.rand(args.images, 3, args.size, args.size)
    megabytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 2**20
    explain(model, x, methods=["saliency"], targets=[0], passes=args.images)  # warm-up
    call = median_time(lambda: explain(model, x, methods=["saliency"], targets=[0], passes=args.images), args.repeats)
    explain(model, x[:1], methods=["deeplift"], targets=[0], passes=2)  # warm-up: rewrite and check
    deeplift = median_time(lambda: explain(model, x[:1], methods=["deeplift"], targets=[0], passes=2), 3)
    before = median_time(lambda: tensors_only(model), 5 * args.repeats)
    fingerprint = median_time(lambda: model_fingerprint(model), 5 * args.repeats)
    tree = getattr(provenance, "module_tree", None)
    tree_ms = f"{1000 * median_time(lambda: tree(model), 5 * args.repeats):.1f}" if tree else "-"
    key = median_time(lambda: (model_fingerprint(model), module_state(model)), 5 * args.repeats)
    # The alternative to a key: the check's forward passes of the model and of the view on every call.
    ((_, attributor),) = resolve_methods(["deeplift"])
    with torch.no_grad():
        view = attributor.prepare(model, x[:1]).model
        batch = x[:1].expand(2, *x.shape[1:])
        check = median_time(lambda: (model(batch), view(batch)), args.repeats)
    tensors = [t.detach().numpy() for t in [*model.parameters(), *model.buffers()]]
    blake = median_time(lambda: [hashlib.blake2b(t).digest() for t in tensors], args.repeats)
    print(
        f"{args.model} ({megabytes:.0f} MiB of parameters and buffers), saliency on {args.images} images of "
        f"{args.size}x{args.size}, DeepLIFT on 1; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    print(
        "| explain saliency (s) | explain deeplift, 1 image (s) | tensors only (ms) | fingerprint (ms) "
        "| of which module tree (ms) | fingerprint / saliency | view key: fingerprint + module state (ms) "
        "| view checked on every call (ms) | per-call check / deeplift | blake2b over the bytes instead (ms) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {call:.2f} | {deeplift:.2f} | {1000 * before:.1f} | {1000 * fingerprint:.1f} | {tree_ms} "
        f"| {fingerprint / call:.2%} | {1000 * key:.1f} | {1000 * check:.0f} | {check / deeplift:.1%} "
        f"| {1000 * blake:.1f} |"
    )


if __name__ == "__main__":
    main()
