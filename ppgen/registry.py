"""The registry of model families: name -> class, with the methods each supports.

It sits beside the protocol (:mod:`ppgen.model`): the families register here
(:mod:`ppgen.models`), and whatever must find a family by name (``ppgen.load``,
the command line, the demo) reads it without importing a family itself.
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any, TypeVar

from .errors import ModelError, did_you_mean
from .model import GenerativeModel

_FAMILIES: dict[str, type[GenerativeModel]] = {}

T = TypeVar("T", bound=type[GenerativeModel])


def register(cls: T) -> T:
    """Class decorator (or call) adding a ``GenerativeModel`` family."""
    _FAMILIES[cls.__name__] = cls
    return cls


def _registered() -> dict[str, type[GenerativeModel]]:
    """The families, once :mod:`ppgen.models` (which registers them) has loaded: ``import
    ppgen`` loads it lazily, at first use."""
    if "ppgen.models" not in sys.modules:
        importlib.import_module("ppgen.models")
    return _FAMILIES


def model_class(name: str) -> type[GenerativeModel]:
    """The registered class called ``name`` (case-insensitive)."""
    _registered()
    for key, cls in _FAMILIES.items():
        if key.lower() == str(name).lower():
            return cls
    raise ModelError(f"unknown model {name!r}{did_you_mean(name, _FAMILIES)}; registered: "
                     f"{', '.join(sorted(_FAMILIES))}")


def families() -> dict[str, type[GenerativeModel]]:
    """``{name: class}`` of every registered family."""
    return dict(_registered())


def table() -> list[dict[str, Any]]:
    """One row per family: name, supported methods, what ``log_prob`` returns, and the first
    line of its docstring as plain text."""
    return [{"model": name, "methods": ", ".join(cls.methods), "log_prob": cls.log_prob_kind,
             "summary": plain_text((cls.__doc__ or "").strip().splitlines()[0])}
            for name, cls in sorted(_registered().items())]


def plain_text(text: str) -> str:
    """A docstring line without its reStructuredText and LaTeX markup, for a terminal:
    ``:math:`\\Psi = \\mathrm{diag}(\\psi_1, \\dots)``` becomes ``Psi = diag(psi_1, ...)``,
    double backquotes and roles go."""
    text = re.sub(r":[a-z]+:`([^`]*)`", r"\1", text).replace("``", "")
    text = re.sub(r"\\(?:mathrm|operatorname|text|mathbf)\{([^}]*)\}", r"\1", text)
    text = text.replace("\\dots", "...").replace("\\ldots", "...")
    return re.sub(r"\\([A-Za-z]+)", r"\1", text)
