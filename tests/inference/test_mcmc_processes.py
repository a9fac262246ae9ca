"""Chains alone: in worker processes (``chain_method="parallel"``) or one after another."""

import os

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import config_enumerate

import ppgen
from ppgen.errors import MethodError
from ppgen.inference import NUTS
from ppgen.inference.mcmc.chains import chain_method
from ppgen.inference.program import Program

PARENT = os.getpid()
DATA = torch.tensor([-2.1, -1.7, -2.4, 1.9, 2.2, 1.6, 2.5, -1.9])


@config_enumerate
def mixture(y):
    """Two-component mixture, the assignments summed out: a potential Pyro evaluates chain by chain."""
    loc = pyro.sample("loc", dist.Normal(0.0, 3.0).expand([2]).to_event(1))
    with pyro.plate("data", len(y)):
        z = pyro.sample("z", dist.Categorical(torch.tensor([0.5, 0.5])))
        pyro.sample("y", dist.Normal(loc[z], 1.0), obs=y)


def normal_mean(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def _fit(model, seed=0, **method):
    settings = dict(num_samples=20, warmup=20, chains=2)
    settings.update(method)
    return ppgen.fit(model, {"y": DATA}, NUTS(**settings), seed=seed, progress=False)


def branching(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    scale = 1.0 if mu > 0 else 1.5  # a Python branch on a latent: Pyro's potential, chain by chain
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, scale), obs=y)


def test_chains_of_an_unrecordable_potential_run_apart():
    """``chain_method="auto"``: chains whose potential is Pyro's own, chain by chain, are not
    batched (each would wait for the deepest tree) but run apart, with the reason kept."""
    fit = _fit(branching, seed=1)
    assert fit.path["potential"] == "loop" and "control flow" in fit.path["reason"]
    assert fit.path["chains"] == ("parallel" if (os.cpu_count() or 1) > 1 else "sequential")
    for c in range(2):
        alone = _fit(branching, seed=1 + c, chains=1)
        assert torch.equal(fit.posterior["mu"][c], alone.posterior["mu"][0])


def test_auto_resolves_by_whether_chains_vectorise():
    many_cores = (os.cpu_count() or 1) > 1
    enumerated = Program.build(mixture, {"y": DATA})
    continuous = Program.build(normal_mean, {"y": DATA})
    assert chain_method(enumerated, NUTS(chains=2)) == "vectorized"  # its enumeration is recorded
    assert chain_method(continuous, NUTS(chains=2, potential="loop")) == ("parallel" if many_cores else "sequential")
    assert chain_method(enumerated, NUTS(chains=1)) == "vectorized"
    assert chain_method(continuous, NUTS(chains=4)) == "vectorized"
    assert chain_method(continuous, NUTS(chains=4, engine="pyro")) == "sequential"
    with pytest.raises(MethodError, match="chain_method"):
        NUTS(chain_method="threads")
    with pytest.raises(MethodError, match="engine='ppgen'"):
        NUTS(chain_method="vectorized", engine="pyro")


@pytest.mark.parametrize("model", [mixture, normal_mean])
def test_parallel_equals_sequential_equals_one_chain_runs(model):
    """Chain c of either method is the one-chain run with seed + c, draw for draw."""
    parallel = _fit(model, seed=3, chain_method="parallel")
    sequential = _fit(model, seed=3, chain_method="sequential")
    site = "loc" if model is mixture else "mu"
    assert parallel.posterior[site].shape[:2] == (2, 20)
    assert torch.equal(parallel.posterior[site], sequential.posterior[site])
    for key in parallel.sample_stats:
        assert torch.equal(parallel.sample_stats[key], sequential.sample_stats[key]), key
    for c in range(2):
        alone = _fit(model, seed=3 + c, chains=1)
        assert torch.equal(parallel.posterior[site][c], alone.posterior[site][0])
    assert set(parallel.timings) == {"compile", "sampling", "total"}
    assert parallel.to_arviz().posterior.sizes["chain"] == 2


def _fails_in_workers(y):
    if os.getpid() != PARENT:
        raise ValueError("bad value of 'mu' in a worker")
    normal_mean(y)


def _dies_in_workers(y):
    if os.getpid() != PARENT:
        os._exit(3)
    normal_mean(y)


def test_a_worker_error_is_raised_here_with_its_chain():
    with pytest.raises(ValueError, match="bad value of 'mu'") as info:
        _fit(_fails_in_workers, chain_method="parallel")
    assert any("chain 0" in note or "chain 1" in note for note in getattr(info.value, "__notes__", []))


def test_a_dead_worker_is_a_method_error():
    with pytest.raises(MethodError, match=r"worker process of chain \d died \(exit code 3\)"):
        _fit(_dies_in_workers, chain_method="parallel")


def test_spawned_workers_and_the_sequential_fallback(monkeypatch, caplog):
    """Without fork (or with CUDA initialised), workers are spawned and the program pickled;
    a program that does not pickle runs its chains one after another, saying why."""
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    spawned = _fit(normal_mean, seed=5, chain_method="parallel", num_samples=10, warmup=10)
    sequential = _fit(normal_mean, seed=5, chain_method="sequential", num_samples=10, warmup=10)
    assert torch.equal(spawned.posterior["mu"], sequential.posterior["mu"])

    scale = 1.0

    def closure(y):  # a local function: no pickle
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0 * scale))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    with caplog.at_level("WARNING", logger="ppgen"):
        fit = _fit(closure, seed=5, chain_method="parallel", num_samples=10, warmup=10)
    assert "cannot be sent to a spawned worker" in caplog.text
    assert torch.equal(fit.posterior["mu"], sequential.posterior["mu"])
