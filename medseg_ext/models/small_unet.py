"""A small 2-D U-Net / residual U-Net (conv–norm–LeakyReLU blocks, max-pool down, ConvTranspose up,
concatenation skips; residual variant: bare ``+`` shortcuts in forward code), for the LRP pipeline
and tests. ``norm`` is "batch", "instance" or None."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn


def _norm(kind: Optional[str], c: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(c)
    if kind == "instance":
        return nn.InstanceNorm2d(c, affine=True)
    if kind is None or kind == "none":
        return nn.Identity()
    raise ValueError(f"norm: expected 'batch', 'instance' or None, got {kind!r}")


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, norm: Optional[str], residual: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.n1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.n2 = _norm(norm, cout)
        self.act = nn.LeakyReLU(0.1)
        self.residual = residual
        self.short = nn.Conv2d(cin, cout, 1) if (residual and cin != cout) else None

    def forward(self, x):
        y = self.act(self.n1(self.conv1(x)))
        y = self.n2(self.conv2(y))
        if self.residual:
            y = y + (self.short(x) if self.short is not None else x)   # a bare +
        return self.act(y)


class SmallUNet(nn.Module):
    def __init__(self, in_channels: int = 1, out_channels: int = 1, features: Sequence[int] = (8, 16, 32),
                 norm: Optional[str] = "batch", residual: bool = False):
        super().__init__()
        if len(features) < 2:
            raise ValueError(f"features: expected at least 2 levels, got {features}")
        f = list(features)
        self.down = nn.ModuleList()
        c = in_channels
        for k in f:
            self.down.append(Block(c, k, norm, residual))
            c = k
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for k in reversed(f[:-1]):
            self.ups.append(nn.ConvTranspose2d(c, k, 2, stride=2))
            self.up_blocks.append(Block(2 * k, k, norm, residual))
            c = k
        self.head = nn.Conv2d(c, out_channels, 1)

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
