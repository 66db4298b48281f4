"""Two published fusion networks' architectures, to time beside ``causalfuse`` (``benchmarks/speed.py``).

IFCNN (Zhang et al., Information Fusion 2020) and DenseFuse (Li and Wu, IEEE
TIP 2019), written here from their papers' descriptions of the layers:
the same layers, channel widths, kernels, padding and fusion rule, with
random weights. Their authors' code and weights are not part of this
project; what a forward pass costs depends on the layers, not on the weight
values. The parameter counts are those of the published models as
``../shared/PEERS.md`` lists them (83,587 and 74,193, checked by the tests),
where the authors' code was timed on this machine (1.01 s and 1.06 s at
640 x 480).

- **IFCNN** (the elementwise-maximum variant used for infrared-visible
  fusion): each source (grey replicated to three channels, as its test code
  reads images) is padded by 3 (replicate) and goes through ResNet-101's
  first convolution (7 x 7, 3 -> 64, stride 1, no bias) and one 3 x 3 block
  (conv without bias, batch norm, ReLU); the two feature maps are fused by
  their maximum; a second block and a 1 x 1 conv (64 -> 3) reconstruct.
- **DenseFuse** (the addition strategy): each source (grey) goes through a
  3 x 3 conv (1 -> 16) and a dense block of three 3 x 3 convs (16, 32 and 48
  -> 16, each input the concatenation of all before), giving 64 channels;
  the two are added; four 3 x 3 convs (64 -> 64 -> 32 -> 16 -> 1) decode.
  Reflection padding and ReLU everywhere but after the last conv.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["IFCNN", "DenseFuse", "build"]


class _Block(nn.Sequential):
    """IFCNN's 3 x 3 block: conv (no bias), batch norm, ReLU."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class IFCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=1, padding=0, bias=False)  # ResNet-101's first conv, stride 1
        self.conv2 = _Block()
        self.conv3 = _Block()
        self.conv4 = nn.Conv2d(64, 3, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(nn.functional.pad(x, (3, 3, 3, 3), mode="replicate")))

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        return self.conv4(self.conv3(torch.maximum(self.features(ir), self.features(vi))))


class _Conv(nn.Sequential):
    """DenseFuse's layer: reflection pad 1, 3 x 3 conv, ReLU unless last."""

    def __init__(self, cin: int, cout: int, relu: bool = True) -> None:
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DenseFuse(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _Conv(1, 16)
        self.dense = nn.ModuleList([_Conv(16 * (k + 1), 16) for k in range(3)])
        self.decoder = nn.Sequential(_Conv(64, 64), _Conv(64, 32), _Conv(32, 16), _Conv(16, 1, relu=False))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for layer in self.dense:
            x = torch.cat([x, layer(x)], dim=1)
        return x

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(ir) + self.encode(vi))


def build(name: str) -> tuple[nn.Module, int]:
    """The network (eval mode, random weights) and its input channels."""
    torch.manual_seed(0)
    if name == "ifcnn":
        return IFCNN().eval(), 3
    if name == "densefuse":
        return DenseFuse().eval(), 1
    raise ValueError(f"unknown network {name!r}: expected 'ifcnn' or 'densefuse'")
