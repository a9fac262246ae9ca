"""MCMC chains over ranks and sharded batched inference, on two gloo processes and on one.

One spawn of two CPU processes (gloo on 127.0.0.1) covers: NUTS with 4 chains over
2 ranks (same result on every rank, a posterior within Monte Carlo error of the
closed form, 4 chains in ArviZ), split-invariant seeding, errors raised on every
rank, and ``map_rows`` over a Bayesian network's evidence table and an HMM's ragged
sequences, each equal to the single-process answer.
"""

import dataclasses
import datetime
import math
import socket
import sys
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

import ppgen
from ppgen.diagnostics.summary import without_numba
from ppgen.distributed.sharding import log_prob_rows, map_rows, query_rows, rank_and_world, shard_bounds, shard_rows
from ppgen.errors import DataError, MethodError
from ppgen.inference import NUTS
from ppgen.inference.mcmc.ranks import run_mcmc_over_ranks
from ppgen.inference.mcmc.sample import run_mcmc
from ppgen.inference.program import Program
from ppgen.models.bayesnet import BayesianNetwork
from ppgen.models.hmm.families import CategoricalHMM

# The normal-normal model: mu ~ N(M0, S0^2), y_i ~ N(mu, SIGMA^2).
M0, S0, SIGMA = 1.0, 2.0, 1.5
Y = torch.tensor([2.1, 0.3, 1.7, 3.2, 2.5, 1.1, 0.9, 2.8, 1.4, 2.2, 3.0, 0.6], dtype=torch.float64)
POST_VAR = 1.0 / (1.0 / S0**2 + len(Y) / SIGMA**2)
POST_MEAN = POST_VAR * (M0 / S0**2 + float(Y.sum()) / SIGMA**2)


def normal_model(y):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(M0, dtype=y.dtype), S0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, SIGMA), obs=y)


def _program():
    return Program.build(normal_model, {"y": Y})


def _evidence():
    """37 rows of asia evidence (an uneven split over 2 ranks), some entries missing, index from 100."""
    bn = BayesianNetwork.asia()
    rows = bn.sample(37, generator=torch.Generator().manual_seed(4))
    frame = pd.DataFrame({v: [bn.states[v][int(c)] for c in rows[:, i]] for i, v in enumerate(bn.variables)},
                         index=range(100, 137), dtype=object)
    hide = np.random.default_rng(0).random(frame.shape) < 0.4
    frame = frame.mask(hide, None).drop(columns=["lung", "tub"])
    return bn, frame


def _hmm():
    model, sequences = CategoricalHMM.example(seed=3)
    model.set_params({"initial": torch.tensor([0.7, 0.3]),
                      "transition": torch.tensor([[0.9, 0.1], [0.2, 0.8]]),
                      "emission": torch.tensor([[0.6, 0.3, 0.05, 0.05], [0.05, 0.1, 0.35, 0.5]])})
    return model, sequences


# ----------------------------------------------------------------------------- two ranks
def _worker(rank, world, port, out):
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                             timeout=datetime.timedelta(seconds=60))
    try:
        assert rank_and_world() == (rank, world)
        _check_mcmc(rank, out)
        _check_errors(rank)
        _check_bayesnet()
        _check_hmm()
        # Both ranks leave together: a rank that tears gloo down while its peer's last
        # messages are in flight can abort the peer at exit (SIGABRT, seen once in CI).
        tdist.barrier()
    finally:
        tdist.destroy_process_group()


def _check_mcmc(rank, out):
    program = _program()
    method = NUTS(num_samples=250, warmup=150, chains=4)
    fit = ppgen.fit(normal_model, {"y": Y}, method, seed=7, progress=False, distributed=True)
    mu = fit.posterior["mu"]
    assert mu.shape == (4, 250) and fit.sample_stats["diverging"].shape == (4, 250)
    # Rank r ran chains [2r, 2r + 2) with seed 7 + 2r: rank 1's chains are not rank 0's.
    assert not torch.equal(mu[:2], mu[2:])
    torch.save({"mu": mu, "energy": fit.sample_stats["energy"]}, Path(out) / f"rank{rank}.pt")
    idata = fit.to_arviz()
    assert idata.posterior.sizes["chain"] == 4 and idata.posterior.sizes["draw"] == 250
    assert idata.sample_stats.sizes["chain"] == 4
    # The closed-form posterior mean and sd, within 4 Monte Carlo standard errors of all 4 chains' draws.
    with without_numba():
        mcse_mean = float(az.mcse(idata, var_names=["mu"])["mu"])
        mcse_sd = float(az.mcse(idata, var_names=["mu"], method="sd")["mu"])
    assert abs(float(mu.mean()) - POST_MEAN) < 4 * mcse_mean, (float(mu.mean()), POST_MEAN, mcse_mean)
    assert abs(float(mu.std()) - math.sqrt(POST_VAR)) < 4 * mcse_sd, (float(mu.std()), POST_VAR, mcse_sd)
    # per_chain=True: chain c is the one-chain run with seed 7 + c, however the chains are split.
    # engine="pyro" always seeds chain c with 7 + c, so its draws are the single-process ones.
    for short, per_chain in ((NUTS(num_samples=20, warmup=20, chains=2), True),
                             (NUTS(num_samples=10, warmup=10, chains=2, engine="pyro"), False)):
        split, _, _, _ = run_mcmc_over_ranks(program, short, seed=7, progress=False, per_chain=per_chain)
        alone, _, _, _ = run_mcmc(program, dataclasses.replace(short, chains=1), seed=7 + rank, progress=False)
        assert torch.equal(split["mu"][rank], alone["mu"][0]), short.engine


