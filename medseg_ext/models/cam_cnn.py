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
