"""Parity with kornia.losses where the conventions meet (kornia 0.9):

* ``kornia.losses.dice_loss(average="macro", eps)`` = our softmax Dice per (sample, class) with
  smooth_nr = 0, smooth_dr = eps, classes absent from a sample's target left out of its mean
  (our ``empty="skip"``); kornia's default ``average="micro"`` pools the classes (for a softmax that
  is 1 − accuracy-like overlap) and has no counterpart here.
* ``kornia.losses.focal_loss(alpha, gamma, reduction="mean")`` weights class 0 by 1 − α and the
  others by α and divides the mean by C as well: = our softmax focal loss with
  class_weight = [1 − α, α, …, α], divided by C.
* ``kornia.losses.tversky_loss`` pools the classes too (micro): not compared.
"""
import pytest
import torch

import medseg_ext

kornia_losses = pytest.importorskip("kornia.losses")

pytestmark = pytest.mark.peer


def _case(seed, B=3, C=4, H=6, W=7, absent=()):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    labels = torch.randint(0, C, (B, H, W), generator=g)
    for c in absent:
        labels[labels == c] = 0
    return logits, labels


@pytest.mark.parametrize("absent", [(), (2,)])
def test_macro_dice_matches_kornia(absent):
    logits, labels = _case(1, absent=absent)
    a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    ours = medseg_ext.dice_loss(a, labels, smooth_nr=0.0, smooth_dr=1e-8, empty="skip")
    peer = kornia_losses.dice_loss(b, labels, average="macro", eps=1e-8)
    ours.backward()
    peer.backward()
    torch.testing.assert_close(ours, peer, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 2.0, 3.5])
def test_softmax_focal_matches_kornia(gamma):
    logits, labels = _case(2)
    a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    alpha, C = 0.25, logits.shape[1]
    w = [1 - alpha] + [alpha] * (C - 1)
    ours = medseg_ext.focal_loss(a, labels, activation="softmax", alpha=None, gamma=gamma, class_weight=w) / C
    peer = kornia_losses.focal_loss(b, labels, alpha=alpha, gamma=gamma, reduction="mean")
    ours.backward()
    peer.backward()
    torch.testing.assert_close(ours, peer, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-7, atol=1e-12)
