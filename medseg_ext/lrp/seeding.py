"""Seeding a segmentation output (seeds-part2 §1.4) and the one-call ``explain``.

The paper's seed: the sigmoid output s is masked by the binarisation threshold (optionally one
object), summed by a "sum layer", and that sum is explained with the ε-rule. Through the sum layer
every masked pixel gets R_p = m_p s_p · y / stab(y), y = Σ m s; the sigmoid passes relevance to the
logit. Because all rules are linear in the upstream relevance once the forward is fixed, K masks
are explained in one batched backward (a K-leading seed).

Which object (``component``): "largest" = the largest foreground connected component (ties: the
one met first in raster order), never the background (the paper's ``argsort()[-2]`` picks the
background when the object is larger, and fails on an empty mask); an int k = the k-th largest
(0-based); a tuple of ints = the component containing that pixel; "all" = the whole thresholded
mask. No foreground (or a point outside it) gives an empty mask and an all-zero relevance map.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch

from .composites import Composite
from .engine import LRP
from .rules import _check_eps, stabilize

Tensor = torch.Tensor


def threshold_mask(prob: Tensor, threshold: float = 0.5, strict: bool = True) -> Tensor:
    """``prob > threshold`` (the paper's code) or ``>=`` (MONAI ``AsDiscrete``) with ``strict=False``."""
    if not isinstance(prob, Tensor):
        raise TypeError(f"prob: expected a torch.Tensor, got {type(prob).__name__}")
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
        raise TypeError(f"threshold: expected a float, got {type(threshold).__name__}")
    return prob > threshold if strict else prob >= threshold


def select_component(mask, component: Union[str, int, Sequence[int]] = "largest", connectivity: str = "full"):
    """One connected component of a boolean mask (2-D or 3-D, no batch/channel dims)."""
    from scipy import ndimage
    is_t = isinstance(mask, Tensor)
    m = mask.detach().cpu().numpy() if is_t else np.asarray(mask)
    if m.dtype != bool:
        raise TypeError(f"mask: expected a boolean mask, got {m.dtype}")
    if m.ndim not in (1, 2, 3):
        raise ValueError(f"mask: expected a 1-D, 2-D or 3-D mask, got shape {m.shape}")
    if connectivity not in ("full", "face"):
        raise ValueError(f"connectivity: expected 'full' (8/26) or 'face' (4/6), got {connectivity!r}")
    structure = np.ones((3,) * m.ndim, bool) if connectivity == "full" else None
    lab, n = ndimage.label(m, structure=structure)
    if isinstance(component, str):
        if component == "all":
            out = m.copy()
        elif component == "largest":
            if n == 0:
                out = np.zeros_like(m)
            else:
                sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
                out = lab == (int(np.argmax(sizes)) + 1)
        else:
            raise ValueError(f"component: expected 'largest', 'all', an int or a pixel tuple, got {component!r}")
    elif isinstance(component, (int, np.integer)) and not isinstance(component, bool):
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        order = np.argsort(-sizes, kind="stable")
        if component < 0:
            raise ValueError(f"component: expected >= 0, got {component}")
        out = lab == (int(order[component]) + 1) if component < n else np.zeros_like(m)
    elif isinstance(component, (tuple, list)) and len(component) == m.ndim:
        idx = tuple(int(c) for c in component)
        if not all(0 <= i < s for i, s in zip(idx, m.shape)):
            raise ValueError(f"component: pixel {idx} outside the mask of shape {m.shape}")
        out = lab == lab[idx] if lab[idx] > 0 else np.zeros_like(m)
    else:
        raise ValueError(f"component: expected 'largest', 'all', an int or a {m.ndim}-tuple, got {component!r}")
    return torch.from_numpy(out).to(mask.device) if is_t else out


def _activate(logits: Tensor, activation: Optional[str]) -> Tensor:
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    if activation == "softmax":
        return torch.softmax(logits, dim=1)
    if activation in (None, "identity", "none"):
        return logits
    raise ValueError(f"activation: expected 'sigmoid', 'softmax' or None, got {activation!r}")


def make_seed(logits: Tensor, masks: Tensor, channels: Union[int, Sequence[int]] = 0, *,
              activation: Optional[str] = "sigmoid", mode: str = "paper", epsilon: float = 1e-9) -> Tensor:
    """The (K, *logits.shape) seed for K region masks.

    masks: (K, *spatial) or (K, B, *spatial), boolean or weights; channels: the output channel of
    each mask (an int for all). mode: "paper" (m ⊙ s times the sum layer's y/stab(y)), "prob"
    (m ⊙ s), "logit" (m ⊙ z) or "uniform" (m).
    """
    if not isinstance(logits, Tensor) or not isinstance(masks, Tensor):
        raise TypeError("logits, masks: expected torch.Tensors")
    if logits.dim() < 3:
        raise ValueError(f"logits: expected (B, C, *spatial), got shape {tuple(logits.shape)}")
    B, C, sp = logits.shape[0], logits.shape[1], tuple(logits.shape[2:])
    if masks.dim() == len(sp) + 1:
        masks = masks.unsqueeze(1).expand((masks.shape[0], B) + sp)
    if masks.dim() != len(sp) + 2 or tuple(masks.shape[1:]) != (B,) + sp:
        raise ValueError(f"masks: expected (K, *{sp}) or (K, {B}, *{sp}), got {tuple(masks.shape)}")
    K = masks.shape[0]
    if K == 0:   # an empty channel list would otherwise fail inside index_select with a dtype message
        raise ValueError(f"masks: expected K >= 1 masks, got shape {tuple(masks.shape)}")
    if not logits.is_floating_point() or not bool(torch.isfinite(logits).all()):
        raise ValueError("logits: expected finite floating-point values (NaN or Inf found, or an integer dtype)")
    if masks.is_floating_point() and not bool(torch.isfinite(masks).all()):
        raise ValueError("masks: contains NaN or Inf weights")
    if isinstance(channels, (int, np.integer)):
        channels = [int(channels)] * K
    try:
        channels = [int(c) for c in channels]
    except (TypeError, ValueError) as e:
        raise TypeError(f"channels: expected an int or a sequence of ints, got {channels!r}") from e
    if len(channels) != K:
        raise ValueError(f"channels: expected {K} entries (one per mask), got {len(channels)}")
    if any(not 0 <= c < C for c in channels):
        raise ValueError(f"channels: expected values in [0, {C}), got {channels}")
    if mode not in ("paper", "prob", "logit", "uniform"):
        raise ValueError(f"mode: expected 'paper', 'prob', 'logit' or 'uniform', got {mode!r}")
    epsilon = _check_eps(epsilon)
    m = masks.to(logits.dtype)
    if mode == "logit":
        val = logits
    elif mode == "uniform":
        val = torch.ones_like(logits)
    else:
        val = _activate(logits, activation)
    idx = torch.tensor(channels, device=logits.device)
    sel = val.index_select(1, idx).transpose(0, 1)          # (K, B, *sp)
    r = m * sel
    if mode == "paper":
        y = r.flatten(2).sum(-1)                            # the sum layer, per region and sample
        sy = stabilize(y, epsilon)
        # epsilon = 0 and an empty region: 0/0; a zero denominator passes nothing (LRP-0, as Rule.div)
        f = torch.where(sy == 0, torch.zeros_like(y), y / torch.where(sy == 0, torch.ones_like(sy), sy))
        r = r * f.reshape(f.shape + (1,) * len(sp))
    onehot = torch.nn.functional.one_hot(idx, C).to(logits.dtype)  # (K, C)
    seed = r.unsqueeze(2) * onehot.reshape((K, 1, C) + (1,) * len(sp))
    return seed


def region_masks(logits: Tensor, *, activation: str = "sigmoid", threshold: float = 0.5, channel: int = 0,
                 components: Union[str, int, Sequence] = "largest", strict: bool = True) -> Tensor:
    """(K, B, *spatial) boolean masks from the output: threshold channel ``channel``, then select
    components (one entry, or a list of entries -> K masks), per sample."""
    prob = _activate(logits, activation)[:, channel]
    binm = threshold_mask(prob, threshold, strict)
    comps = components if isinstance(components, list) else [components]
    out = torch.stack([torch.stack([select_component(binm[b], c) for b in range(binm.shape[0])]) for c in comps])
    return out


def class_masks(logits: Tensor) -> Tensor:
    """(C, B, *spatial) masks of argmax == c: every class explained in one pass (softmax outputs)."""
    am = logits.argmax(1)
    return torch.stack([am == c for c in range(logits.shape[1])])


def explain(model, x: Tensor, *, composite: Optional[Composite] = None, masks: Optional[Tensor] = None,
            channels: Union[int, Sequence[int]] = 0, activation: Optional[str] = "sigmoid", threshold: float = 0.5,
            components: Union[str, int, Sequence] = "largest", mode: str = "paper", epsilon: float = 1e-9,
            all_classes: bool = False, return_engine: bool = False, module_rules=None):
    """Explains segmented regions of ``model(x)`` in one forward and one batched backward.

    Returns the input relevance (K, *x.shape): K = number of masks (``masks`` given), of
    ``components`` entries (a list gives several objects), or of classes (``all_classes=True``,
    argmax masks, softmax seeds).
    """
    engine = LRP(model, composite, module_rules=module_rules)
    logits = engine.forward(x)
    if all_classes:
        masks = class_masks(logits)
        channels = list(range(logits.shape[1]))
        if activation == "sigmoid" and logits.shape[1] > 1:
            activation = "softmax"
    elif masks is None:
        masks = region_masks(logits, activation=activation or "sigmoid", threshold=threshold,
                             channel=channels if isinstance(channels, int) else channels[0], components=components)
    seed = make_seed(logits, masks, channels, activation=activation, mode=mode, epsilon=epsilon)
    R = engine.relevance(seed)
    return (R, engine) if return_engine else R
