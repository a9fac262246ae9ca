"""The inference layer: ``fit``, the methods, and the ``Fit`` result.

It knows the :class:`ppgen.GenerativeModel` protocol and Pyro programs, never a
concrete model family. ARCHITECTURE.md maps its modules.
"""

from .api import DEFAULT_THREADS, fit
from .method import Method, RunContext
from .methods import HMC, MAP, METHODS, NUTS, SVI, Adversarial, ContrastiveDivergence, Exact
from .persistence import load
from .result import Fit

__all__ = ["fit", "load", "Fit", "Method", "RunContext", "METHODS", "SVI", "MAP", "NUTS", "HMC", "Exact",
           "ContrastiveDivergence", "Adversarial", "DEFAULT_THREADS"]
