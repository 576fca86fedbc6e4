"""Guided backprop on networks with other activations: ReLUs are guided, the rest pass their plain
gradient (zennit's and captum's definition), checked against zennit."""

from __future__ import annotations

import torch
from torch import nn

from xai_bench import explain


class GatedNet(nn.Module):
    """ReLU modules (each called once), SiLU and GELU, and a squeeze-and-excitation gate (a product)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()
        self.conv2, self.act2 = nn.Conv2d(8, 8, 3, padding=1), nn.SiLU()
        self.squeeze, self.excite, self.gate = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1), nn.Sigmoid()
        self.relu2 = nn.ReLU()
        self.fc, self.act3, self.out = nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4)

    def forward(self, x):
        x = self.relu1(self.conv1(x))
        x = self.act2(self.conv2(x))
        s = self.gate(self.excite(self.relu2(self.squeeze(x.mean((2, 3), keepdim=True)))))
        x = (x * s).mean((2, 3))
        return self.out(self.act3(self.fc(x)))


def test_guided_backprop_equals_zennits_on_a_network_with_silu_gelu_and_a_gate():
    from zennit.attribution import Gradient
    from zennit.composites import GuidedBackprop

    torch.manual_seed(0)
    model = GatedNet().double().eval()
    x = torch.randn(3, 3, 10, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = explain(model, x, methods="guided_backprop", targets=[2])
    with Gradient(model=model, composite=GuidedBackprop()) as attributor:
        _, theirs = attributor(x, torch.eye(4, dtype=torch.float64)[[2, 2, 2]])
    torch.testing.assert_close(torch.as_tensor(ours["guided_backprop"].values[:, 0]), theirs, rtol=1e-10, atol=1e-12)
    # The ReLUs are guided (the map is not the gradient), and the activations left plain are recorded.
    gradient = explain(model, x, methods={"saliency": {"abs": False}}, targets=[2])["saliency"].values
    assert not torch.allclose(torch.as_tensor(gradient), torch.as_tensor(ours["guided_backprop"].values))
    rewrites = str(ours["guided_backprop"].attrs["surgery"])
    assert "pointwise calls with their plain gradient" in rewrites, rewrites
    assert "product calls with their plain gradient" in rewrites, rewrites
