"""C++ NUTS kernels kept between processes: a model built once is loaded, not rebuilt.

Building a model's C++ transitions (:mod:`.native`) costs TorchInductor's import, its
code generation and two C++ compiles: seconds in every fresh process, although the
same program on the same data builds the same library each time. The library is kept in
the user's private cache (``<cache>/nuts/<key>/``, :mod:`.compile_cache`) with the
tensors its kernels read (the data as Inductor laid them out); a later fit of the same
program loads it directly, without importing TorchInductor.

The key is a SHA-256 of what the library depends on, computed without recording (so a
warm fit neither records nor imports TorchInductor): the program's fingerprint (one run
of the model from a fixed seed: every site's distribution with the tensors it holds, its
value, scale, mask and plates; the data are in them), the flat layout, the working
dtype, PyTorch's and Python's versions, the machine and ppgen's C++ driver. The key
decides which kernel is tried, never whether it is used: a loaded kernel is checked as
a freshly built one is, against Pyro's own potential at the start and probe points and
against the eager leapfrog step (:func:`.native.kept_native_nuts`), so a stale, damaged
or colliding entry is never sampled with. Entries are written to a temporary
folder and renamed into place (a crash leaves no half entry); tensors are read back with
``torch.load(weights_only=True)``. An entry that cannot be loaded or fails the checks is
removed, and the next build keeps a new one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import weakref
from importlib import resources
from pathlib import Path

import torch

from .compile_cache import cache_root, private_directory

log = logging.getLogger("ppgen")

#: Raised when what an entry holds changes shape: older entries are then never read.
FORMAT = 1


def key(potential) -> str:
    """The SHA-256 naming the kernel of ``potential`` (a :class:`~.potential.Potential`),
    from the program's fingerprint (:func:`fingerprint`), the flat layout, the dtype, the
    versions and the C++ driver: no recording needed, so a kept kernel loads before
    anything is recorded. Computed once per potential (the lookup and the keeping after
    a build ask for the same key; the fingerprint runs the model)."""
    if potential not in _KEYS:
        _KEYS[potential] = _key(potential)
    return _KEYS[potential]


_KEYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _key(potential) -> str:
    digest = hashlib.sha256()
    driver = resources.files("ppgen.inference.mcmc").joinpath("native_nuts.cpp").read_bytes()
    for part in (str(FORMAT), torch.__version__, sys.version, platform.machine(), platform.processor(),
                 str(potential.initial.dtype), str(potential.dim)):
        digest.update(part.encode() + b"\0")
    digest.update(driver)
    for site in potential.sites:
        _update(digest, (site.name, site.start, site.stop, site.unconstrained_shape, site.shape, site.free,
                         site.held, site.to_constrained))
    fingerprint(potential.program.model, potential.program.kwargs, digest)
    return digest.hexdigest()


def fingerprint(model, kwargs: dict, digest) -> None:
    """Feed ``digest`` what one run of ``model`` shows, drawn from a fixed seed: every
    site's name, kind, distribution (its class and every tensor it holds, nested
    distributions included: a formula changed anywhere upstream of a site changes them),
    value, scale, mask, plates and ``infer`` settings, in order. Pyro's and PyTorch's
    random states are left as they were."""
    import pyro
    import pyro.poutine as poutine

    with torch.random.fork_rng(), poutine.block(), torch.no_grad(), pyro.validation_enabled(False):
        torch.manual_seed(0)
        trace = poutine.trace(model).get_trace(**kwargs)
    for name, site in trace.nodes.items():
        if site["type"] not in ("sample", "param"):
            continue
        frames = [(f.name, f.size, f.dim) for f in site.get("cond_indep_stack", ())]
        infer = sorted((k, repr(v)) for k, v in (site.get("infer") or {}).items())
        _update(digest, (name, site["type"], site.get("is_observed"), site.get("fn"), site["value"],
                         site.get("scale"), site.get("mask"), frames, infer))


def _update(digest, value, depth=0) -> None:
    """Feed ``digest`` a description of ``value``: tensors by dtype, shape and bytes;
    numbers, strings and containers by value; distributions and transforms by class and
    their attributes, recursively."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{value.dtype}{tuple(value.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    elif value is None or isinstance(value, (bool, int, float, str)):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, (tuple, list)):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _update(digest, item, depth)
    elif depth < 8 and hasattr(value, "__dict__"):  # a distribution, a transform, a constraint
        digest.update(f"<{type(value).__module__}.{type(value).__qualname__}".encode())
        for attr, item in sorted(vars(value).items()):
            if isinstance(item, (torch.Tensor, bool, int, float, str, tuple, list)) or hasattr(item, "__dict__"):
                digest.update(attr.encode())
                _update(digest, item, depth + 1)
    else:
        digest.update(f"<{type(value).__qualname__}>".encode())


def _folder() -> Path:
    return private_directory(private_directory(cache_root()) / "nuts")


def load(name: str):
    """``(entry, constants, thread_safe)`` kept under ``name``, or None where there is none
    (or it cannot be read)."""
    try:
        folder = _folder() / name
        if not folder.is_dir():
            return None
        private_directory(folder)
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != FORMAT:
            return None
        constants = torch.load(folder / "constants.pt", weights_only=True)
        # Inductor's Python bindings find tensors' data through this pointer, as Inductor sets it.
        os.environ["_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR"] = str(
            torch._C._dynamo.guards._torchinductor_pyobject_tensor_data_ptr)
        library = folder / meta["library"]
        if library.parent != folder:
            return None
        spec = importlib.util.spec_from_file_location(f"ppgen_nuts_{library.stem}.kernel", library)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.kernel, constants, bool(meta["thread_safe"])
    except Exception as exc:  # noqa: BLE001 - an unreadable entry is rebuilt, never fatal
        log.info("NUTS: the kept C++ kernel %s was not loaded (%s: %s)", name[:12], type(exc).__name__, exc)
        forget(name)
        return None


def forget(name: str) -> None:
    """Remove the entry ``name`` (unreadable, or failing the checks): the next build keeps a new one."""
    try:
        shutil.rmtree(_folder() / name)
    except Exception as exc:  # noqa: BLE001 - e.g. another process removed it first
        log.debug("NUTS: the kept C++ kernel %s was not removed (%s)", name[:12], exc)


def keep(name: str, entry, constants: list[torch.Tensor], thread_safe: bool) -> None:
    """Keep the built ``entry`` (a function of Inductor's C++ bindings, its library on
    disk), the ``constants`` it reads and whether it is ``thread_safe`` under ``name``."""
    try:
        library = Path(entry.__self__.__file__)
        folder = _folder()
        if (folder / name).exists():
            return
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
        try:
            # A fresh file name per entry: a process never meets a replaced library under
            # a path it has loaded before (the dynamic loader reuses loaded paths).
            copy = f"kernel_{os.urandom(8).hex()}.so"
            shutil.copyfile(library, staging / copy)
            torch.save([t.detach().clone() for t in constants], staging / "constants.pt")
            (staging / "meta.json").write_text(json.dumps({"format": FORMAT, "thread_safe": thread_safe,
                                                           "library": copy}))
            os.rename(staging, folder / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except Exception as exc:  # noqa: BLE001 - keeping is an optimisation; the fit goes on
        log.debug("NUTS: the C++ kernel was not kept (%s: %s)", type(exc).__name__, exc)