def _check_errors(rank):
    with pytest.raises(MethodError, match="fewer chains than the 2 ranks"):
        run_mcmc_over_ranks(_program(), NUTS(num_samples=5, warmup=5, chains=1), seed=0, progress=False)
    with pytest.raises(MethodError, match=r"ranks \[1\] have a different seed"):
        run_mcmc_over_ranks(_program(), NUTS(num_samples=5, warmup=5, chains=2), seed=rank, progress=False)

    def fails_on_rank_1(rows):
        if rank == 1:
            raise DataError("bad rows on rank 1")
        return rows * 2

    # rank 1 re-raises its own error; rank 0 raises the same class, naming rank 1.
    with pytest.raises(DataError, match="rank 1"):
        map_rows(fails_on_rank_1, torch.arange(10.0))
    # One row for two ranks: rank 1 has nothing to do, and still receives rank 0's result.
    one = pd.DataFrame({"x": [3.0]}, index=[42])
    pd.testing.assert_frame_equal(map_rows(lambda rows: rows * 2, one), one * 2)


def _check_bayesnet():
    bn, evidence = _evidence()
    expected = bn.query(["lung", "tub"], evidence=evidence)
    for batch_size in (None, 5):
        got = query_rows(bn, ["lung", "tub"], evidence, batch_size=batch_size)
        assert list(got) == ["lung", "tub"]
        for name in got:
            pd.testing.assert_frame_equal(got[name], expected[name], check_exact=False, rtol=1e-12)
    joint = map_rows(lambda rows: bn.query(["lung", "tub"], evidence=rows, joint=True), evidence)
    pd.testing.assert_frame_equal(joint, bn.query(["lung", "tub"], evidence=evidence, joint=True),
                                  check_exact=False, rtol=1e-12)


def _check_hmm():
    model, sequences = _hmm()
    expected = model.log_prob(sequences)
    unpadded = sequences.unpad()
    # A Sequences, a list of ragged sequences, and a padded tensor with lengths all shard alike.
    for got in (log_prob_rows(model, sequences), log_prob_rows(model, unpadded),
                log_prob_rows(model, sequences.padded, sequences.lengths, batch_size=3)):
        assert got.shape == (20,)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # Per-step outputs of ragged shards are padded back to one length (posterior_states pads with 0).
    gamma = map_rows(model.posterior_states, sequences, pad=0.0)
    torch.testing.assert_close(gamma, model.posterior_states(sequences), rtol=1e-5, atol=1e-6)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks(tmp_path, monkeypatch):
    # pytest imports this file under --import-mode=importlib, a name the spawned processes
    # cannot import; they import it as "test_ranks" from this folder (spawn passes sys.path on).
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import test_ranks

    try:
        mp.spawn(test_ranks._worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    finally:
        sys.modules.pop("test_ranks", None)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key in ("mu", "energy"):
        assert torch.equal(ranks[0][key], ranks[1][key]), key


# ----------------------------------------------------------------------------- one process
def test_one_process_is_the_plain_computation():
    assert rank_and_world() == (0, 1)
    program = _program()
    method = NUTS(num_samples=20, warmup=20, chains=2)
    ours = run_mcmc_over_ranks(program, method, seed=3, progress=False)
    plain = run_mcmc(program, method, seed=3, progress=False)
    assert torch.equal(ours[0]["mu"], plain[0]["mu"]) and torch.equal(ours[1]["energy"], plain[1]["energy"])
    bn, evidence = _evidence()
    got = query_rows(bn, "lung", evidence, batch_size=10)
    pd.testing.assert_frame_equal(got["lung"], bn.query("lung", evidence=evidence)["lung"],
                                  check_exact=False, rtol=1e-12)
    table = torch.arange(12.0).reshape(6, 2)
    assert torch.equal(shard_rows(table), table)
    assert torch.equal(map_rows(lambda r: r.sum(1), table, batch_size=4), table.sum(1))
    out = map_rows(lambda r: {"a": r.numpy(), "b": (list(r[:, 0].tolist()),)}, table, batch_size=5)
    assert np.array_equal(out["a"], table.numpy()) and out["b"] == (table[:, 0].tolist(),)


@pytest.mark.parametrize("n,world", [(10, 3), (2, 4), (7, 7), (0, 2)])
def test_shard_bounds_cover_the_rows_evenly(n, world):
    bounds = [shard_bounds(n, r, world) for r in range(world)]
    sizes = [stop - start for start, stop in bounds]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(bounds[r][1] == bounds[r + 1][0] for r in range(world - 1))
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_bad_tables_and_results_raise_data_errors():
    with pytest.raises(DataError, match="no rows"):
        map_rows(lambda r: r, torch.zeros(0, 3))
    with pytest.raises(DataError, match="0-dimensional"):
        map_rows(lambda r: r, torch.tensor(1.0))
    with pytest.raises(DataError, match="batch_size"):
        map_rows(lambda r: r, torch.zeros(4), batch_size=0)
    with pytest.raises(DataError, match="same number of rows"):
        map_rows(lambda r: r, {"a": torch.zeros(3), "b": torch.zeros(4)})
    with pytest.raises(DataError, match="one result per row"):
        map_rows(lambda r: r.sum(), torch.zeros(4), batch_size=2)
    with pytest.raises(DataError, match="pad="):
        map_rows(lambda r: torch.zeros(len(r), len(r)), torch.zeros(5), batch_size=3)
