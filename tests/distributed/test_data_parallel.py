"""Data-parallel training over 2 gloo processes on 127.0.0.1 against one process.

Two process groups are spawned for the whole module (about 5 s each here):
the first runs the float64 exactness fits, an uninterrupted checkpointed VAE
run, and the same VAE run killed (``os._exit``) after its step-200
checkpoint; the second resumes the killed run in new processes and trains a
DDPM for a few steps. The one-process references run in this process.
"""

import math
import pathlib

import pytest
import torch
from torch.multiprocessing import ProcessExitedException

import ppgen
from ppgen.distributed.local import resolve, spawn
from ppgen.errors import MethodError
from ppgen.inference import SVI, Exact
from ppgen.inference.checkpoint import safe_load

WORKERS = str(pathlib.Path(__file__).with_name("workers.py"))
W = resolve(f"{WORKERS}:vae").__globals__  # the workers module's names (settings, builders)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data_parallel")
    with pytest.raises(ProcessExitedException, match="exit code 17"):
        spawn(f"{WORKERS}:exact_and_killed", 2, str(folder))
    first = [torch.load(folder / f"exact{r}.pt", weights_only=True) for r in range(2)]
    second = spawn(f"{WORKERS}:resumed_and_ddpm", 2, str(folder))
    return folder, first, second


def _assert_states_close(got, want, rtol, atol):
    assert got.keys() == want.keys()
    for key, value in want.items():
        if value.is_floating_point():
            torch.testing.assert_close(got[key], value, rtol=rtol, atol=atol, msg=key)
        else:
            assert torch.equal(got[key], value), key


@pytest.mark.parametrize("name", ["flow", "gmm", "gan"])
def test_two_ranks_take_the_union_batch_step(runs, float64, name):
    """Flow and GMM by gradient MAP (the GMM's prior term is not scaled with the batch, so a wrong
    gradient weighting would show even through Adam), a WGAN-GP by Adversarial: 6 steps on 2 ranks
    equal 6 steps of one process on the union batches, in float64."""
    _, first, _ = runs
    model, data = W[name]()
    method = {"flow": W["FLOW"], "gmm": W["GMM"], "gan": W["GAN_METHOD"]}[name]
    fit = ppgen.fit(model, data, method, seed=3, progress=False)
    want = W["state"](model)
    for rank in range(2):
        torch.testing.assert_close(torch.tensor(first[rank][name]["losses"]), torch.tensor(fit.losses),
                                   rtol=1e-10, atol=1e-10)
        _assert_states_close(first[rank][name]["state"], want, rtol=1e-9, atol=1e-11)
        for key, value in fit.params.items():
            torch.testing.assert_close(first[rank][name]["params"][key], value, rtol=1e-9, atol=1e-11)
    assert abs(fit.losses[-1] - fit.losses[0]) > 1e-3 * abs(fit.losses[0])  # the parameters moved


def test_every_rank_returns_the_same_fit(runs):
    _, first, second = runs
    assert first[0]["vae"]["losses"] == first[1]["vae"]["losses"]
    _assert_states_close(first[1]["vae"]["state"], first[0]["vae"]["state"], rtol=0, atol=0)
    assert second[0]["ddpm"]["losses"] == second[1]["ddpm"]["losses"]
    assert all(math.isfinite(v) for v in second[0]["ddpm"]["losses"])
    _assert_states_close(second[1]["ddpm"]["state"], second[0]["ddpm"]["state"], rtol=0, atol=0)


def test_gan_with_batch_norm_ends_identical_on_all_ranks(runs):
    _, _, second = runs
    assert any("running_mean" in key for key in second[0]["gan_batch_norm"])
    _assert_states_close(second[1]["gan_batch_norm"], second[0]["gan_batch_norm"], rtol=0, atol=0)


def test_ctrl_c_on_one_rank_stops_all_after_the_same_step(runs):
    folder, _, second = runs
    assert [second[rank]["interrupt"] for rank in range(2)] == ["interrupted", "interrupted"]
    saved = safe_load(folder / "ctrl-c.pt", "checkpoint")
    assert saved["state"]["step"] == 8 and len(saved["state"]["losses"]) == 8


def test_ranks_that_see_different_checkpoints_stop(runs):
    _, _, second = runs
    for rank in range(2):
        assert "different checkpoints (rank 0: step 200, rank 1: none)" in second[rank]["checkpoint_error"]


def test_ranks_given_different_data_are_refused(runs):
    _, first, _ = runs
    for rank in range(2):
        assert "different data (rank 0: 32 rows" in first[rank]["data_error"]


