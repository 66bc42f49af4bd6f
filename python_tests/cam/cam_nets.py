"""Tiny networks for the CAM tests (random weights, eval mode)."""
import torch
from torch import nn


class TinyCNN(nn.Module):
    """conv → ReLU → conv ('conv2') → ReLU ('act') → GAP → linear ('fc'). Layer 'act' is followed
    directly by GAP + linear (the SVD-Grad-CAM paper's situation); 'conv2' is not (ReLU mask)."""

    def __init__(self, cin=3, width=8, classes=5, dims=2):
        super().__init__()
        Conv = nn.Conv2d if dims == 2 else nn.Conv3d
        Pool = nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d
        self.conv1 = Conv(cin, width, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = Conv(width, width * 2, 3, padding=1, stride=2)
        self.act = nn.ReLU()
        self.pool = Pool(1)
        self.fc = nn.Linear(width * 2, classes)

    def head(self, a):
        return self.fc(self.pool(a).flatten(1))

    def forward(self, x):
        return self.head(self.act(self.conv2(self.relu1(self.conv1(x)))))


class TinySeg(nn.Module):
    """A small fully convolutional segmentation net (B, classes, H, W)."""

    def __init__(self, cin=1, width=6, classes=3, dims=2):
        super().__init__()
        Conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.enc = Conv(cin, width, 3, padding=1)
        self.mid = Conv(width, width, 3, padding=1)
        self.relu = nn.ReLU()
        self.out = Conv(width, classes, 1)

    def forward(self, x):
        return self.out(self.relu(self.mid(self.relu(self.enc(x)))))


def make(seed=0, dtype=torch.float32, **kw):
    torch.manual_seed(seed)
    return TinyCNN(**kw).to(dtype).eval()
