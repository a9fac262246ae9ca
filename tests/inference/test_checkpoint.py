"""SVI checkpoints: a killed or interrupted run resumes to the same result."""


import pytest
import torch

import ppgen
from ppgen.inference import SVI
from ppgen.models import ConjugateNormal

from .interrupted import stop_after_checkpoint

SCRIPT = """
import sys, torch, ppgen
from ppgen.inference import SVI
from ppgen.models import ConjugateNormal
torch.set_default_dtype(torch.float64)
data = torch.linspace(-1, 3, 30)
ppgen.fit(ConjugateNormal(), data, SVI(num_steps=200000, lr=0.01, lr_decay=1.0, checkpoint=sys.argv[1],
          checkpoint_every=25), seed=0, progress=False)
"""


# A constant rate (lr_decay=1): the runs here are extended beyond the steps they were
# started with, which a schedule that decays towards the last step does not allow.
def _method(path, steps):
    return SVI(num_steps=steps, lr=0.01, lr_decay=1.0, checkpoint=str(path), checkpoint_every=25)


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_resume_after_interruption_matches_uninterrupted_run(float64, tmp_path, how):
    path = tmp_path / "run.pt"
    stop_after_checkpoint(SCRIPT, path, how, settle=0.5)
    step = torch.load(path, weights_only=True)["state"]["step"]
    assert step > 0
    if how == "interrupt":
        assert step % 25 != 0 or step > 0  # written on Ctrl-C, at whatever step it reached
    total = step + 60
    data = torch.linspace(-1, 3, 30)
    resumed = ppgen.fit(ConjugateNormal(), data, _method(path, total), seed=0, progress=False)
    assert len(resumed.losses) == total
    straight = ppgen.fit(ConjugateNormal(), data, SVI(num_steps=total, lr=0.01, lr_decay=1.0), seed=0,
                         progress=False)
    assert resumed.losses == straight.losses
    for key in straight.params:
        assert torch.equal(resumed.params[key], straight.params[key])


def test_minibatch_run_resumes_to_the_same_result(tmp_path):
    """Epoch-wise minibatches (their permutation and position) are part of the checkpoint."""
    data = ppgen.models.VAE.example(seed=0)[1]
    path = tmp_path / "vae.pt"

    def run(steps, checkpoint):
        model = ppgen.models.VAE.example(seed=0)[0]
        method = SVI(num_steps=steps, lr=0.01, lr_decay=1.0, batch_size=24, checkpoint=checkpoint, checkpoint_every=5)
        fit = ppgen.fit(model, data, method, seed=3, progress=False)
        return model, fit

    whole, fit_whole = run(17, None)
    run(9, str(path))  # stops after 9 steps, mid-epoch (64 rows, 2 batches of 24 per epoch)
    resumed, fit_resumed = run(17, str(path))
    assert fit_resumed.losses == fit_whole.losses
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_minibatches_visit_every_datum_once_per_epoch():
    from ppgen.inference.program import Program
    from ppgen.inference.svi import Objective

    model, data = ppgen.models.VAE.example(seed=0)
    program = Program.build(model.model, model.data_kwargs(data), guide=model.guide, generative=model)
    objective = Objective(program, model.guide, None, program.kwargs, batch_size=20)
    state = {}
    epoch = torch.cat([objective._batch(state) for _ in range(len(data) // 20)])
    assert sorted(epoch.tolist()) == sorted(set(epoch.tolist())) and len(epoch) == 60
    first_of_next = objective._batch(state)  # 4 rows were left over: a new permutation starts
    assert state["batches"]["cursor"] == 20 and len(first_of_next) == 20


def test_a_checkpoint_of_another_seed_is_not_resumed(tmp_path):
    """Replicate runs sharing a checkpoint path: seed 1 must not pick up seed 0's run."""
    data = torch.linspace(-1, 3, 30)
    path = tmp_path / "run.pt"
    ppgen.fit(ConjugateNormal(), data, _method(path, 50), seed=0, progress=False)
    with pytest.raises(ppgen.PpgenError, match="different run"):
        ppgen.fit(ConjugateNormal(), data, _method(path, 100), seed=1, progress=False)
    resumed = ppgen.fit(ConjugateNormal(), data, _method(path, 100), seed=0, progress=False)
    straight = ppgen.fit(ConjugateNormal(), data, SVI(num_steps=100, lr=0.01, lr_decay=1.0), seed=0, progress=False)
    assert resumed.losses == straight.losses


MAP_SCRIPT = """
import sys, torch, ppgen
from ppgen.inference import MAP
from ppgen.models import GaussianMixture
torch.set_num_threads(1)
model, data = GaussianMixture.example(seed=0)
ppgen.fit(model, data, MAP(solver="gradient", num_steps=10**7, lr=0.01, lr_decay=1.0, checkpoint=sys.argv[1],
          checkpoint_every=20), seed=2, progress=False)
"""


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_gradient_map_resumes_after_kill_or_ctrl_c(tmp_path, how):
    """Gradient MAP (the training loop's other user of SVI's trainer): SIGKILL or Ctrl-C
    mid-run, then the resumed run equals an uninterrupted one, loss for loss."""
    from ppgen.inference import MAP
    from ppgen.models import GaussianMixture

    path = tmp_path / "map.pt"
    stop_after_checkpoint(MAP_SCRIPT, path, how)
    total = torch.load(path, weights_only=True)["state"]["step"] + 30

    def run(checkpoint):
        model, data = GaussianMixture.example(seed=0)
        return ppgen.fit(model, data, MAP(solver="gradient", num_steps=total, lr=0.01, lr_decay=1.0,
                                          checkpoint=checkpoint, checkpoint_every=20), seed=2, progress=False)

    resumed, straight = run(str(path)), run(None)
    assert resumed.losses == straight.losses and len(resumed.losses) == total
    for key in straight.params:
        assert torch.equal(resumed.params[key], straight.params[key]), key


def test_a_decaying_schedule_resumes_only_the_same_length(tmp_path):
    """SVI's default step size decays towards its last step: a run of another length is
    another run, never resumed into; the same length resumes (here: a finished run) to the
    uninterrupted result."""
    data = torch.linspace(-1, 3, 30)
    path = tmp_path / "run.pt"
    method = lambda steps: SVI(num_steps=steps, checkpoint=str(path), checkpoint_every=10)  # noqa: E731
    ppgen.fit(ConjugateNormal(), data, method(40), seed=0, progress=False)
    with pytest.raises(ppgen.PpgenError, match="different run"):
        ppgen.fit(ConjugateNormal(), data, method(80), seed=0, progress=False)
    resumed = ppgen.fit(ConjugateNormal(), data, method(40), seed=0, progress=False)
    straight = ppgen.fit(ConjugateNormal(), data, SVI(num_steps=40), seed=0, progress=False)
    assert resumed.losses == straight.losses
