"""The datasets shipped inside the package, found with :mod:`importlib.resources`."""

from __future__ import annotations

import json
import re
from importlib import resources

import numpy as np

from ..errors import DatasetError, did_you_mean
from .images import load_digits
from .tables import read_csv

#: name -> (file in ``data/``, one-line description)
_EMBEDDED = {
    "faithful": ("faithful.csv", "Old Faithful, 272 eruptions: eruptions (min), waiting (min)"),
    "geyser": ("geyser.csv", "Old Faithful (MASS), 299 eruptions: waiting (min), duration (min)"),
    "earthquakes": ("earthquakes.csv", "major (M7+) earthquakes per year, 1900-2006: year, count"),
    "eight_schools": ("eight_schools.json", "eight schools: effects y, standard errors sigma (J=8)"),
    "digits": ("digits.npz", "8x8 handwritten digits, 1797 images, pixels scaled to [0, 1]; labels 0-9"),
}


def _resource(filename):
    return resources.files(__package__).joinpath("data", filename)


def names():
    """The embedded datasets' names, sorted."""
    return sorted(_EMBEDDED)


def _check_name(name):
    key = str(name).lower()
    if key not in _EMBEDDED:
        raise DatasetError(f"unknown dataset {name!r}{did_you_mean(name, names())}; embedded datasets: "
                           f"{', '.join(names())}")
    return key


def load(name, *, as_frame=True, **kwargs):
    """Load an embedded dataset.

    Parameters
    ----------
    name : str
        One of :func:`names` (case-insensitive).
    as_frame : bool
        Tables come back as a pandas DataFrame of their numeric columns (R's
        ``rownames`` dropped); with ``as_frame=False`` as a float64 numpy array
        of the same columns. ``eight_schools`` is always a dict
        ``{"J": int, "y": array, "sigma": array}``, ready to pass as the keyword
        arguments of a Pyro program. ``digits`` is a float32 ``(1797, 64)``
        array; ``kwargs`` go to :func:`ppgen.datasets.images.load_digits`
        (``return_labels``, ``binarize``).
    """
    key = _check_name(name)
    if key == "digits":
        return load_digits(**kwargs)
    if kwargs:
        raise DatasetError(f"load({key!r}): unexpected arguments {sorted(kwargs)}")
    filename = _EMBEDDED[key][0]
    with resources.as_file(_resource(filename)) as path:
        if filename.endswith(".json"):
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DatasetError(f"{path}: cannot read embedded dataset {key!r} ({exc})") from None
            return {"J": int(raw["J"]), "y": np.asarray(raw["y"], dtype=float),
                    "sigma": np.asarray(raw["sigma"], dtype=float)}
        frame = read_csv(path)
    return frame if as_frame else frame.to_numpy(dtype=float, copy=True)


def describe(name):
    """Source, columns and licence of an embedded dataset (from ``data/PROVENANCE.md``)."""
    key = _check_name(name)
    try:
        text = _resource("PROVENANCE.md").read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot read the datasets' PROVENANCE.md ({exc})") from None
    match = re.search(rf"^## {re.escape(key)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    if match is None:
        return f"{key}: {_EMBEDDED[key][1]}"
    return f"{key}: {_EMBEDDED[key][1]}\n\n{match.group(1).strip()}"
