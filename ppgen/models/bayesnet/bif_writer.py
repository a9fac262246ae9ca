"""Writing BIF files: ``format_bif`` and the atomic ``write_bif``.

The reader and the data structure are in :mod:`ppgen.models.bayesnet.bif`; names and
properties are checked by running them back through its lexer, so everything
written reads back exactly.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import os
import tempfile

import numpy as np

from .bif import WORD, BIFError, BIFNetwork, Lexer

__all__ = ["format_bif", "write_bif"]


def _name(text):
    if WORD.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _property(text, where):
    """A ``property`` line, checked to read back as ``text``."""
    lexer = Lexer(text + ";")
    try:
        ok = lexer.raw_until_semicolon(where) == text and lexer.pos == len(text) + 1
    except BIFError:
        ok = False
    if not ok:
        raise BIFError(f"{where} {text!r} cannot be written (a ';', a comment, an open quote or outer space)")
    return f"  property {text};\n"


def format_bif(net: BIFNetwork) -> str:
    """The BIF text of ``net``; ``parse_bif(format_bif(net)) == net`` exactly.

    Nodes with parents are written as one row ``(s1, s2) p, q;`` per parent
    configuration, in row-major order of the parents; roots as ``table``.

    Raises
    ------
    BIFError
        ``net`` does not hold together (a missing table or a table of the wrong
        shape, an undeclared parent, non-finite values, an unwritable property).
    """
    extra = (set(net.parents) | set(net.cpts) | set(net.properties)) - set(net.variables)
    if extra:
        raise BIFError(f"parents, tables or properties for undeclared variables: {sorted(extra)}")
    out = [f"network {_name(net.name)} {{\n"]
    out += [_property(p, "network property") for p in net.network_properties]
    out.append("}\n")
    for v, states in net.variables.items():
        if not states or len(set(states)) != len(states):
            raise BIFError(f"variable {v!r} has no states or duplicate states")
        out.append(f"variable {_name(v)} {{\n  type discrete [ {len(states)} ] "
                   f"{{ {', '.join(map(_name, states))} }};\n")
        out += [_property(p, f"property of {v!r}") for p in net.properties.get(v, [])]
        out.append("}\n")
    for v, states in net.variables.items():
        parents = net.parents.get(v, [])
        if any(p not in net.variables or p == v for p in parents) or len(set(parents)) != len(parents):
            raise BIFError(f"variable {v!r} has an undeclared, repeated or self parent: {parents}")
        if v not in net.cpts:
            raise BIFError(f"variable {v!r} has no table")
        cpt = np.asarray(net.cpts[v], dtype=np.float64)
        shape = tuple(len(net.variables[p]) for p in parents) + (len(states),)
        if cpt.shape != shape or not np.isfinite(cpt).all():
            raise BIFError(f"the table of {v!r} has shape {cpt.shape}, expected {shape}, or non-finite values")
        rows = cpt.reshape(-1, len(states)).tolist()
        if not parents:
            out.append(f"probability ( {_name(v)} ) {{\n  table {', '.join(map(repr, rows[0]))};\n}}\n")
            continue
        out.append(f"probability ( {_name(v)} | {', '.join(map(_name, parents))} ) {{\n")
        configs = itertools.product(*[[_name(s) for s in net.variables[p]] for p in parents])
        out += [f"  ({', '.join(config)}) {', '.join(map(repr, row))};\n" for config, row in zip(configs, rows)]
        out.append("}\n")
    return "".join(out)


def write_bif(net: BIFNetwork, path) -> None:
    """Write ``net`` to ``path`` atomically, gzip-compressed if the name ends in ``.gz``.

    The text goes to a temporary file in the same folder, which then replaces
    ``path`` (:func:`os.replace`), so readers never see a half-written file.

    Raises
    ------
    BIFError
        ``net`` cannot be written (see :func:`format_bif`) or the file cannot be created.
    """
    path = os.fspath(path)
    data = format_bif(net).encode("utf-8")
    if path.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except OSError as exc:
        raise BIFError(f"{path}: cannot be written ({exc})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise BIFError(f"{path}: cannot be written ({exc})") from None
        raise
