"""Plain NumPy versions of every op: readable, float64, the oracle the tests compare against."""
from . import losses

__all__ = ["losses"]
