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


def did_you_mean(name: object, choices) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` to a misspelled ``name``
    (case-insensitive, difflib's ratio at least 0.6), else ``""``."""
    import difflib

    choices = [str(c) for c in choices]
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=1)
    return f" (did you mean {lowered[close[0]]!r}?)" if close else ""
