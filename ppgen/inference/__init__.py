"""The inference layer: ``fit``, the methods, and the ``Fit`` result.

It knows the :class:`ppgen.GenerativeModel` protocol and Pyro programs, never a
concrete model family.
"""

from .api import DEFAULT_THREADS, fit
from .methods import HMC, MAP, NUTS, SVI, Adversarial, ContrastiveDivergence, Exact
from .result import Fit, load

__all__ = ["fit", "load", "Fit", "SVI", "MAP", "NUTS", "HMC", "Exact", "ContrastiveDivergence",
           "Adversarial", "DEFAULT_THREADS"]
