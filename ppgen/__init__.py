"""ppgen: generative models as Pyro model/guide pairs, one inference layer, ArviZ diagnostics.

Importing ppgen sets ``pyro.settings.set(module_local_params=True)``: every
model's and guide's parameters live in its own module, never in Pyro's global
param store, so two models never share weights by accident (DESIGN.md).
Plain programs' ``pyro.param`` calls still use the global store. Subpackages and
``fit``/``load`` are imported when first used.
"""

import pyro

pyro.settings.set(module_local_params=True)

from .errors import CheckpointError, DataError, DatasetError, MethodError, ModelError, PpgenError  # noqa: E402

# The subpackages load when first used (PEP 562), so that ``import ppgen`` costs little
# beyond ``import torch, pyro``; the first fit pays for what it uses.
_LAZY = {"datasets": ("datasets", None), "diagnostics": ("diagnostics", None), "inference": ("inference", None),
         "models": ("models", None), "fit": ("inference", "fit"), "load": ("inference", "load"),
         "GenerativeModel": ("model", "GenerativeModel")}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'ppgen' has no attribute {name!r}")
    import importlib

    module, attribute = _LAZY[name]
    value = importlib.import_module(f".{module}", __name__)
    value = getattr(value, attribute) if attribute else value
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.1.0"

__all__ = ["fit", "load", "GenerativeModel", "models", "inference", "diagnostics", "datasets",
           "PpgenError", "DataError", "MethodError", "ModelError", "CheckpointError",
           "DatasetError", "__version__"]
