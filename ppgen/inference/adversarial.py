"""Adversarial training of GANs: the loop behind ``ppgen.fit(gan, x, Adversarial(...))``.

The model is used only through the protocol :class:`ppgen.model.AdversarialPair`:
``latent_dim``, ``pack``, ``generate(z)`` (the generator network, the one the
Pyro program's ``x = G(z)`` site calls), ``packed(x)`` (samples as packed
discriminator inputs), ``critic(packed)`` (logits, ``(B,)``), and
``generator_parameters()`` / ``discriminator_parameters()``.

Each step draws ``z`` from :math:`N(0, I)`, the prior of ``model()``, and calls
the same generator network directly rather than tracing the Pyro program, so a
step costs what a hand-written PyTorch loop costs (``benchmarks/bench_gan.py``
compares it with the DCGAN tutorial's loop over the same networks). The
discriminator steps
first, on a minibatch of real data and on ``G(z)`` (detached); the generator
then steps on the same ``G(z)`` scored by the updated discriminator (with
``discriminator_steps > 1`` the earlier discriminator steps draw their own
fakes without a graph). Real and fake packs go through the discriminator in one
call. The generator's gradient is taken with respect to its own parameters
only, so no discriminator weight gradients are computed in that step.

All randomness (the order of the data, an epoch-wise permutation; ``z``; the
interpolation weights of the gradient penalty) comes from one generator seeded
with ``seed``, so a run is reproducible, and a checkpoint (both networks with
their batch-norm statistics, both Adam states, the generator state, the
position in the epoch, the losses) resumes it bit for bit on CPU.

Over ranks (``fit(..., distributed=True)``): a step of the single-process loop uses
``n`` discriminator inputs (``batch_size``, each of ``pack`` samples): ``n`` packs of real data from the epoch's
permutation, ``n * pack`` codes :math:`z \\sim N(0, I)`, and for WGAN-GP ``n``
interpolation weights, all drawn from one generator seeded with ``seed``. With
``W`` ranks every rank draws exactly those (the same generator, the same
calls, so the same values) and keeps its chunk: rank ``r`` the ``r``-th of ``W``
consecutive chunks of ``c_r`` packs, :math:`\\sum_r c_r = n`. Both losses are
means over discriminator inputs, so the weighted sum of the ranks' gradients

.. math::
    \\sum_r \\frac{c_r}{n} \\nabla \\Big(\\frac{1}{c_r} \\sum_{j \\in C_r} \\ell_j\\Big)
        = \\nabla \\frac1n \\sum_{j=1}^{n} \\ell_j

is the single-process gradient, taken with one all-reduce per discriminator
step and one per generator step. A ``W``-rank run therefore equals the
one-process run with the same ``seed`` to float rounding, for networks without
batch normalisation; with it, each rank normalises over its own chunk (as
DistributedDataParallel without SyncBatchNorm) and the running statistics of
rank 0 are the ones kept (broadcast before every checkpoint and at the end).

No per-rank randomness is used, so the checkpoint is the single-process one:
rank 0 writes it, every rank resumes from it, on any number of ranks.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .. import distributed as group
from ..errors import MethodError
from ..model import AdversarialPair
from .data_parallel import Ranks, check_same_data, shard_sizes
from .method import Method, RunContext, check_positive_int
from .program import Program
from .result import Fit
from .training import Checkpoints, train

log = logging.getLogger("ppgen")

#: steps between reading the recorded losses back (and checking that they are finite).
FLUSH_EVERY = 100


ADVERSARIAL_LOSSES = ("nonsaturating", "wasserstein")


@dataclass(frozen=True)
class Adversarial(Method):
    """Adversarial training of a GAN's generator against its discriminator.

    Each step takes ``discriminator_steps`` Adam steps on the discriminator, then
    one on the generator. With ``loss="nonsaturating"`` (Goodfellow et al. 2014)
    the discriminator minimises the logistic loss
    :math:`E[\\mathrm{softplus}(-D(x))] + E[\\mathrm{softplus}(D(G(z)))]` and the
    generator :math:`E[\\mathrm{softplus}(-D(G(z)))] = -E[\\log \\sigma(D(G(z)))]`.
    With ``loss="wasserstein"`` (WGAN-GP, Gulrajani et al. 2017) the critic
    minimises :math:`E[D(G(z))] - E[D(x)] + \\lambda E[(\\|\\nabla D(\\hat x)\\|_2 -
    1)^2]` at random interpolates :math:`\\hat x = \\epsilon x + (1 - \\epsilon) G(z)`,
    :math:`\\epsilon \\sim U(0, 1)` per discriminator input, and the generator
    :math:`-E[D(G(z))]`. With packing (the model's ``pack = m``) every expectation
    is over packed inputs of ``m`` samples, the interpolates and gradient norms too.

    Parameters
    ----------
    num_steps : int
        Generator updates (it may grow between runs that resume a checkpoint).
    batch_size : int
        Discriminator inputs per step, each of ``pack`` samples (as PacGAN): a
        step uses ``batch_size * pack`` data points and as many generated ones.
    loss : {"nonsaturating", "wasserstein"}
    gradient_penalty : float
        :math:`\\lambda` of WGAN-GP (``loss="wasserstein"`` only).
    discriminator_steps : int
        Discriminator updates per generator update (5 is usual for WGAN-GP).
    lr_generator, lr_discriminator : float
        Adam's step sizes; different ones give the two-timescale rule (TTUR,
        Heusel et al. 2017).
    lr_decay : float
        Both step sizes decay geometrically to ``lr * lr_decay`` at step
        ``num_steps`` (as ``SVI``'s); with ``lr_decay < 1`` the schedule depends on
        ``num_steps``, so a run extended from a checkpoint to more steps is not the
        longer uninterrupted run (one resumed to the same ``num_steps`` is).
    betas : (float, float)
        Adam's moment decays, shared by both players.
    checkpoint : str, optional
        File written atomically every ``checkpoint_every`` steps, at the end and
        on Ctrl-C; a later run with the same settings resumes from it
        (``resume=True``) and gives the uninterrupted result.
    """

    num_steps: int = 10000
    batch_size: int = 64
    loss: str = "nonsaturating"
    gradient_penalty: float = 10.0
    discriminator_steps: int = 1
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    lr_decay: float = 1.0
    betas: Any = (0.5, 0.999)
    checkpoint: str | None = None
    checkpoint_every: int = 1000
    resume: bool = True
    name: ClassVar[str] = "adversarial"
    options: ClassVar[dict[str, str]] = {"num_steps": "num_steps", "batch_size": "batch_size",
                                         "checkpoint": "checkpoint"}

    def __post_init__(self) -> None:
        owner = "Adversarial"
        check_positive_int(owner, num_steps=self.num_steps, batch_size=self.batch_size,
                            discriminator_steps=self.discriminator_steps,
                            checkpoint_every=self.checkpoint_every)
        if self.loss not in ADVERSARIAL_LOSSES:
            raise MethodError(f"{owner}(loss={self.loss!r}): choose one of {ADVERSARIAL_LOSSES}")
        for key in ("lr_generator", "lr_discriminator"):
            value = getattr(self, key)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise MethodError(f"{owner}({key}={value!r}) must be a positive number")
        if isinstance(self.lr_decay, bool) or not (isinstance(self.lr_decay, (int, float)) and 0 < self.lr_decay <= 1):
            raise MethodError(f"{owner}(lr_decay={self.lr_decay!r}) must be in (0, 1]")
        penalty = self.gradient_penalty
        if isinstance(penalty, bool) or not (isinstance(penalty, (int, float)) and penalty >= 0
                                             and math.isfinite(penalty)):
            raise MethodError(f"{owner}(gradient_penalty={penalty!r}) must be a non-negative number")
        try:
            betas = tuple(float(b) for b in self.betas)
        except (TypeError, ValueError):
            betas = ()
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise MethodError(f"{owner}(betas={self.betas!r}) must be two numbers in [0, 1)")
        object.__setattr__(self, "betas", betas)

    def run(self, program: Program, context: RunContext) -> Fit:
        # num_steps is not fingerprinted (UNFINGERPRINTED): a run may be extended from its checkpoint.
        out = run_adversarial(program, self, seed=context.seed, progress=context.progress,
                              fingerprint=self.fingerprint(program, context.seed), distributed=context.distributed)
        return Fit(program=program, method=self, seed=context.seed, posterior={}, losses=out["losses"],
                   timings={"fit": out["seconds"]}, extras={"discriminator_losses": out["discriminator_losses"]})


def gradient_penalty(critic, real, fake, weights):
    """WGAN-GP's :math:`E[(\\|\\nabla_{\\hat x} D(\\hat x)\\|_2 - 1)^2]` at
    :math:`\\hat x = \\epsilon x + (1 - \\epsilon) \\tilde x`.

    ``real`` and ``fake`` are packed discriminator inputs ``(B, ...)``, ``weights``
    the :math:`\\epsilon` ``(B,)``; the norm is over everything but the first axis.
    """
    eps = weights.reshape((-1,) + (1,) * (real.dim() - 1))
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def discriminator_loss(model, real, fake, method, generator=None, *, weights=None):
    """The discriminator's (critic's) loss on samples ``real`` and ``fake`` of equal size;
    WGAN-GP's interpolation ``weights`` (one per packed input) are drawn from ``generator``
    unless given (data-parallel ranks share them)."""
    real_p, fake_p = model.packed(real), model.packed(fake)
    scores = model.critic(torch.cat([real_p, fake_p]))
    on_real, on_fake = scores[:real_p.shape[0]], scores[real_p.shape[0]:]
    if method.loss == "nonsaturating":
        return F.softplus(-on_real).mean() + F.softplus(on_fake).mean()
    loss = on_fake.mean() - on_real.mean()
    if method.gradient_penalty:
        if weights is None:
            weights = torch.rand(real_p.shape[0], generator=generator, device=real.device, dtype=real.dtype)
        loss = loss + method.gradient_penalty * gradient_penalty(model.critic, real_p, fake_p, weights)
    return loss


def generator_loss(model, fake, method):
    """The generator's loss on ``fake = G(z)``: :math:`E[\\mathrm{softplus}(-D)]` or :math:`-E[D]`."""
    scores = model.critic(model.packed(fake))
    return F.softplus(-scores).mean() if method.loss == "nonsaturating" else -scores.mean()

