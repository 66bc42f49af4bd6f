"""A small 2-D/3-D U-Net / residual U-Net (conv–norm–LeakyReLU blocks, max-pool down, ConvTranspose up,
concatenation skips; residual variant: bare ``+`` shortcuts in forward code), for the pipelines
(lrp_unet, imbalanced_seg) and tests. ``norm`` is "batch", "instance" or None; ``dim`` 2 or 3."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn


def _layers(dim: int):
    """(Conv, ConvTranspose, MaxPool, BatchNorm, InstanceNorm) classes of a spatial dimension."""
    if dim == 2:
        return nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.BatchNorm2d, nn.InstanceNorm2d
    if dim == 3:
        return nn.Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.BatchNorm3d, nn.InstanceNorm3d
    raise ValueError(f"dim: expected 2 or 3, got {dim!r}")


def _norm(kind: Optional[str], c: int, dim: int = 2) -> nn.Module:
    if kind == "batch":
        return _layers(dim)[3](c)
    if kind == "instance":
        return _layers(dim)[4](c, affine=True)
    if kind is None or kind == "none":
        return nn.Identity()
    raise ValueError(f"norm: expected 'batch', 'instance' or None, got {kind!r}")


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, norm: Optional[str], residual: bool, dim: int = 2):
        super().__init__()
        conv = _layers(dim)[0]
        self.conv1 = conv(cin, cout, 3, padding=1)
        self.n1 = _norm(norm, cout, dim)
        self.conv2 = conv(cout, cout, 3, padding=1)
        self.n2 = _norm(norm, cout, dim)
        self.act = nn.LeakyReLU(0.1)
        self.residual = residual
        self.short = conv(cin, cout, 1) if (residual and cin != cout) else None

    def forward(self, x):
        y = self.act(self.n1(self.conv1(x)))
        y = self.n2(self.conv2(y))
        if self.residual:
            y = y + (self.short(x) if self.short is not None else x)   # a bare +
        return self.act(y)


class SmallUNet(nn.Module):
    def __init__(self, in_channels: int = 1, out_channels: int = 1, features: Sequence[int] = (8, 16, 32),
                 norm: Optional[str] = "batch", residual: bool = False, dim: int = 2):
        super().__init__()
        conv, up, pool, _, _ = _layers(dim)
        if len(features) < 2:
            raise ValueError(f"features: expected at least 2 levels, got {features}")
        f = list(features)
        self.down = nn.ModuleList()
        c = in_channels
        for k in f:
            self.down.append(Block(c, k, norm, residual, dim))
            c = k
        self.pool = pool(2)
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for k in reversed(f[:-1]):
            self.ups.append(up(c, k, 2, stride=2))
            self.up_blocks.append(Block(2 * k, k, norm, residual, dim))
            c = k
        self.head = conv(c, out_channels, 1)

    def forward(self, x):
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for up, blk in zip(self.ups, self.up_blocks):
            x = up(x)
            x = blk(torch.cat([skips.pop(), x], dim=1))
        return self.head(x)
