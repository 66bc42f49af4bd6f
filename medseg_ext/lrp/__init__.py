"""Layer-wise relevance propagation for U-Net-family segmentation networks (seeds-part2 §1)."""
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Pass, Rule, WSquare, ZBox, ZPlus, stabilize
from .composites import (Composite, EpsilonAlpha2Beta1, EpsilonComposite, EpsilonGammaBox, EpsilonPlus,
                         PRESETS)
from .engine import LRP, LRPUnsupportedError

__all__ = ["AlphaBeta", "Epsilon", "Flat", "Gamma", "Pass", "Rule", "WSquare", "ZBox", "ZPlus", "stabilize",
           "Composite", "EpsilonAlpha2Beta1", "EpsilonComposite", "EpsilonGammaBox", "EpsilonPlus", "PRESETS",
           "LRP", "LRPUnsupportedError"]
