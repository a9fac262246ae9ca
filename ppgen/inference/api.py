"""``ppgen.fit``: one entry point for every model and every method."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging

import pyro
import torch
from torch.distributions import biject_to

from ..data import as_kwargs
from ..errors import DataError, MethodError
from ..model import GenerativeModel
from . import data_parallel
from .adversarial import run_adversarial
from .contrastive import run_contrastive
from .data_parallel_gan import run_adversarial_data_parallel
from .exact import run_exact
from .mcmc import run_mcmc
from .mcmc_processes import chain_method, run_chains_alone
from .methods import MAP, SVI, as_method
from .program import Program
from .result import Fit
from .svi import guide_draws, run_svi

log = logging.getLogger("ppgen")

#: torch threads used while fitting when ``threads`` is not given: small Pyro
#: models are dominated by per-op overhead, where extra threads only add
#: synchronisation (see benchmarks/RESULTS.md, "threads").
DEFAULT_THREADS = 1


@contextlib.contextmanager
def _threads(count):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(model, data=None, method=None, *, guide=None, device=None, dtype=None, seed=0,
        progress=True, threads=None, distributed=False):
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
    method = as_method(method if method is not None else SVI())
    if not isinstance(seed, int):
        raise MethodError(f"seed must be an integer, got {seed!r}")
    if distributed:
        if isinstance(model, GenerativeModel) and _uses_em(model, method):
            raise MethodError(f"distributed=True: MAP(solver={method.solver!r}) runs {type(model).__name__}'s "
                              "EM solver, which is not data-parallel; use MAP(solver='gradient')")
        device = data_parallel.setup(method, device)
    pyro.set_rng_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    with _threads(threads or DEFAULT_THREADS):
        program, validation, em_result = _program(model, data, method, guide, device, dtype, generator)
        return _run(program, method, validation, seed, progress, em_result, distributed)


def _program(model, data, method, guide, device, dtype, generator):
    validation = None
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
        val = getattr(method, "validation", None)
        if isinstance(val, float):
            size = kwargs["data"].shape[0]
            perm = torch.randperm(size, generator=generator).to(kwargs["data"].device)
            n_val = max(1, int(round(val * size)))
            validation = {k: v[perm[:n_val]] for k, v in kwargs.items()}
            kwargs = {k: v[perm[n_val:]] for k, v in kwargs.items()}
        elif val is not None:
            validation = model.data_kwargs(val, "validation")
        em_result = None
        if _uses_em(model, method):
            # The EM solver seeds itself; solving before tracing gives the trace sane values.
            em_result = model.fit_map(**kwargs, max_iter=method.max_iter, tol=method.tol,
                                      n_init=method.n_init, generator=generator)
        elif not model.point.as_dict():
            model.initialize(generator=generator, **kwargs)
        program = Program.build(model.model, kwargs, guide=guide or model.guide,
                                generative=model, at=model.point.as_dict())
        return program, validation, em_result
    if not callable(model):
        raise TypeError(f"model must be a ppgen GenerativeModel or a Pyro program, got {type(model).__name__}")
    pyro.clear_param_store()
    kwargs = as_kwargs(data, dtype=dtype, device=device)
    val = getattr(method, "validation", None)
    if isinstance(val, float):
        raise MethodError("SVI(validation=<fraction>) needs a GenerativeModel; for a plain "
                          "program pass validation=<dict of keyword arguments>")
    if val is not None:
        validation = as_kwargs(val, dtype=dtype, device=device)
    return Program.build(model, kwargs, guide=guide), validation, None


def _uses_em(model, method):
    return isinstance(method, MAP) and method.solver != "gradient" and hasattr(model, "fit_map")


#: Settings that do not change what a run computes, so a checkpoint resumes across them.
UNFINGERPRINTED = ("num_steps", "checkpoint", "checkpoint_every", "resume")


def _fingerprint(program, method):
    generative = program.generative
    described = {
        "model": (type(generative).__name__ if generative is not None
                  else getattr(program.model, "__qualname__", "program")),
        "config": generative.get_config() if generative is not None else None,
        "method": {k: v for k, v in method.config().items() if k not in UNFINGERPRINTED},
        "data": {k: list(v.shape) for k, v in program.kwargs.items() if isinstance(v, torch.Tensor)},
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _init_values(program):
    generative = program.generative
    if generative is None or not generative.point.as_dict():
        return None
    values = {}
    for name, value in generative.point_params().items():
        site = program.latent.get(name)
        # A point estimate on the boundary (a CPT's exact zeros) has no finite
        # unconstrained image: leave that site to the default initialisation.
        if site is not None and bool(torch.isfinite(biject_to(site.support).inv(value)).all()):
            values[name] = value
    return values or None


def _with_deterministic(program, posterior):
    """Add the ``pyro.deterministic`` sites to ``(chains, draws, ...)`` posterior draws."""
    if not program.deterministic or not posterior:
        return posterior
    chains, draws = next(iter(posterior.values())).shape[:2]
    flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in posterior.items()}
    extra = program.deterministic_draws(flat)
    return {**posterior, **{k: v.reshape((chains, draws) + v.shape[1:]) for k, v in extra.items()}}


def _run(program, method, validation, seed, progress, em_result, distributed=False):
    fit = _dispatch(program, method, validation, seed, progress, em_result, distributed)
    fit.posterior = _with_deterministic(program, fit.posterior)
    return fit


def _dispatch(program, method, validation, seed, progress, em_result, distributed=False):
    generative = program.generative
    init_values = _init_values(program)
    common = dict(program=program, method=method, seed=seed)
    if em_result is not None:
        params = generative.point_params()
        posterior = {k: v.detach().clone()[None, None] for k, v in params.items()}
        return Fit(posterior=posterior, params=params, losses=em_result["loss"],
                   timings={"fit": em_result["seconds"]}, **common)
    if isinstance(method, MAP) and method.solver == "em":
        raise MethodError(f"MAP(solver='em'): {type(generative).__name__ if generative else 'a plain program'} "
                          "has no EM solver; use solver='gradient'")
    if isinstance(method, SVI):
        runner = data_parallel.run_svi_data_parallel if distributed else run_svi
        out = runner(program, method, seed=seed, progress=progress,
                     fingerprint=_fingerprint(program, method),
                     validation_kwargs=validation, init_values=init_values)
        draws = guide_draws(program, out["guide"], method.num_posterior_samples)
        params = _guide_point(out["guide"], program, draws, isinstance(method, MAP))
        _write_back(generative, params)
        return Fit(posterior={k: v.unsqueeze(0) for k, v in draws.items()}, params=params,
                   losses=out["losses"], val_losses=out["val_losses"], guide=out["guide"],
                   timings={"fit": out["seconds"]}, **common)
    if method.name == "cd":
        # num_epochs is left out of the fingerprint, as num_steps is for SVI: a run may be extended.
        fingerprint = _fingerprint(program, dataclasses.replace(method, num_epochs=1))
        out = run_contrastive(program, method, seed=seed, progress=progress, fingerprint=fingerprint)
        return Fit(posterior={}, losses=out["losses"], timings={"fit": out["seconds"]}, **common)
    if method.name == "adversarial":
        # num_steps is not fingerprinted (UNFINGERPRINTED): a run may be extended from its checkpoint.
        runner = run_adversarial_data_parallel if distributed else run_adversarial
        out = runner(program, method, seed=seed, progress=progress, fingerprint=_fingerprint(program, method))
        return Fit(posterior={}, losses=out["losses"], timings={"fit": out["seconds"]},
                   extras={"discriminator_losses": out["discriminator_losses"]}, **common)
    if method.name in ("nuts", "hmc"):
        resolved = chain_method(program, method)
        alone = resolved == "parallel" or (resolved == "sequential" and method.engine == "ppgen")
        if distributed:
            from .mcmc_ranks import run_mcmc_over_ranks as runner  # chains split over the ranks
        elif alone and method.chains > 1:
            runner = run_chains_alone  # each chain alone: in worker processes, or one after another
        else:
            runner = run_mcmc
        posterior, stats, seconds = runner(program, method, seed=seed, progress=progress, init_values=init_values)
        params = {k: v.reshape((-1,) + v.shape[2:]).mean(0) for k, v in posterior.items()}
        _write_back(generative, params)
        return Fit(posterior=posterior, params=params, sample_stats=stats,
                   timings=getattr(seconds, "parts", {"sampling": seconds}), **common)
    fixed = method.params
    if isinstance(fixed, Fit):
        fixed = fixed.params
    if fixed is None and generative is not None and not hasattr(generative, "exact_posterior"):
        fixed = init_values
    out = run_exact(program, method, params=fixed)
    return Fit(posterior=out["posterior"], params=out.get("params", dict(fixed or {})),
               log_evidence=out["log_evidence"], marginals=out["marginals"],
               map_assignment=out["map_assignment"], timings={"exact": out["seconds"]}, **common)


def _guide_point(guide, program, draws, is_map):
    if not is_map and hasattr(guide, "median"):
        try:
            with torch.no_grad():
                median = guide.median(**program.kwargs)
            return {k: v.detach() for k, v in median.items() if k in draws}
        except NotImplementedError:  # flow guides have no closed-form median
            pass
    return {k: v[0] if is_map else v.mean(0) for k, v in draws.items()}


def _write_back(generative, params):
    if generative is not None:
        sites = set(generative.global_sites())
        generative.set_params({k: v for k, v in params.items() if k in sites})
