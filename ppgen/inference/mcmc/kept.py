"""C++ NUTS kernels kept between processes: a model built once is loaded, not rebuilt.

Building a model's C++ transitions (:mod:`.native`) costs TorchInductor's import, its
code generation and two C++ compiles: seconds in every fresh process, although the
same program on the same data builds the same library each time. The library is kept in
the user's private cache (``<cache>/nuts/<key>/``, :mod:`.compile_cache`) with the
tensors its kernels read (the data as Inductor laid them out); a later fit of the same
program loads it directly, without importing TorchInductor.

The key is a SHA-256 of everything the library depends on: the recorded one-chain
potential (its code, and every constant tensor's dtype, shape and bytes: the data), the
working dtype, PyTorch's and Python's versions, the machine and ppgen's C++ driver. A
loaded kernel is checked as a freshly built one is (:func:`.native.kept_native_nuts`),
so a stale or damaged entry is never sampled with. Entries are written to a temporary
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
from importlib import resources
from pathlib import Path

import torch

from .compile_cache import cache_root, private_directory

log = logging.getLogger("ppgen")

#: Raised when what an entry holds changes shape: older entries are then never read.
FORMAT = 1


def key(graph: torch.fx.GraphModule, dtype: torch.dtype) -> str:
    """The SHA-256 naming the kernel built from the recorded potential ``graph`` in ``dtype``."""
    digest = hashlib.sha256()
    driver = resources.files("ppgen.inference.mcmc").joinpath("native_nuts.cpp").read_bytes()
    for part in (str(FORMAT), torch.__version__, sys.version, platform.machine(), platform.processor(),
                 str(dtype), graph.code):
        digest.update(part.encode() + b"\0")
    digest.update(driver)
    for node in graph.graph.nodes:
        if node.op == "get_attr":
            value = getattr(graph, node.target)
            if isinstance(value, torch.Tensor):
                flat = value.detach().cpu().contiguous().reshape(-1)
                digest.update(f"{node.target} {value.dtype} {tuple(value.shape)}".encode())
                digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


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
