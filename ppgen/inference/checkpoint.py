"""Atomic, safe files: checkpoints and saved fits.

Everything is written with ``torch.save`` to a temporary file in the target's
folder, flushed, fsynced and renamed over the target, so a crash or Ctrl-C
leaves either the old file or the new one, never a torn one. Files are read
with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and
dicts only, never arbitrary pickled objects.
"""

from __future__ import annotations

import os
import tempfile

import torch

from ..errors import CheckpointError

FORMAT = "ppgen"


def atomic_save(obj, path):
    path = os.fspath(path)
    if os.path.isdir(path) or path.endswith(os.sep) or os.path.basename(path) in ("", ".", ".."):
        raise CheckpointError(f"{path}: is a folder; give a file path (e.g. {os.path.join(path, 'fit.pt')})")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot create its folder ({exc.strerror or exc})") from None
    handle, tmp = tempfile.mkstemp(prefix=".ppgen-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def safe_load(path, kind):
    """Load a ppgen file of the given ``kind`` ("fit" or "checkpoint")."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a folder, not a ppgen {kind} file")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - arbitrary bytes fail inside torch in many ways
        raise CheckpointError(
            f"{path}: not a readable ppgen {kind} file (corrupt, truncated, or not "
            f"written by ppgen): {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ppgen {kind} file (no ppgen header)")
    if obj.get("kind") != kind:
        raise CheckpointError(f"{path}: is a ppgen {obj.get('kind')!r} file, not a {kind}")
    return obj


def resume_from(path, fingerprint, params):
    """The checkpoint at ``path`` with its parameters copied into ``params``, or None
    when there is none yet. A checkpoint of another run (``fingerprint``) or one naming
    an unknown parameter is refused."""
    try:
        saved = safe_load(path, "checkpoint")
    except CheckpointError as exc:
        if "no such file" not in str(exc):
            raise
        return None
    if saved.get("fingerprint") != fingerprint:
        raise CheckpointError(f"{path}: written by a different run ({saved.get('fingerprint')}); "
                              "delete it, choose another path, or pass resume=False")
    with torch.no_grad():
        for name, value in saved["params"].items():
            if name not in params:
                raise CheckpointError(f"{path}: unknown parameter {name!r}")
            params[name].copy_(value)
    return saved
