"""A small anchor-free (ATSS/GFL-style) detector for the label-aware pipeline: a tiny stride-4
backbone, a classification and a regression tower, discretised side distances (DFL bins) and a
centerness branch; optionally the label-aware mechanism (LAcls) between backbone and head.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..losses.label_aware import LabelAwareModulation


def _tower(channels: int, depth: int) -> nn.Sequential:
    layers = []
    for _ in range(depth):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class TinyDetector(nn.Module):
    """Stride-4 single-level detector. ``forward(images, labels=None)`` returns
    (cls_logits (B, C, H, W), bin_logits (B, 4·K, H, W), centerness_logits (B, 1, H, W)).

    With ``label_aware=True`` the head runs twice as in the LA paper: the first pass of the cls
    branch (on detached features) gives the label gradients, the features are modulated by
    x·(1 + σ(g1) − σ(g2)), and the second pass (the only one trained) makes the predictions.
    ``labels`` (B, H, W) are the assigned classes (C = background) during training; without them
    the first pass's argmax is used (pseudo-labels, as at test time).
    """

    stride = 4

    def __init__(self, num_classes: int, in_channels: int = 1, channels: int = 32, num_bins: int = 9,
                 tower_depth: int = 2, label_aware: bool = False):
        super().__init__()
        self.num_classes, self.num_bins = num_classes, num_bins
        self.backbone = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=2, padding=1), nn.GroupNorm(8, channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.GroupNorm(8, channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels), nn.ReLU(inplace=True))
        self.cls_tower = _tower(channels, tower_depth)
        self.reg_tower = _tower(channels, tower_depth)
        self.cls_out = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.reg_out = nn.Conv2d(channels, 4 * num_bins, 3, padding=1)
        self.ctr_out = nn.Conv2d(channels, 1, 3, padding=1)
        nn.init.constant_(self.cls_out.bias, -4.6)  # prior 0.01, as in RetinaNet/ATSS
        self.la: Optional[LabelAwareModulation] = None
        if label_aware:
            self.la = LabelAwareModulation(nn.Sequential(self.cls_tower, self.cls_out), mode="cls")

    def forward(self, images: torch.Tensor, labels: Optional[torch.Tensor] = None):
        x = self.backbone(images)
        if self.la is not None:
            x = self.la(x, labels)
        reg_feat = self.reg_tower(x)
        return self.cls_out(self.cls_tower(x)), self.reg_out(reg_feat), self.ctr_out(reg_feat)
