"""The registry of model families: name -> class, with supported methods."""

from __future__ import annotations

from ..errors import ModelError

_FAMILIES = {}


def register(cls):
    """Class decorator (or call) adding a ``GenerativeModel`` family."""
    _FAMILIES[cls.__name__] = cls
    return cls


def model_class(name):
    """The registered class called ``name`` (case-insensitive)."""
    for key, cls in _FAMILIES.items():
        if key.lower() == str(name).lower():
            return cls
    raise ModelError(f"unknown model {name!r}; registered: {', '.join(sorted(_FAMILIES))}")


def families():
    """``{name: class}`` of every registered family."""
    return dict(_FAMILIES)


def table():
    """One row per family: name, supported methods, what ``log_prob`` returns."""
    return [{"model": name, "methods": ", ".join(cls.methods), "log_prob": cls.log_prob_kind,
             "summary": (cls.__doc__ or "").strip().splitlines()[0]}
            for name, cls in sorted(_FAMILIES.items())]