def test_killed_run_resumes_on_all_ranks(runs):
    """The run killed at step 250 left its step-200 checkpoint (rank 0's file, both ranks' RNG
    states); new processes resume from it and finish exactly as the uninterrupted run."""
    folder, first, second = runs
    saved = safe_load(folder / "as-killed.pt", "checkpoint")
    assert saved["state"]["step"] == 200 and saved["world_size"] == 2 and len(saved["rank_rng"]) == 2
    assert not torch.equal(saved["rank_rng"][0], saved["rank_rng"][1])  # independent Monte Carlo streams
    for rank in range(2):
        assert second[rank]["vae"]["losses"] == first[0]["vae"]["losses"]
        _assert_states_close(second[rank]["vae"]["state"], first[0]["vae"]["state"], rtol=0, atol=0)


def test_loss_curve_agrees_with_one_process(runs):
    """Mean loss over each 100-step window of the 2-rank and the 1-process VAE runs (batch 16,
    different Monte Carlo draws) within 4 standard errors of their difference (first window
    excluded: it is the steep start, where the spread measures the trend, not the noise)."""
    _, first, _ = runs
    model, data = W["vae"]()
    one = torch.tensor(ppgen.fit(model, data, W["vae_method"](), seed=5, progress=False).losses)
    two = torch.tensor(first[0]["vae"]["losses"])
    assert len(one) == len(two) == W["VAE_STEPS"]
    for a, b in zip(one.split(100)[1:], two.split(100)[1:]):
        error = math.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(float(a.mean() - b.mean())) < 4 * error, (float(a.mean()), float(b.mean()), error)
    assert float(two[-100:].mean()) < float(two[:10].mean()) - 50  # it trained


@pytest.fixture
def group_of_one(monkeypatch):
    """A gloo group of one process (this one), set up by fit through the env:// variables."""
    from ppgen.distributed.local import free_port

    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    yield
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def test_world_of_one_is_the_plain_run(group_of_one):
    model, data = W["vae"]()
    method = SVI(num_steps=30, batch_size=16)
    fit = ppgen.fit(model, data, method, seed=2, progress=False, distributed=True)
    assert torch.distributed.get_world_size() == 1
    reference, _ = W["vae"]()
    plain = ppgen.fit(reference, data, method, seed=2, progress=False)
    assert fit.losses == plain.losses


def test_bad_requests_are_refused(monkeypatch, group_of_one):
    model, data = W["gmm"]()
    with pytest.raises(MethodError, match="Exact.*not supported"):
        ppgen.fit(model, data, Exact(), distributed=True)
    with pytest.raises(MethodError, match="EM solver.*solver='gradient'"):
        ppgen.fit(model, data, "map", distributed=True)
    with pytest.raises(MethodError, match="plain Pyro program cannot be sharded"):
        ppgen.fit(lambda data: None, {"data": torch.zeros(3)}, SVI(num_steps=1), distributed=True)
    with pytest.raises(MethodError, match="larger than the 120 data points"):
        ppgen.fit(model, data, SVI(num_steps=1, batch_size=121), distributed=True)


def test_without_a_group_the_error_shows_torchrun(monkeypatch):
    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    model, data = W["vae"]()
    with pytest.raises(MethodError, match="torchrun --nproc-per-node"):
        ppgen.fit(model, data, SVI(num_steps=1), distributed=True)


NEURAL = [("Autoencoder", "map"), ("DenoisingAutoencoder", "map"), ("VAE", "svi"), ("ConditionalVAE", "svi"),
          ("ConvVAE", "svi"), ("DDPM", "svi"), ("RealNVP", "svi"), ("MAF", "map"), ("NeuralSplineFlow", "svi"),
          ("BernoulliRBM", "map"), ("GAN", "adversarial")]


def test_every_neural_family_trains_distributed(group_of_one):
    """In a group of one, distributed=True is the plain run, loss for loss, for every neural family."""
    from ppgen import registry
    from ppgen.inference import MAP, Adversarial

    methods = {"svi": SVI(num_steps=3, batch_size=8), "map": MAP(num_steps=3, batch_size=8, solver="gradient"),
               "adversarial": Adversarial(num_steps=3, batch_size=4)}
    for name, method in NEURAL:
        losses = []
        for distributed in (True, False):
            torch.manual_seed(0)
            model, data = registry.model_class(name).example()
            losses.append(ppgen.fit(model, data, methods[method], progress=False, distributed=distributed).losses)
        assert len(losses[0]) == 3 and losses[0] == losses[1], name
