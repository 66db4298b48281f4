"""A plain, literal transcription of LRRNet (``shared/specs/lrrnet.md``).

This is the baseline the fast encoder in :mod:`causalfuse.models.lrr` is timed
against and cross-checked with. It is written the way the specification reads
(and the way the official code computes): every ``ConvLayer`` pads its input by
reflection and runs a 3x3 ``Conv2d``; the soft threshold materialises the
per-channel threshold at the full size of its input. Nothing here is tuned.

Li et al., "LRRNet: A Novel Representation Learning Guided Fusion Network for
Infrared and Visible Images", TPAMI 2023, doi:10.1109/TPAMI.2023.3268209.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

N_CHANNELS = 128  # n; the code Z has 2n channels
N_BLOCKS = 4


class PlainConvLayer(nn.Module):
    """Reflection padding of k//2, then a ``Conv2d(in, out, k)`` with bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.pad(x))


def plain_eta(r: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """sign(r) * max(|r| - lam_c, 0) with lam (1, C) repeated to r's full shape."""
    b, c, h, w = r.shape
    lam_full = lam.view(1, c, 1, 1).repeat(b, 1, h, w)
    return torch.sign(r) * F.relu(torch.abs(r) - lam_full)


class PlainLRRBlock(nn.Module):
    def __init__(self, code_channels: int = 2 * N_CHANNELS) -> None:
        super().__init__()
        self.conv_Wdz = PlainConvLayer(code_channels, 1)
        self.conv_Wdtz = PlainConvLayer(1, code_channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor, lamj: torch.Tensor, lamz: torch.Tensor) -> torch.Tensor:
        c = lamz * z + self.conv_Wdtz(x - self.conv_Wdz(z))
        return plain_eta(c, lamj)


class PlainLRREncoder(nn.Module):
    def __init__(self, n: int = N_CHANNELS, blocks: int = N_BLOCKS) -> None:
        super().__init__()
        self.lamj = nn.Parameter(torch.zeros(1, 2 * n))
        self.lamz = nn.Parameter(torch.ones(1, 1))
        self.conv_W00 = PlainConvLayer(1, 2 * n)
        for i in range(blocks):
            self.add_module(f"lrrblock{i}", PlainLRRBlock(2 * n))
        self.n = n
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = plain_eta(self.conv_W00(x), self.lamj)
        for i in range(self.blocks):
            z = getattr(self, f"lrrblock{i}")(x, z, self.lamj, self.lamz)
        return z[:, : self.n], z[:, self.n :]


class PlainLRRDecoder(nn.Module):
    def __init__(self, n: int = N_CHANNELS) -> None:
        super().__init__()
        self.conv_ReZx = PlainConvLayer(n, 1)
        self.conv_ReUx = PlainConvLayer(n, 1)
        self.conv_ReZy = PlainConvLayer(n, 1)
        self.conv_ReUy = PlainConvLayer(n, 1)
        self.conv_ReL = PlainConvLayer(2, 1)
        self.conv_ReH = PlainConvLayer(2, 1)

    def forward(self, l_ir: torch.Tensor, s_ir: torch.Tensor, l_vi: torch.Tensor, s_vi: torch.Tensor) -> torch.Tensor:
        low = self.conv_ReL(torch.cat([self.conv_ReZx(l_ir), self.conv_ReZy(l_vi)], dim=1))
        high = self.conv_ReH(torch.cat([self.conv_ReUx(s_ir), self.conv_ReUy(s_vi)], dim=1))
        return low + high


class PlainLRRNet(nn.Module):
    """The whole network; state_dict keys equal the official file's."""

    def __init__(self) -> None:
        super().__init__()
        self.get_ls1 = PlainLRREncoder()
        self.get_ls2 = PlainLRREncoder()
        self.decoder = PlainLRRDecoder()

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        l_ir, s_ir = self.get_ls1(ir)
        l_vi, s_vi = self.get_ls2(vi)
        return self.decoder(l_ir, s_ir, l_vi, s_vi)

    @classmethod
    def from_file(cls, path: str | Path) -> "PlainLRRNet":
        net = cls()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return net.eval()
