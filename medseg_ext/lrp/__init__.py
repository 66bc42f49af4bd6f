"""Layer-wise relevance propagation for U-Net-family segmentation networks (seeds-part2 §1)."""
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Pass, Rule, WSquare, ZBox, ZPlus, stabilize
from .composites import (Composite, EpsilonAlpha2Beta1, EpsilonComposite, EpsilonGammaBox, EpsilonPlus,
                         PRESETS)
from .engine import LRP, LRPUnsupportedError
from .seeding import class_masks, explain, make_seed, region_masks, select_component, threshold_mask
from .display import log_scale, normalize_attr, overlay

__all__ = ["AlphaBeta", "Epsilon", "Flat", "Gamma", "Pass", "Rule", "WSquare", "ZBox", "ZPlus", "stabilize",
           "Composite", "EpsilonAlpha2Beta1", "EpsilonComposite", "EpsilonGammaBox", "EpsilonPlus", "PRESETS",
           "LRP", "LRPUnsupportedError", "class_masks", "explain", "make_seed", "region_masks",
           "select_component", "threshold_mask", "log_scale", "normalize_attr", "overlay"]
