"""ppgen: generative models as Pyro model/guide pairs, one inference layer, ArviZ diagnostics.

Importing ppgen sets ``pyro.settings.set(module_local_params=True)``: every
model's and guide's parameters live in its own module, never in Pyro's global
param store, so two models never share weights by accident (DESIGN.md).
Plain programs' ``pyro.param`` calls still use the global store.
"""

import pyro

pyro.settings.set(module_local_params=True)

from . import datasets, diagnostics, inference, models  # noqa: E402
from .errors import CheckpointError, DataError, DatasetError, MethodError, ModelError, PpgenError  # noqa: E402
from .inference import fit, load  # noqa: E402
from .model import GenerativeModel  # noqa: E402

__version__ = "0.1.0"

__all__ = ["fit", "load", "GenerativeModel", "models", "inference", "diagnostics", "datasets",
           "PpgenError", "DataError", "MethodError", "ModelError", "CheckpointError",
           "DatasetError", "__version__"]
