"""A small DenseNet-style binary classifier for the CAM pipeline (no downloadable weights needed):
stem conv → two dense blocks (each layer's output concatenated to its input) with a transition →
final BN + ReLU (``final_relu``, the analogue of Keras DenseNet-169's ``'relu'`` layer: followed
directly by global average pooling and the linear head) → GAP → Linear(…, 1) (a sigmoid logit)."""
from __future__ import annotations

import torch
from torch import nn


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(torch.relu(self.bn(x)))], 1)


class TinyDenseNet(nn.Module):
    def __init__(self, in_channels: int = 1, growth: int = 8, layers: int = 3, classes: int = 1):
        super().__init__()
        c = 2 * growth
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU(), nn.MaxPool2d(2))
        blk1 = []
        for _ in range(layers):
            blk1.append(_DenseLayer(c, growth))
            c += growth
        self.block1 = nn.Sequential(*blk1)
        self.transition = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                                        nn.AvgPool2d(2))
        c //= 2
        blk2 = []
        for _ in range(layers):
            blk2.append(_DenseLayer(c, growth))
            c += growth
        self.block2 = nn.Sequential(*blk2)
        self.final_bn = nn.BatchNorm2d(c)
        self.final_relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)
        self.channels = c

    def forward(self, x):
        x = self.block2(self.transition(self.block1(self.stem(x))))
        return self.fc(self.pool(self.final_relu(self.final_bn(x))).flatten(1))


class TinyUNet3d(nn.Module):
    """A two-level 3-D U-Net (conv blocks, max-pool, trilinear up-sampling, skip concatenation) for
    the 3-D CAM benchmark with a segmentation target. ``bottleneck`` is the usual CAM layer."""

    def __init__(self, in_channels: int = 1, classes: int = 3, width: int = 8):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(),
                                 nn.Conv3d(cout, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU())
        self.enc1 = block(in_channels, width)
        self.enc2 = block(width, 2 * width)
        self.bottleneck = block(2 * width, 4 * width)
        self.dec2 = block(6 * width, 2 * width)
        self.dec1 = block(3 * width, width)
        self.head = nn.Conv3d(width, classes, 1)
        self.pool = nn.MaxPool3d(2)

    @staticmethod
    def _up(x, like):
        return nn.functional.interpolate(x, size=like.shape[2:], mode="trilinear", align_corners=False)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottleneck(self.pool(e2))
        d2 = self.dec2(torch.cat([self._up(b, e2), e2], 1))
        d1 = self.dec1(torch.cat([self._up(d2, e1), e1], 1))
        return self.head(d1)
