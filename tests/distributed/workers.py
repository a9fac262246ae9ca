"""What each rank runs in tests/distributed (named by path in ppgen.distributed.local.spawn).

Each function builds its models after ``torch.manual_seed(0)``, as the test
process does for its one-process references, so both start from the same weights.
"""

import os
import shutil
import signal

import torch

import ppgen
from ppgen.errors import CheckpointError, DataError
from ppgen.inference import MAP, SVI, Adversarial
from ppgen.models.diffusion import DDPM
from ppgen.models.flows import NormalizingFlow
from ppgen.models.gan import GAN
from ppgen.models.mixture import GaussianMixture
from ppgen.models.vae import VAE

#: the settings shared by the workers and the tests' one-process references
FLOW = MAP(num_steps=6, batch_size=64, lr=0.01)
GMM = MAP(num_steps=6, batch_size=31, lr=0.05, solver="gradient")  # 31 rows: shards of 16 and 15
GAN_METHOD = Adversarial(num_steps=6, batch_size=10, loss="wasserstein", discriminator_steps=2,
                         lr_generator=1e-3, lr_discriminator=1e-3)
VAE_STEPS, VAE_CHECKPOINT_EVERY, VAE_KILL_AT = 300, 100, 250


def vae_method(checkpoint=None):
    return SVI(num_steps=VAE_STEPS, batch_size=16, lr=0.01, checkpoint=checkpoint,
               checkpoint_every=VAE_CHECKPOINT_EVERY)


def flow():
    torch.manual_seed(0)
    return NormalizingFlow.example()


def gmm():
    torch.manual_seed(0)
    return GaussianMixture.example()


def gan():
    torch.manual_seed(0)
    model, data = GAN.example()
    return GAN(data_dim=2, generator_hidden=(16, 16), discriminator_hidden=(16,), maxout_pieces=2, pack=2,
               batch_norm=False), data


def vae():
    torch.manual_seed(0)
    return VAE.example()


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def exact_and_killed(folder):
    """The float64 exactness runs, an uninterrupted VAE run, then a VAE run that dies at step VAE_KILL_AT."""
    torch.set_default_dtype(torch.float64)
    out = {}
    for name, (model, data), method in (("flow", flow(), FLOW), ("gmm", gmm(), GMM), ("gan", gan(), GAN_METHOD)):
        fit = ppgen.fit(model, data, method, seed=3, progress=False, distributed=True)
        out[name] = {"losses": fit.losses, "state": state(model), "params": dict(fit.params or {})}
    torch.set_default_dtype(torch.float32)
    model, data = vae()
    fit = ppgen.fit(model, data, vae_method(os.path.join(folder, "whole.pt")), seed=5, progress=False,
                    distributed=True)
    out["vae"] = {"losses": fit.losses, "state": state(model),
                  "posterior": {k: v.clone() for k, v in fit.posterior.items()}}
    rank = torch.distributed.get_rank()
    model, data = vae()
    try:
        ppgen.fit(model, data[rank::2], vae_method(), seed=5, progress=False, distributed=True)
    except DataError as exc:  # each rank given its own half: refused on both
        out["data_error"] = str(exc)
    torch.save(out, os.path.join(folder, f"exact{rank}.pt"))
    torch.distributed.barrier()

    from ppgen.inference.data_parallel import _ShardedObjective

    loss = _ShardedObjective.loss

    def dying(self, kwargs=None, differentiable=True, state=None, capture=False):
        if state is not None and state["step"] == VAE_KILL_AT:
            os._exit(17)  # as a killed process: no clean-up, no final checkpoint
        return loss(self, kwargs, differentiable, state, capture)

    _ShardedObjective.loss = dying
    model, data = vae()
    ppgen.fit(model, data, vae_method(os.path.join(folder, "killed.pt")), seed=5, progress=False, distributed=True)


def resumed_and_ddpm(folder):
    """The killed VAE run resumed from its checkpoint (a copy kept as it was); a few DDPM steps."""
    rank = torch.distributed.get_rank()
    if rank == 0:
        shutil.copy(os.path.join(folder, "killed.pt"), os.path.join(folder, "as-killed.pt"))
        shutil.copy(os.path.join(folder, "killed.pt"), os.path.join(folder, "seen-by-0.pt"))
    torch.distributed.barrier()
    model, data = vae()
    checkpoint_error = None
    try:  # as two machines without shared storage: rank 1 finds no checkpoint
        ppgen.fit(model, data, vae_method(os.path.join(folder, f"seen-by-{rank}.pt")), seed=5, progress=False,
                  distributed=True)
    except CheckpointError as exc:
        checkpoint_error = str(exc)
    model, data = vae()
    fit = ppgen.fit(model, data, vae_method(os.path.join(folder, "killed.pt")), seed=5, progress=False,
                    distributed=True)
    out = {"vae": {"losses": fit.losses, "state": state(model)}, "checkpoint_error": checkpoint_error}
    torch.manual_seed(0)
    model, data = DDPM.example()
    fit = ppgen.fit(model, data, SVI(num_steps=5, batch_size=64, lr=1e-3), seed=1, progress=False,
                    distributed=True)
    out["ddpm"] = {"losses": fit.losses, "state": state(model)}
    torch.manual_seed(0)
    model, data = GAN.example()  # batch norm in the generator: rank 0's statistics are kept
    ppgen.fit(model, data, Adversarial(num_steps=3, batch_size=8), seed=1, progress=False, distributed=True)
    out["gan_batch_norm"] = state(model)
    out["interrupt"] = _interrupted(folder)
    return out


def _interrupted(folder):
    """Ctrl-C (SIGINT) reaches rank 1 alone during step 7: both ranks stop after step 8, with a checkpoint."""
    from ppgen.inference.data_parallel import _ShardedObjective

    loss, rank = _ShardedObjective.loss, torch.distributed.get_rank()

    def interrupted(self, kwargs=None, differentiable=True, state=None, capture=False):
        if state is not None and state["step"] == 7 and rank == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return loss(self, kwargs, differentiable, state, capture)

    _ShardedObjective.loss = interrupted
    model, data = gmm()
    try:
        ppgen.fit(model, data, SVI(num_steps=50, batch_size=30, checkpoint=os.path.join(folder, "ctrl-c.pt")),
                  seed=0, progress=False, distributed=True)
        return "not interrupted"
    except KeyboardInterrupt:
        return "interrupted"
    finally:
        _ShardedObjective.loss = loss


def ddpm_losses(steps):
    """A longer data-parallel DDPM run (the loss-curve comparison)."""
    torch.manual_seed(0)
    model, data = DDPM.example()
    return ppgen.fit(model, data, SVI(num_steps=steps, batch_size=64, lr=2e-3), seed=1, progress=False,
                     distributed=True).losses
