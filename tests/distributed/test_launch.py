"""Slow distributed runs: ``ppgen fit`` under torchrun, and a DDPM loss curve on 2 ranks."""

import math
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import ppgen
from ppgen.distributed.local import free_port, spawn
from ppgen.inference import SVI
from ppgen.inference.checkpoint import safe_load
from ppgen.models.diffusion import DDPM

WORKERS = str(pathlib.Path(__file__).with_name("workers.py"))


def _torchrun(out, steps):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), "-m", "ppgen.cli", "fit", "GaussianMixture", "--data", "faithful",
               "--param", "n_components=2", "--method", "svi", "--num-steps", str(steps), "--batch-size", "64",
               "--checkpoint", str(out / "run.ckpt"), "--out", str(out), "--no-progress"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_ppgen_fit_under_torchrun(tmp_path):
    """Two ranks, one set of outputs (rank 0's), a 2-rank checkpoint; a second command resumes it."""
    done = _torchrun(tmp_path, 60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("GaussianMixture fitted by svi") == 1
    for name in ("posterior.nc", "summary.csv", "fit.pt", "loss.png"):
        assert (tmp_path / name).is_file()
    saved = safe_load(tmp_path / "run.ckpt", "checkpoint")
    assert saved["world_size"] == 2 and saved["state"]["step"] == 60
    first = saved["state"]["losses"]
    again = _torchrun(tmp_path, 90)  # num_steps may grow: resumes at step 60
    assert again.returncode == 0, again.stderr[-3000:]
    saved = safe_load(tmp_path / "run.ckpt", "checkpoint")
    assert saved["state"]["step"] == 90 and saved["state"]["losses"][:60] == first
    assert len(ppgen.load(tmp_path / "fit.pt").losses) == 90


@pytest.mark.slow
def test_ddpm_loss_curve_on_two_ranks():
    """The noise-prediction loss of a DDPM trained on 2 ranks against one process, window by window
    (200 steps each), within 4 standard errors of the difference of the window means."""
    steps = 1000
    two = torch.tensor(spawn(f"{WORKERS}:ddpm_losses", 2, steps)[0])
    torch.manual_seed(0)
    model, data = DDPM.example()
    one = torch.tensor(ppgen.fit(model, data, SVI(num_steps=steps, batch_size=64, lr=2e-3), seed=1,
                                 progress=False).losses)
    for a, b in zip(one.split(200)[1:], two.split(200)[1:]):
        error = math.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(float(a.mean() - b.mean())) < 4 * error, (float(a.mean()), float(b.mean()), error)
    assert float(two[-200:].mean()) < 0.8 * float(two[:20].mean())
