"""The inference methods, by name: :data:`METHODS` is the one list of them.

Each method is a frozen dataclass of settings with a ``run``
(:class:`~ppgen.inference.method.Method`): :class:`SVI` and :class:`MAP`
(:mod:`~ppgen.inference.variational`), :class:`NUTS` and :class:`HMC`
(:mod:`~ppgen.inference.sampling`), :class:`Exact` (:mod:`~ppgen.inference.exact`),
:class:`ContrastiveDivergence` (:mod:`~ppgen.inference.contrastive`) and
:class:`Adversarial` (:mod:`~ppgen.inference.adversarial`). A family's ``methods``,
``ppgen fit --method`` and the registry table name methods from :data:`METHODS`.
"""

from __future__ import annotations

from ..errors import MethodError
from .adversarial import Adversarial
from .contrastive import ContrastiveDivergence
from .exact import Exact
from .method import Method
from .sampling import HMC, NUTS
from .variational import ELBOS, GUIDES, MAP, SVI

#: Every inference method, by name.
METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (SVI, MAP, NUTS, HMC, Exact, ContrastiveDivergence,
                                                              Adversarial)}


def as_method(method: Method | str) -> Method:
    """A method object from an instance or a name such as ``"nuts"``."""
    if isinstance(method, str):
        if method.lower() not in METHODS:
            raise MethodError(f"method={method!r}: choose one of {sorted(METHODS)}")
        return METHODS[method.lower()]()
    if not isinstance(method, Method):
        raise MethodError(
            f"method={method!r}: give one of ppgen.inference.{', '.join(c.__name__ for c in METHODS.values())}"
        )
    return method


__all__ = ["METHODS", "as_method", "Method", "SVI", "MAP", "NUTS", "HMC", "Exact", "ContrastiveDivergence",
           "Adversarial", "GUIDES", "ELBOS"]
