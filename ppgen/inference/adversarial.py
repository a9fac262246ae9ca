"""Adversarial training of GANs: the loop behind ``ppgen.fit(gan, x, Adversarial(...))``.

The model is used only through the GAN protocol of :class:`ppgen.models.GAN`:
``latent_dim``, ``pack``, ``generate(z)`` (the generator network, the one the
Pyro program's ``x = G(z)`` site calls), ``packed(x)`` (samples as packed
discriminator inputs), ``critic(packed)`` (logits, ``(B,)``), and
``generator_parameters()`` / ``discriminator_parameters()``.

Each step draws ``z`` from :math:`N(0, I)`, the prior of ``model()``, and calls
the same generator network directly rather than tracing the Pyro program, so a
step costs what a hand-written PyTorch loop costs (``benchmarks/bench_gan.py``:
0.95-0.97 times the time per step of the DCGAN-tutorial loop over the same
networks, which also computes the discriminator's weight gradients in the
generator's step). The discriminator steps
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
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import MethodError
from .checkpoint import FORMAT, atomic_save, resume_from
from .svi import DeferredInterrupt

log = logging.getLogger("ppgen")

PROTOCOL = ("generate", "packed", "critic", "generator_parameters", "discriminator_parameters")
#: steps between reading the recorded losses back (and checking that they are finite).
FLUSH_EVERY = 100


def check_adversarial_pair(model):
    missing = [name for name in PROTOCOL if not callable(getattr(model, name, None))]
    if model is None or missing:
        owner = type(model).__name__ if model is not None else "a plain Pyro program"
        raise MethodError(f"Adversarial needs a GAN; {owner} lacks {', '.join(missing or PROTOCOL)} "
                          "(see ppgen.models.GAN)")


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
    chunk shorter than ``rows`` is skipped); the position lives in ``state``."""

    def __init__(self, data, rows, generator, state):
        self.data, self.rows, self.generator, self.state = data, rows, generator, state

    def next(self):
        state, size = self.state, self.data.shape[0]
        if state["order"] is None or state["position"] + self.rows > size:
            state["order"] = torch.randperm(size, generator=self.generator, device=self.data.device)
            state["position"] = 0
        start = state["position"]
        state["position"] = start + self.rows
        return self.data.index_select(0, state["order"][self.window(start)])

    def window(self, start):
        """The positions in the permutation of the batch that starts at ``start``."""
        return slice(start, start + self.rows)


def run_adversarial(program, method, *, seed, progress, fingerprint):
    """Train ``program.generative`` adversarially; return its losses and timing."""
    model = program.generative
    check_adversarial_pair(model)
    data = program.kwargs["data"]
    if data.shape[0] < model.pack:
        raise MethodError(f"Adversarial: {data.shape[0]} data points cannot fill one discriminator input of "
                          f"pack={model.pack} samples")
    rows = min(method.batch_size, data.shape[0] // model.pack) * model.pack
    g_params, d_params = model.generator_parameters(), model.discriminator_parameters()
    for player, params in (("generator", g_params), ("discriminator", d_params)):
        if not params:
            raise MethodError(f"Adversarial: the {player} has no trainable parameters")
    opt_g = torch.optim.Adam(g_params, lr=method.lr_generator, betas=method.betas)
    opt_d = torch.optim.Adam(d_params, lr=method.lr_discriminator, betas=method.betas)
    generator = torch.Generator(device=data.device).manual_seed(seed)
    tensors = model.state_dict()  # views of the weights and batch-norm statistics
    state = {"step": 0, "position": 0, "order": None, "losses": [], "discriminator_losses": []}
    pending = []

    def snapshot():
        flush_losses(pending, state)
        return {"format": FORMAT, "kind": "checkpoint", "fingerprint": fingerprint,
                "params": {k: v.detach().clone() for k, v in tensors.items()},
                "optimizer": {"generator": opt_g.state_dict(), "discriminator": opt_d.state_dict()},
                "generator": generator.get_state(), "state": copy.deepcopy(state)}

    if method.checkpoint and method.resume:
        saved = resume_from(method.checkpoint, fingerprint, tensors)
        if saved is not None:
            opt_g.load_state_dict(saved["optimizer"]["generator"])
            opt_d.load_state_dict(saved["optimizer"]["discriminator"])
            generator.set_state(saved["generator"])
            state = saved["state"]
            log.info("resumed Adversarial from %s at step %d", method.checkpoint, state["step"])
    batches = Batches(data, rows, generator, state)
    model.train()
    start = time.perf_counter()
    interrupt = DeferredInterrupt() if method.checkpoint else contextlib.nullcontext()
    bar = tqdm(total=method.num_steps, initial=min(state["step"], method.num_steps), disable=not progress,
               desc="Adversarial", leave=False)
    try:
        with interrupt:
            _loop(model, batches, rows, (g_params, opt_g, opt_d), generator, state, pending, method, bar,
                  interrupt, snapshot)
    except KeyboardInterrupt:
        if method.checkpoint:
            atomic_save(snapshot(), method.checkpoint)
            log.warning("interrupted at step %d; checkpoint saved to %s", state["step"], method.checkpoint)
        raise
    finally:
        bar.close()
    flush_losses(pending, state)
    if method.checkpoint:
        atomic_save(snapshot(), method.checkpoint)
    return {"losses": list(state["losses"]), "discriminator_losses": list(state["discriminator_losses"]),
            "seconds": time.perf_counter() - start, "steps": state["step"]}


def _loop(model, batches, rows, optim, generator, state, pending, method, bar, interrupt, snapshot):
    g_params, opt_g, opt_d = optim
    check = getattr(interrupt, "check", lambda: None)
    data = batches.data
    shape, options = (rows, model.latent_dim), {"generator": generator, "device": data.device, "dtype": data.dtype}
    decay = ([(opt_g, method.lr_generator), (opt_d, method.lr_discriminator)]
             if method.lr_decay != 1 else [])
    while state["step"] < method.num_steps:
        check()
        for opt, lr in decay:
            opt.param_groups[0]["lr"] = lr * method.lr_decay ** (state["step"] / method.num_steps)
        for k in range(method.discriminator_steps):
            real = batches.next()
            z = torch.randn(shape, **options)
            if k == method.discriminator_steps - 1:
                fake = model.generate(z)  # kept with its graph for the generator's step
            else:
                with torch.no_grad():
                    fake = model.generate(z)
            d_loss = discriminator_loss(model, real, fake.detach(), method, generator)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        g_loss = generator_loss(model, fake, method)
        grads = torch.autograd.grad(g_loss, g_params, allow_unused=True)
        for param, grad in zip(g_params, grads):
            param.grad = grad
        opt_g.step()
        pending.append(torch.stack([g_loss.detach(), d_loss.detach()]))
        state["step"] += 1
        bar.update()
        if len(pending) >= FLUSH_EVERY:
            flush_losses(pending, state)
            bar.set_postfix(generator=f"{state['losses'][-1]:.4g}",
                            discriminator=f"{state['discriminator_losses'][-1]:.4g}")
        if method.checkpoint and state["step"] % method.checkpoint_every == 0:
            atomic_save(snapshot(), method.checkpoint)
    check()


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
