"""``ppgen.fit``: one entry point for every model and every method.

``fit`` checks the model, the method and the data, builds the
:class:`~ppgen.inference.program.Program`, and calls the method's ``run``
(:class:`~ppgen.inference.method.Method`); the method returns the
:class:`~ppgen.inference.result.Fit`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import torch

from ..data import as_kwargs
from ..errors import DataError, MethodError
from ..model import GenerativeModel
from . import data_parallel
from . import result as result_module
from .method import Method, RunContext
from .methods import as_method
from .program import Program
from .result import Fit

log = logging.getLogger("ppgen")

#: torch threads used while fitting when ``threads`` is not given: small Pyro
#: models are dominated by per-op overhead, where extra threads only add
#: synchronisation (see benchmarks/RESULTS.md, "threads").
DEFAULT_THREADS = 1


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(model: GenerativeModel | Callable[..., Any], data: Any = None, method: Method | str | None = None, *,
        guide: Callable[..., Any] | None = None, device: str | torch.device | None = None,
        dtype: torch.dtype | None = None, seed: int = 0, progress: bool = True, threads: int | None = None,
        distributed: bool = False) -> Fit:
    """Fit ``model`` to ``data`` with ``method`` and return a :class:`Fit`.

    Parameters
    ----------
    model : GenerativeModel or callable
        A ppgen model, or any Pyro program (a function whose keyword arguments
        are given by ``data``).
    data : array-like, DataFrame, tensor, or dict
        The observations; for a plain program, a dict of its keyword arguments.
    method : SVI, MAP, NUTS, HMC, Exact, or one of their names; default ``SVI()``.
    guide : callable, optional
        A hand-written guide (plain programs, or to replace a model's own).
    device, dtype : where and in what precision to fit (the model is moved).
    seed : int
        The same seed gives the same result on the same device.
    progress : bool
        Show progress bars.
    threads : int, optional
        Torch CPU threads while fitting (default :data:`DEFAULT_THREADS`).
    distributed : bool
        Train data-parallel over the processes of a ``torch.distributed`` group
        (launch them with ``torchrun``; NCCL on CUDA, gloo on CPU): SVI and MAP
        (:mod:`ppgen.inference.data_parallel`) and Adversarial shard each
        minibatch over the ranks and all-reduce the gradients; NUTS and HMC
        split the chains over the ranks. Every rank returns the same ``Fit``;
        only rank 0 writes checkpoints, logs and progress bars. Without a process
        group this raises a MethodError that shows the torchrun command.
    """
    method = as_method(method if method is not None else "svi")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 63:
        raise MethodError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    if threads is not None and not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
        raise MethodError(f"threads must be a positive integer (or None for the default), got {threads!r}")
    _check_device(device)
    if distributed:
        method.check_distributed(model)
        device = data_parallel.setup(device)
    pyro.set_rng_seed(seed)
    context = RunContext(seed=seed, generator=torch.Generator().manual_seed(seed), progress=progress,
                         distributed=distributed)
    with _threads(threads or DEFAULT_THREADS):
        program = _program(model, data, method, guide, device, dtype, context)
        result = method.run(program, context)
    result.posterior = _with_deterministic(program, result.posterior)
    result.progress = progress
    return result


result_module.FIT = fit  # Fit.refit fits again through here


def _check_device(device: str | torch.device | None) -> None:
    """A clear error for a device this machine lacks (torch asserts or raises its own)."""
    if device is None:
        return
    try:
        where = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MethodError(f"device={device!r} is not a torch device ({exc})") from None
    if where.type == "cuda" and not torch.cuda.is_available():
        raise MethodError(f"device={device!r}: CUDA is not available on this machine "
                          f"(torch {torch.__version__}); use device='cpu'")
    if where.type == "cuda" and where.index is not None and where.index >= torch.cuda.device_count():
        raise MethodError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if where.type == "mps" and not torch.backends.mps.is_available():
        raise MethodError(f"device={device!r}: MPS is not available on this machine; use device='cpu'")


def _program(model, data, method, guide, device, dtype, context):
    """The program to fit; the held-out data go to ``context.validation``."""
    generator = context.generator
    if isinstance(model, GenerativeModel):
        if not model.supports(method.name):
            raise MethodError(f"{type(model).__name__} does not support {type(method).__name__}; "
                              f"it supports {', '.join(model.methods)}")
        if data is None:
            raise DataError("data: required to fit a GenerativeModel")
        if device is not None:
            model.to(device)
        if dtype is not None:
            model.to(dtype)
        kwargs = model.data_kwargs(data)
        columns = getattr(data, "columns", None)  # a DataFrame's: ArviZ's feature coordinates
        model.feature_names_in_ = [str(c) for c in columns] if columns is not None else None
        val = getattr(method, "validation", None)
        if isinstance(val, float):
            size = kwargs["data"].shape[0]
            perm = torch.randperm(size, generator=generator).to(kwargs["data"].device)
            n_val = max(1, int(round(val * size)))
            context.validation = {k: v[perm[:n_val]] for k, v in kwargs.items()}
            kwargs = {k: v[perm[n_val:]] for k, v in kwargs.items()}
        elif val is not None:
            context.validation = model.data_kwargs(val, "validation")
        context.solved = method.prepare(model, kwargs, context)
        if context.solved is None and not model.point.as_dict():
            model.initialize(generator=generator, **kwargs)
        return Program.build(model.model, kwargs, guide=guide or model.guide,
                             generative=model, at=model.point.as_dict())
    if not callable(model):
        raise TypeError(f"model must be a ppgen GenerativeModel or a Pyro program, got {type(model).__name__}")
    pyro.clear_param_store()
    kwargs = as_kwargs(data, dtype=dtype, device=device)
    val = getattr(method, "validation", None)
    if isinstance(val, float):
        raise MethodError("SVI(validation=<fraction>) needs a GenerativeModel; for a plain "
                          "program pass validation=<dict of keyword arguments>")
    if val is not None:
        context.validation = as_kwargs(val, dtype=dtype, device=device)
    return Program.build(model, kwargs, guide=guide)


def _with_deterministic(program, posterior):
    """Add the ``pyro.deterministic`` sites to ``(chains, draws, ...)`` posterior draws."""
    if not program.deterministic or not posterior:
        return posterior
    chains, draws = next(iter(posterior.values())).shape[:2]
    flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in posterior.items()}
    extra = program.deterministic_draws(flat)
    return {**posterior, **{k: v.reshape((chains, draws) + v.shape[1:]) for k, v in extra.items()}}
