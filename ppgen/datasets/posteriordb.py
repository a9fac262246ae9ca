"""A reader of a local copy of posteriordb (posterior, data, Stan code, reference draws).

posteriordb (Magnusson et al., https://github.com/stan-dev/posteriordb) pairs
models with data sets and gold-standard reference draws. Its folder layout::

    posteriors/<posterior>.json                    names model, data and reference
    data/data/<data>.json.zip                      the data, one JSON object
    models/stan/<model>.stan                       the model in Stan
    reference_posteriors/draws/draws/<ref>.json.zip
                                                   a JSON list with one object per chain,
                                                   Stan's flat parameter name -> draws

Only ``zipfile`` and ``json`` are used, nothing is extracted to disk or
unpickled, and every file is checked: a missing or corrupt file raises
:class:`~ppgen.errors.DatasetError` naming it. Reference draws are gathered from
Stan's flattened names (``theta[1]``, ``Sigma[2,1]``, or ``theta.1``) into arrays
shaped ``(chains, draws, *shape)`` with 0-based indices.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError

#: Largest uncompressed JSON member read from a zip (guards against zip bombs).
MAX_MEMBER_BYTES = 1 << 30

_BRACKET = re.compile(r"^(?P<base>[A-Za-z_][A-Za-z0-9_]*)\[(?P<index>\d+(?:,\d+)*)\]$")
_DOTTED = re.compile(r"^(?P<base>[A-Za-z_][A-Za-z0-9_]*)\.(?P<index>\d+(?:\.\d+)*)$")


@dataclass
class Posterior:
    """One posteriordb posterior, read from disk.

    Attributes
    ----------
    name, model_name, data_name : str
        The posterior and the names of its model and data set.
    data : dict
        The data as in the JSON: scalars stay ``int``/``float``, lists become
        numpy arrays (int64 when every entry is an integer, else float64).
    reference : dict
        Parameter name -> float64 array ``(chains, draws, *shape)``.
    stan_code : str
        The Stan program.
    dimensions : dict
        Parameter name -> number of scalar components, as the posterior declares.
    info : dict
        The posterior's JSON description.
    """

    name: str
    model_name: str
    data_name: str
    data: dict
    reference: dict
    stan_code: str
    dimensions: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def posteriordb_names(root):
    """The posterior names available under ``root`` (sorted)."""
    folder = Path(root) / "posteriors"
    if not folder.is_dir():
        raise DatasetError(f"{root}: not a posteriordb folder (no posteriors/ directory)")
    return sorted(p.name[: -len(".json")] for p in folder.glob("*.json"))


def load_posteriordb(name, root):
    """Read posterior ``name`` from the posteriordb folder ``root``.

    Parameters
    ----------
    name : str
        A posterior name (``"eight_schools-eight_schools_noncentered"``), or a
        model name that belongs to exactly one posterior (``"arK"``).
    root : str or Path
        The folder holding ``posteriors/``, ``data/``, ``models/`` and
        ``reference_posteriors/``.

    Returns
    -------
    Posterior
    """
    root = Path(root)
    name = _resolve(name, root)
    info = _read_json(root / "posteriors" / f"{name}.json")
    if not isinstance(info, dict):
        raise DatasetError(f"{root / 'posteriors' / (name + '.json')}: expected a JSON object")
    missing = [k for k in ("model_name", "data_name") if not isinstance(info.get(k), str)]
    if missing:
        raise DatasetError(f"{root / 'posteriors' / (name + '.json')}: no {', '.join(missing)}")
    ref_name = info.get("reference_posterior_name")
    if not isinstance(ref_name, str):
        raise DatasetError(f"posterior {name!r} has no reference draws in posteriordb")
    data_path = root / "data" / "data" / f"{info['data_name']}.json.zip"
    data = _read_zipped_json(data_path)
    if not isinstance(data, dict):
        raise DatasetError(f"{data_path}: expected a JSON object of data, got {type(data).__name__}")
    data = {key: _as_data(value, data_path, key) for key, value in data.items()}
    ref_path = root / "reference_posteriors" / "draws" / "draws" / f"{ref_name}.json.zip"
    reference = gather_draws(_read_zipped_json(ref_path), ref_path)
    stan_path = root / "models" / "stan" / f"{info['model_name']}.stan"
    try:
        stan_code = stan_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{stan_path}: cannot read the Stan model ({exc})") from None
    return Posterior(name=name, model_name=info["model_name"], data_name=info["data_name"], data=data,
                     reference=reference, stan_code=stan_code, dimensions=dict(info.get("dimensions") or {}),
                     info=info)


def gather_draws(chains, source="reference draws"):
    """Stan's flat draws (a list of ``{flat name: [draws]}``, one per chain) as arrays.

    Returns parameter name -> float64 array ``(chains, draws, *shape)``, where
    ``theta[2,1]`` (1-based) lands at ``[..., 1, 0]``.
    """
    if not isinstance(chains, list) or not chains or not all(isinstance(c, dict) for c in chains):
        raise DatasetError(f"{source}: expected a non-empty JSON list of chains (objects of draws)")
    keys = list(chains[0])
    for c, chain in enumerate(chains):
        if set(chain) != set(keys):
            raise DatasetError(f"{source}: chain {c} has parameters {sorted(chain)}, chain 0 has {sorted(keys)}")
    lengths = {len(v) if isinstance(v, list) else -1 for chain in chains for v in chain.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise DatasetError(f"{source}: every parameter of every chain must be a list of the same "
                           f"number of draws (found lengths {sorted(lengths)})")
    parts = {}
    for key in keys:
        base, index = _split_name(key, source)
        parts.setdefault(base, {})
        if index in parts[base]:
            raise DatasetError(f"{source}: parameter {key!r} appears twice")
        parts[base][index] = key
    out = {}
    for base, components in parts.items():
        out[base] = _assemble(base, components, chains, source)
    return out


def _assemble(base, components, chains, source):
    if list(components) == [()]:
        return _column(chains, components[()], source)
    ranks = {len(index) for index in components}
    if () in components or len(ranks) != 1:
        raise DatasetError(f"{source}: parameter {base!r} mixes indices of different ranks")
    shape = tuple(max(index[d] for index in components) for d in range(ranks.pop()))
    if min(min(index) for index in components) < 1 or len(components) != int(np.prod(shape)):
        raise DatasetError(f"{source}: parameter {base!r} has components {sorted(components)}, "
                           f"not every 1-based index of shape {shape}")
    first = _column(chains, next(iter(components.values())), source)
    array = np.empty(first.shape + shape)
    for index, key in components.items():
        array[(Ellipsis,) + tuple(i - 1 for i in index)] = _column(chains, key, source)
    return array


def _column(chains, key, source):
    try:
        return np.array([chain[key] for chain in chains], dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{source}: draws of {key!r} are not all numbers") from None


def _split_name(key, source):
    for pattern, sep in ((_BRACKET, ","), (_DOTTED, ".")):
        match = pattern.match(key)
        if match:
            return match["base"], tuple(int(i) for i in match["index"].split(sep))
    if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
        return key, ()
    raise DatasetError(f"{source}: cannot read the parameter name {key!r}")


def _resolve(name, root):
    available = posteriordb_names(root)
    if not isinstance(name, str):
        raise DatasetError(f"name must be a string, got {type(name).__name__}")
    if name in available:
        return name
    by_model = [p for p in available if p.split("-", 1)[-1] == name]
    if len(by_model) == 1:
        return by_model[0]
    raise DatasetError(f"unknown posterior {name!r} in {root}; available: {', '.join(available)}")


def _read_json(path):
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None


def _read_zipped_json(path):
    """The one JSON member of the zip at ``path``, parsed."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1 or not members[0].filename.endswith(".json"):
                raise DatasetError(f"{path}: expected one .json file inside, found "
                                   f"{[m.filename for m in members]}")
            if members[0].file_size > MAX_MEMBER_BYTES:
                raise DatasetError(f"{path}: {members[0].filename} claims {members[0].file_size} bytes "
                                   f"uncompressed, more than the {MAX_MEMBER_BYTES} allowed")
            raw = archive.read(members[0])
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable zip file ({exc})") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON inside ({exc})") from None


def _as_data(value, path, key):
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return value
    if not isinstance(value, list):
        raise DatasetError(f"{path}: data {key!r} is a {type(value).__name__}, not a number or list")
    try:
        array = np.array(value)
    except ValueError:
        raise DatasetError(f"{path}: data {key!r} is a ragged list") from None
    if array.dtype == object or array.dtype.kind not in "iuf":
        raise DatasetError(f"{path}: data {key!r} is not an array of numbers")
    return array.astype(np.int64 if array.dtype.kind in "iu" else np.float64)
