"""A small 2-D/3-D U-Net (two poolings, conv–InstanceNorm–LeakyReLU blocks, skip concatenations)
for the pipelines and tests: big enough to learn the generated tasks, small enough for 2 CPU cores."""
from __future__ import annotations

import torch
from torch import nn


def _block(dim: int, c_in: int, c_out: int) -> nn.Sequential:
    conv = nn.Conv2d if dim == 2 else nn.Conv3d
    norm = nn.InstanceNorm2d if dim == 2 else nn.InstanceNorm3d
    return nn.Sequential(conv(c_in, c_out, 3, padding=1), norm(c_out, affine=True), nn.LeakyReLU(0.1),
                         conv(c_out, c_out, 3, padding=1), norm(c_out, affine=True), nn.LeakyReLU(0.1))


class SmallUNet(nn.Module):
    """``SmallUNet(dim, in_channels, out_channels, features=8)``: spatial sizes divisible by 4."""

    def __init__(self, dim: int = 2, in_channels: int = 1, out_channels: int = 1, features: int = 8):
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"dim: expected 2 or 3, got {dim!r}")
        f = int(features)
        pool = nn.MaxPool2d if dim == 2 else nn.MaxPool3d
        up = nn.ConvTranspose2d if dim == 2 else nn.ConvTranspose3d
        conv = nn.Conv2d if dim == 2 else nn.Conv3d
        self.enc0, self.enc1, self.mid = _block(dim, in_channels, f), _block(dim, f, 2 * f), _block(dim, 2 * f, 4 * f)
        self.pool = pool(2)
        self.up1, self.dec1 = up(4 * f, 2 * f, 2, stride=2), _block(dim, 4 * f, 2 * f)
        self.up0, self.dec0 = up(2 * f, f, 2, stride=2), _block(dim, 2 * f, f)
        self.head = conv(f, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e0 = self.enc0(x)
        e1 = self.enc1(self.pool(e0))
        m = self.mid(self.pool(e1))
        d1 = self.dec1(torch.cat([self.up1(m), e1], 1))
        d0 = self.dec0(torch.cat([self.up0(d1), e0], 1))
        return self.head(d0)
