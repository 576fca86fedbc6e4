"""How far captum, called directly, is from exact on the study's models, and where xai_bench stands.

Random-init models in float64 at small sizes. For guided backprop the reference is captum on a
view where every ReLU call site is a distinct module (where its hooks are right); for DeepLIFT the
reference is f(x) - f(0).

    python benchmarks/captum_correctness.py
"""

from __future__ import annotations

import warnings

import timm
import torch
import torchvision
from captum.attr import DeepLift, GuidedBackprop

from xai_bench import explain
from xai_bench.surgery import PLAIN, rewrite


def models():
    yield "resnet18", torchvision.models.resnet18(num_classes=4), 64
    yield "densenet161", torchvision.models.densenet161(num_classes=4), 64
    yield "inception_v3", torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=4), 80
    yield "inception_resnet_v2", timm.create_model("inception_resnet_v2", pretrained=False, num_classes=4), 80


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def main() -> None:
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    target = torch.tensor([0, 1])
    print(
        "| model | GBP: captum raw vs reference | GBP: xai_bench vs reference | DeepLIFT |delta|/|f(x)-f(0)|: "
        "captum raw | captum de-shared | xai_bench |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, model, size in models():
        model = model.double().eval()
        x = torch.rand(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        plain, _ = rewrite(model, PLAIN)
        reference = GuidedBackprop(plain).attribute(x.clone().requires_grad_(True), target=target)
        raw = GuidedBackprop(model).attribute(x.clone().requires_grad_(True), target=target)
        ds = explain(model, x, targets=[0, 1], methods=["guided_backprop", "deeplift"], passes=8)
        ours = torch.from_numpy(ds["guided_backprop"].values)[[0, 1], [0, 1]]
        with torch.no_grad():
            change = (model(x) - model(torch.zeros_like(x)))[[0, 1], [0, 1]].abs()

        def captum_delta(net, x=x, change=change) -> str:
            try:
                _, d = DeepLift(net).attribute(
                    x.clone().requires_grad_(True), target=target, return_convergence_delta=True
                )
            except Exception as exc:  # captum refuses re-used modules
                return f"fails: {type(exc).__name__}"
            return f"{float((d.abs() / change).max()):.1e}"

        ours_delta = float((torch.from_numpy(ds["deeplift_delta"].values)[[0, 1], [0, 1]].abs() / change).max())
        print(
            f"| {name} | {relative(raw, reference):.1e} | {relative(ours, reference):.1e} | {captum_delta(model)} | "
            f"{captum_delta(plain)} | {ours_delta:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