class Batches:
    """Minibatches of ``rows`` data points from epoch-wise permutations (a last
    chunk shorter than ``rows`` is skipped), of which this rank keeps rows ``[lo, hi)``
    (all of them in one process); the position lives in ``state``."""

    def __init__(self, data, rows, generator, state, lo=0, hi=None):
        self.data, self.rows, self.generator, self.state = data, rows, generator, state
        self.lo, self.hi = lo, rows if hi is None else hi

    def next(self):
        state, size = self.state, self.data.shape[0]
        if state["order"] is None or state["position"] + self.rows > size:
            state["order"] = torch.randperm(size, generator=self.generator, device=self.data.device)
            state["position"] = 0
        start = state["position"]
        state["position"] = start + self.rows
        return self.data.index_select(0, state["order"][start + self.lo:start + self.hi])


def check_adversarial_pair(model):
    if not isinstance(model, AdversarialPair):
        owner = type(model).__name__ if model is not None else "a plain Pyro program"
        names = ("latent_dim", "pack", "generate", "packed", "critic", "generator_parameters",
                 "discriminator_parameters")
        raise MethodError(f"Adversarial needs a GAN (ppgen.model.AdversarialPair); {owner} lacks "
                          f"{', '.join(n for n in names if not hasattr(model, n))}")


