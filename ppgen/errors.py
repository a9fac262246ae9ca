"""The errors ppgen raises: each names the argument, site, file or value at fault.

They subclass the built-in exception a user would expect (``ValueError``,
``TypeError``), so ``except ValueError`` keeps working, and ``PpgenError``, so
``except ppgen.PpgenError`` catches everything the library raises on purpose.
"""


class PpgenError(Exception):
    """Base class of every error ppgen raises deliberately."""


class DataError(PpgenError, ValueError):
    """Data that cannot be used: NaN or inf values, wrong shapes or dimensions."""


class MethodError(PpgenError, ValueError):
    """An inference method the model does not support, or a bad method setting."""


class ModelError(PpgenError, ValueError):
    """A model that cannot run as asked: bad configuration, unknown site names."""


class CheckpointError(PpgenError, ValueError):
    """A file that is not a readable ppgen fit or checkpoint."""


class DatasetError(PpgenError, ValueError):
    """An unknown dataset name or an unreadable data file."""
