"""Plain NumPy versions of every op: readable, float64, the oracle the tests compare against."""
from . import losses

__all__ = ["losses"]

from . import topology  # noqa: E402

__all__ += ["topology"]

from . import detection  # noqa: E402

__all__ += ["detection"]

from . import distance  # noqa: E402

__all__ += ["distance"]
