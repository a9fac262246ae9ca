"""NUTS and HMC chains one per worker process, or one after another in this one.

Where the potential cannot be vectorised over chains (enumerated discrete sites
evaluated by Pyro chain by chain, ``potential="loop"``), lockstep chains share
one core and wait for each other's deepest tree. Here chain ``c`` runs alone,
with seed ``seed + c``, either in a worker process (``"parallel"``: at most one
per CPU core, each with one torch thread) or in this process (``"sequential"``);
the draws of the two are identical, and so are chain ``c``'s and a one-chain
``fit(..., seed=seed + c)``'s.

Workers are forked where the platform forks (Linux) and CUDA is not initialised
here: the model and its data are inherited, not pickled, so closures and models
defined in ``__main__`` work; the draws come back as NumPy arrays through a pipe.
Otherwise (spawn) the program must pickle, else the chains run sequentially and
the reason is logged. An
exception in a worker is raised here (with the chain named); a worker that dies
raises :class:`~ppgen.errors.MethodError`; Ctrl-C stops every worker.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import time
import traceback

import torch
from tqdm.auto import tqdm

from ...errors import MethodError
from .sample import run_mcmc

log = logging.getLogger("ppgen")


def run_chains_alone(program, method, *, seed, progress, parallel, init_values=None, processes=None):
    """Run ``method.chains`` one-chain samplers, chain ``c`` with seed ``seed + c``, in
    worker processes (``parallel``, at most ``processes``, default one per core) or one
    after another; return ``run_mcmc``'s ``(posterior, stats, timings, path)`` with the chains
    in order (the path of the first)."""
    one = dataclasses.replace(method, chains=1, chain_method="vectorized")
    start = time.perf_counter()
    context = _context(program) if parallel and method.chains > 1 else None
    if context is None:
        runs = [_timed_run(program, one, seed + c, progress, init_values) for c in range(method.chains)]
    else:
        workers = max(1, min(method.chains, processes or os.cpu_count() or 1))
        runs = _run_in_workers(context, program, one, seed, init_values, method.chains, workers, progress)
    posterior = {k: torch.cat([r[0][k] for r in runs]) for k in runs[0][0]}
    stats = {k: torch.cat([r[1][k] for r in runs]) for k in runs[0][1]}
    total = time.perf_counter() - start
    # chains overlap in time: the longest build stands for the compile step
    compile_seconds = max(r[2].get("compile", 0.0) for r in runs)
    timings = {"compile": compile_seconds, "sampling": total - compile_seconds, "total": total}
    return posterior, stats, timings, runs[0][3]


def _timed_run(program, method, seed, progress, init_values):
    return run_mcmc(program, method, seed=seed, progress=progress, init_values=init_values)


def _context(program):
    """A multiprocessing context whose workers can run ``program``, or None (with the reason logged)."""
    # CUDA cannot be used again in a forked child once this process has initialised it
    if "fork" in multiprocessing.get_all_start_methods() and not torch.cuda.is_initialized():
        return multiprocessing.get_context("fork")
    try:
        pickle.dumps(program)
    except Exception as exc:  # noqa: BLE001 - whatever stops pickling stops spawn
        log.warning("chain_method='parallel': the model cannot be sent to a spawned worker (%s: %s); "
                    "running the chains one after another", type(exc).__name__, exc)
        return None
    return multiprocessing.get_context("spawn")


def _worker(connection, program, method, seed, init_values):
    try:
        torch.set_num_threads(1)  # one core per chain
        posterior, stats, seconds, path = _timed_run(program, method, seed, False, init_values)
        connection.send(("ok", {k: v.detach().cpu().numpy() for k, v in posterior.items()},
                         {k: v.detach().cpu().numpy() for k, v in stats.items()}, seconds, path))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        try:
            payload = pickle.dumps(exc)
        except Exception:  # noqa: BLE001
            payload = None
        connection.send(("error", payload, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        connection.close()


def _run_in_workers(context, program, method, seed, init_values, chains, workers, progress):
    results, running, waiting = [None] * chains, {}, list(range(chains))
    bar = tqdm(total=chains, disable=not progress, desc=f"{method.name.upper()} chains", leave=False)
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                c = waiting.pop(0)
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_worker, args=(send, program, method, seed + c, init_values),
                                          daemon=True)
                process.start()
                send.close()
                running[c] = (process, receive)
            ready = multiprocessing.connection.wait([r for _, r in running.values()])
            for c, (process, receive) in list(running.items()):
                if receive not in ready:
                    continue
                try:
                    message = receive.recv()
                except EOFError:
                    process.join()
                    raise MethodError(f"{method.name.upper()}: the worker process of chain {c} died "
                                      f"(exit code {process.exitcode}) before returning its draws") from None
                process.join()
                del running[c]
                if message[0] == "error":
                    _raise_from_worker(c, message)
                posterior = {k: torch.from_numpy(v) for k, v in message[1].items()}
                stats = {k: torch.from_numpy(v) for k, v in message[2].items()}
                results[c] = (posterior, stats, message[3], message[4])
                bar.update()
    finally:
        bar.close()
        for process, receive in running.values():
            process.terminate()
            process.join()
            receive.close()
    return results


def _raise_from_worker(chain, message):
    _, payload, summary, worker_traceback = message
    exc = None
    if payload is not None:
        try:
            exc = pickle.loads(payload)  # our own child's exception, not a user file
        except Exception:  # noqa: BLE001
            exc = None
    if isinstance(exc, Exception):
        exc.add_note(f"(in the worker process of chain {chain}; its traceback:\n{worker_traceback})")
        raise exc
    raise MethodError(f"chain {chain}'s worker process failed: {summary}\n{worker_traceback}")
