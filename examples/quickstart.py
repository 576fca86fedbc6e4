"""Explain an unmodified torchvision ResNet18 with all six methods; store the maps and draw them."""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import torch
import torchvision

from xai_bench import Passes, explain, open_maps
from xai_bench.viz import plot_maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="quickstart_out")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--weights", default=None, help="torchvision weights name, e.g. DEFAULT (downloads)")
    args = parser.parse_args()
    matplotlib.use("Agg")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=args.weights)
    images = torch.rand(2, 3, args.size, args.size)
    store = out / "maps.zarr"
    ds = explain(
        model,
        images,
        targets="predicted",
        methods={
            "occlusion": {"window": args.size // 6, "stride": args.size // 12},
            "saliency": {},
            "input_x_gradient": {},
            "guided_backprop": {},
            "integrated_gradients": {"n_steps": 32},
            "deeplift": {},
        },
        sample_ids=["first", "second"],
        store=store,
        overwrite=True,  # a rerun replaces the last run's maps
        passes=Passes(progress=True),
    )
    print(ds)
    print("DeepLIFT completeness |delta| per sample:", abs(ds["deeplift_delta"]).max("slot").values)
    print("rewrites for DeepLIFT:", ds["deeplift"].attrs["surgery"])
    print("stored:", sorted(open_maps(store).data_vars))
    plot_maps(open_maps(store)).savefig(out / "maps.png", dpi=100)  # drawn from the store alone
    print("figure:", out / "maps.png")


if __name__ == "__main__":
    main()
