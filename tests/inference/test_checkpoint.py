"""SVI checkpoints: a killed or interrupted run resumes to the same result."""

import signal
import subprocess
import sys
import time

import pytest
import torch

import ppgen
from ppgen.inference import SVI
from ppgen.models import ConjugateNormal

SCRIPT = """
import sys, torch, ppgen
from ppgen.inference import SVI
from ppgen.models import ConjugateNormal
torch.set_default_dtype(torch.float64)
data = torch.linspace(-1, 3, 30)
ppgen.fit(ConjugateNormal(), data, SVI(num_steps=200000, lr=0.01, checkpoint=sys.argv[1],
          checkpoint_every=25), seed=0, progress=False)
"""


def _method(path, steps):
    return SVI(num_steps=steps, lr=0.01, checkpoint=str(path), checkpoint_every=25)


def _start(path):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(path)], stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "no checkpoint written"
        time.sleep(0.05)
    time.sleep(0.5)
    return proc


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_resume_after_interruption_matches_uninterrupted_run(float64, tmp_path, how):
    path = tmp_path / "run.pt"
    proc = _start(path)
    proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGINT)
    proc.wait(timeout=60)
    step = torch.load(path, weights_only=True)["state"]["step"]
    assert step > 0
    if how == "interrupt":
        assert step % 25 != 0 or step > 0  # written on Ctrl-C, at whatever step it reached
    total = step + 60
    data = torch.linspace(-1, 3, 30)
    resumed = ppgen.fit(ConjugateNormal(), data, _method(path, total), seed=0, progress=False)
    assert len(resumed.losses) == total
    straight = ppgen.fit(ConjugateNormal(), data, SVI(num_steps=total, lr=0.01), seed=0,
                         progress=False)
    assert resumed.losses == straight.losses
    for key in straight.params:
        assert torch.equal(resumed.params[key], straight.params[key])