def run_adversarial(program, method, *, seed, progress, fingerprint, distributed=False):
    """Train ``program.generative`` adversarially (over the ranks of the process group when
    ``distributed``); return its losses and timing."""
    model = program.generative
    check_adversarial_pair(model)
    data = program.kwargs["data"]
    if distributed:
        check_same_data(data)
    if data.shape[0] < model.pack:
        raise MethodError(f"Adversarial: {data.shape[0]} data points cannot fill one discriminator input of "
                          f"pack={model.pack} samples")
    rows = min(method.batch_size, data.shape[0] // model.pack) * model.pack
    inputs, rank, world = rows // model.pack, group.rank() if distributed else 0, \
        group.world_size() if distributed else 1
    if inputs < world:
        raise MethodError(f"Adversarial(batch_size={method.batch_size}): {inputs} discriminator inputs per step "
                          f"cannot be shared by {world} ranks")
    sizes = shard_sizes(inputs, world)
    share = (sum(sizes[:rank]), sizes[rank], inputs)
    trainer = AdversarialTrainer(model, data, rows, method, seed, share, distributed)
    model.train()
    start = time.perf_counter()
    state = train(trainer, trainer.state, total=method.num_steps, counter="step",
                  desc="Adversarial" + (f" x{world}" if distributed else ""), progress=progress,
                  checkpoints=Checkpoints(method.checkpoint, method.checkpoint_every, method.resume, fingerprint),
                  ranks=Ranks() if distributed else None)
    return {"losses": list(state["losses"]), "discriminator_losses": list(state["discriminator_losses"]),
            "seconds": time.perf_counter() - start, "steps": state["step"], "world_size": world}


class AdversarialTrainer:
    """Discriminator then generator steps, for :func:`~ppgen.inference.training.train`;
    over ranks, each rank's share of every step's discriminator inputs, its gradients
    all-reduced (``share``: this rank's first input, its count, and all of them)."""

    def __init__(self, model, data, rows, method, seed, share, distributed):
        self.model, self.data, self.method, self.distributed = model, data, method, distributed
        self.g_params, self.d_params = model.generator_parameters(), model.discriminator_parameters()
        for player, params in (("generator", self.g_params), ("discriminator", self.d_params)):
            if not params:
                raise MethodError(f"Adversarial: the {player} has no trainable parameters")
        self.weights = model.state_dict()  # views of the weights and batch-norm statistics
        if distributed:
            self._share_rank0_tensors()
        self.opt_g = torch.optim.Adam(self.g_params, lr=method.lr_generator, betas=method.betas)
        self.opt_d = torch.optim.Adam(self.d_params, lr=method.lr_discriminator, betas=method.betas)
        self.generator = torch.Generator(device=data.device).manual_seed(seed)
        self.state = {"step": 0, "position": 0, "order": None, "losses": [], "discriminator_losses": []}
        self.first, self.count, self.inputs = share
        lo, hi = self.first * model.pack, (self.first + self.count) * model.pack
        self.batches = Batches(data, rows, self.generator, self.state, lo, hi)
        self.codes = slice(lo, hi)
        self.pending = []

    def _share_rank0_tensors(self):
        group.broadcast_([t for t in self.weights.values() if t.is_floating_point()])

    def _reduce(self, params, loss, interrupted=False):
        if not self.distributed:
            return loss.detach(), False
        total, flag = group.reduce_gradients(params, self.count / self.inputs, extras=(loss, float(interrupted)))
        return total, float(flag) > 0

    def done(self, state):
        return state["step"] >= self.method.num_steps

    def step(self, state, interrupt):
        model, method, data = self.model, self.method, self.data
        self.batches.state = state
        options = {"generator": self.generator, "device": data.device, "dtype": data.dtype}
        if method.lr_decay != 1:
            for opt, lr in ((self.opt_g, method.lr_generator), (self.opt_d, method.lr_discriminator)):
                opt.param_groups[0]["lr"] = lr * method.lr_decay ** (state["step"] / method.num_steps)
        penalty = method.loss == "wasserstein" and bool(method.gradient_penalty)
        for k in range(method.discriminator_steps):
            real = self.batches.next()
            z = torch.randn((self.batches.rows, model.latent_dim), **options)[self.codes]  # this rank's codes
            if k == method.discriminator_steps - 1:
                fake = model.generate(z)  # kept with its graph for the generator's step
            else:
                with torch.no_grad():
                    fake = model.generate(z)
            weights = None
            if penalty:  # drawn for all inputs, as the one-process loop does
                weights = torch.rand(self.inputs, **options)[self.first:self.first + self.count]
            d_loss = discriminator_loss(model, real, fake.detach(), method, weights=weights)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            d_total, _ = self._reduce(self.d_params, d_loss)
            self.opt_d.step()
        g_loss = generator_loss(model, fake, method)
        grads = torch.autograd.grad(g_loss, self.g_params, allow_unused=True)
        for param, grad in zip(self.g_params, grads):
            param.grad = grad
        g_total, stop = self._reduce(self.g_params, g_loss, interrupt.pending)
        self.opt_g.step()
        self.pending.append(torch.stack([g_total.detach(), d_total.detach()]))
        state["step"] += 1
        if len(self.pending) >= FLUSH_EVERY:
            flush_losses(self.pending, state)
        return stop or (not self.distributed and interrupt.pending)

    def tensors(self):
        return self.weights

    def extra_state(self):
        return {"optimizer": {"generator": self.opt_g.state_dict(), "discriminator": self.opt_d.state_dict()},
                "generator": self.generator.get_state()}

    def load_extra_state(self, saved):
        self.opt_g.load_state_dict(saved["optimizer"]["generator"])
        self.opt_d.load_state_dict(saved["optimizer"]["discriminator"])
        self.generator.set_state(saved["generator"])

    def flush(self, state):
        flush_losses(self.pending, state)
        if self.distributed:  # rank 0's batch-norm statistics are the ones kept
            self._share_rank0_tensors()

    def postfix(self, state):
        if state["step"] % FLUSH_EVERY or not state["losses"]:
            return None
        return {"generator": f"{state['losses'][-1]:.4g}", "discriminator": f"{state['discriminator_losses'][-1]:.4g}"}


def flush_losses(pending, state):
    """Move the recorded losses into ``state`` (one read-back for many steps)."""
    if not pending:
        return
    values = torch.stack(pending).cpu().tolist()
    first = state["step"] - len(pending)
    pending.clear()
    for offset, (g_loss, d_loss) in enumerate(values):
        if not (math.isfinite(g_loss) and math.isfinite(d_loss)):
            raise MethodError(
                f"Adversarial: training diverged at step {first + offset + 1} (generator loss {g_loss}, "
                f"discriminator loss {d_loss}); lower lr_generator and lr_discriminator, use "
                "loss='wasserstein' with a gradient_penalty, or standardise the data")
        state["losses"].append(g_loss)
        state["discriminator_losses"].append(d_loss)
