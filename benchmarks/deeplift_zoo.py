"""DeepLIFT on a zoo of architectures this project did not write: exact, or refused and why; and how far
captum's DeepLift is from summing to f(x) - f(baseline) on the same model, input and reference.

    python benchmarks/deeplift_zoo.py [--out docs/deeplift_zoo.md]

Random initialisation with random batch-norm statistics, float64, 2 images of 64 x 64 (vision
transformers built for 64 px), a random reference image, targets 0 and 3. "Miss" is
max |sum(map) - (f(x) - f(baseline))| / max |f(x) - f(baseline)| over the pairs.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torchvision
from captum.attr import DeepLift

from xai_bench import XaiBenchError, explain
from xai_bench.testing import randomised

tv = torchvision.models

ZOO: dict[str, Callable[[], torch.nn.Module]] = {
    "ResNet-50 (torchvision)": lambda: tv.resnet50(num_classes=5),
    "VGG-11 BN (torchvision)": lambda: tv.vgg11_bn(num_classes=5),
    "MobileNetV2 (torchvision)": lambda: tv.mobilenet_v2(num_classes=5),
    "RegNetX-400MF (torchvision)": lambda: tv.regnet_x_400mf(num_classes=5),
    "ShuffleNetV2 x0.5 (torchvision)": lambda: tv.shufflenet_v2_x0_5(num_classes=5),
    "SqueezeNet 1.1 (torchvision)": lambda: tv.squeezenet1_1(num_classes=5),
    "MNASNet 0.5 (torchvision)": lambda: tv.mnasnet0_5(num_classes=5),
    "GoogLeNet (torchvision)": lambda: tv.googlenet(num_classes=5, aux_logits=False, init_weights=True),
    "AlexNet (torchvision)": lambda: tv.alexnet(num_classes=5),
    "DenseNet-121 (torchvision)": lambda: tv.densenet121(num_classes=5),
    "ResNet-18-D (timm)": lambda: timm.create_model("resnet18d", num_classes=5),
    "Xception-41 (timm)": lambda: timm.create_model("xception41", num_classes=5),
    "DLA-34 (timm)": lambda: timm.create_model("dla34", num_classes=5),
    "EfficientNet-B0 (torchvision)": lambda: tv.efficientnet_b0(num_classes=5),
    "EfficientNet-B0 (timm)": lambda: timm.create_model("efficientnet_b0", num_classes=5),
    "MobileNetV3-Small (torchvision)": lambda: tv.mobilenet_v3_small(num_classes=5),
    "MobileNetV3-Small (timm)": lambda: timm.create_model("mobilenetv3_small_100", num_classes=5),
    "ConvNeXt-T (torchvision)": lambda: tv.convnext_tiny(num_classes=5),
    "RegNetY-002 (timm)": lambda: timm.create_model("regnety_002", num_classes=5),
    "ViT-B/16 at 64 px (torchvision)": lambda: tv.vit_b_16(num_classes=5, image_size=64),
    "ViT-Tiny at 64 px (timm)": lambda: timm.create_model("vit_tiny_patch16_224", num_classes=5, img_size=64),
}


def one(name: str, factory: Callable[[], torch.nn.Module]) -> dict[str, str]:
    torch.manual_seed(0)
    model = randomised(factory()).eval().double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, generator=g, dtype=torch.float64)
    reference = torch.rand(1, 3, 64, 64, generator=g, dtype=torch.float64) * 0.5
    with torch.no_grad():
        change = (model(x)[:, [0, 3]] - model(reference)[:, [0, 3]]).detach()
    scale = float(change.abs().max())
    row = {"model": name}
    start = time.perf_counter()
    try:
        ds = explain(model, x, methods={"deeplift": {"baseline": reference[0]}}, targets=[0, 3], passes=4)
        miss = float(torch.as_tensor(ds["deeplift_delta"].values).abs().max()) / scale
        row["xai_bench"] = "exact" if miss < 1e-9 else "NOT EXACT"
        row["miss"] = f"{miss:.1e}"
        new = ("pointwise", "product", "layer_norm", "attention", "mha", "softmax", "quotient")
        rules = [line for line in json.loads(ds["deeplift"].attrs["surgery"]) if line.startswith(new)
                 or line.startswith(tuple(f"functional {kind}" for kind in new))]  # fmt: skip
        row["why"] = "; ".join(rules) or "ReLU and max pooling only"
    except XaiBenchError as exc:
        row["xai_bench"], row["miss"] = "refused", "–"
        row["why"] = str(exc).splitlines()[1].strip(" -") if "\n" in str(exc) else str(exc)[:120]
    row["seconds"] = f"{time.perf_counter() - start:.1f}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            maps = []
            for t in (0, 3):
                attribution = DeepLift(model).attribute(x, baselines=reference, target=t)
                maps.append(attribution.detach().flatten(1).sum(1))
        captum_miss = float((torch.stack(maps, 1) - change).abs().max()) / scale
        row["captum"] = f"{captum_miss:.1e}"
    except Exception as exc:  # captum refuses some models outright
        row["captum"] = f"error: {type(exc).__name__}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the Markdown table here too")
    parser.add_argument("--only", help="a substring of the model names to run")
    args = parser.parse_args()
    rows = []
    for name, factory in ZOO.items():
        if args.only and args.only.lower() not in name.lower():
            continue
        rows.append(one(name, factory))
        print(rows[-1], flush=True)
    header = "| model | xai_bench | miss | rules beyond ReLU and max pooling | captum's miss |\n|---|---|---:|---|---:|"
    intro = (
        "# DeepLIFT on 21 architectures\n\n"
        "Produced by `python benchmarks/deeplift_zoo.py --out docs/deeplift_zoo.md`: random weights and batch-norm\n"
        "statistics, float64, 2 images of 64 x 64 (the vision transformers built for 64 px), a random reference\n"
        "image, targets 0 and 3. *miss* is max |sum(map) - (f(x) - f(reference))| / max |f(x) - f(reference)|;\n"
        "*exact* means below 1e-9. The rules column counts the rewritten call sites beyond ReLU and max\n"
        "pooling. captum 0.9's `DeepLift` runs on the same models, inputs and reference; where it raises,\n"
        "the error is named (it refuses ReLU modules called more than once).\n\n"
    )
    lines = [header] + [f"| {r['model']} | {r['xai_bench']} | {r['miss']} | {r['why']} | {r['captum']} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(intro + table + "\n")


if __name__ == "__main__":
    main()
