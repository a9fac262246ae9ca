"""Reading a user's CSV table into numeric columns, with errors that name the culprit."""

from __future__ import annotations

import os

import numpy as np

from ..errors import DataError, DatasetError

#: index columns written by R (``rownames``) and pandas (``Unnamed: 0``), dropped on reading.
_INDEX_COLUMNS = ("rownames", "Unnamed: 0", "")


def read_csv(path, *, columns=None):
    """Read the CSV file at ``path`` into a DataFrame of numeric columns.

    Parameters
    ----------
    path : str or os.PathLike
    columns : list of str, optional
        The columns to keep, in this order; each must exist and be numeric.
        By default every numeric column is kept (R/pandas index columns such as
        ``rownames`` are dropped) and non-numeric ones are left out.

    Raises
    ------
    DatasetError
        The file is missing or unreadable, a requested column does not exist or
        is not numeric, or the table has no numeric column.
    DataError
        A kept column holds missing (NaN) or infinite values; the message names
        the column and the first bad row.
    """
    import pandas as pd
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DatasetError(f"{path}: is a folder, not a CSV file")
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: the file is empty") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{path}: cannot be read as CSV ({reason})") from None
    if frame.shape[0] == 0:
        raise DatasetError(f"{path}: has a header but no rows")
    frame = frame.drop(columns=[c for c in frame.columns if str(c).strip() in _INDEX_COLUMNS])
    if columns is not None:
        frame = select_columns(frame, columns, path)
    else:
        for name in frame.columns:
            column = frame[name]
            if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
                continue
            parsed = pd.to_numeric(column, errors="coerce")
            text = parsed.isna() & column.notna()
            if parsed.notna().any() and text.any():
                row = int(np.flatnonzero(text.to_numpy())[0])
                raise DatasetError(f"{path}: column {name!r} mixes numbers and text "
                                   f"(first non-numeric value {column.iloc[row]!r} at data row {row + 1})")
        frame = frame.select_dtypes(include=["number", "bool"])
        if frame.shape[1] == 0:
            raise DatasetError(f"{path}: has no numeric column")
    values = frame.to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        kind = "missing (NaN)" if np.isnan(values[row, col]) else "infinite"
        raise DataError(f"{path}: column {frame.columns[col]!r} has {kind} values "
                        f"(first at data row {row + 1}); remove or impute them")
    return frame.reset_index(drop=True)


def select_columns(frame, columns, source="data"):
    """``frame[columns]``, checked: each column must exist and be numeric.

    ``columns`` is a list of names or one comma-separated string (``"a,b"``);
    ``source`` (a path or dataset name) starts the error messages.
    """
    import pandas as pd
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    columns = list(columns)
    if not columns:
        raise DatasetError(f"{source}: no columns selected")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetError(f"{source}: no column(s) {', '.join(map(repr, missing))}; "
                           f"it has {', '.join(map(str, frame.columns))}")
    text = [c for c in columns if not (pd.api.types.is_numeric_dtype(frame[c])
                                       or pd.api.types.is_bool_dtype(frame[c]))]
    if text:
        raise DatasetError(f"{source}: column(s) {', '.join(map(repr, text))} are not numeric")
    return frame[columns]
