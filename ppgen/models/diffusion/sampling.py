"""Samplers of a diffusion model: ancestral (Ho et al. 2020) and DDIM (Song et al. 2021),
with classifier-free guidance (Ho and Salimans 2022).

Everything works in the model's units (standardised data, or [-1, 1] for the
discretized decoder) on a :class:`~ppgen.models.diffusion.DDPM`'s
:meth:`predict`, which returns the network's :math:`\\hat x_0` (clipped when the
model clips) and the noise :math:`\\hat\\epsilon` consistent with it.

Ancestral sampling runs the model's reverse chain, :math:`x_{t-1} \\sim
N(\\mu_\\theta(x_t, t), \\sigma_t^2 I)` for :math:`t = T, \\dots, 2` with
:math:`\\mu_\\theta = c_1(t) \\hat x_0 + c_2(t) x_t`, and ends at the decoder's mean
:math:`\\mu_\\theta(x_1, 1) = \\hat x_0(x_1)` (the noiseless last step of Ho et al.).

DDIM visits a subsequence :math:`\\tau_1 < \\dots < \\tau_S` of the time steps
(``spacing``, the names of diffusers' ``timestep_spacing`` and Lin et al. 2024, "Common
diffusion noise schedules and sample steps are flawed", table 2):

* ``"leading"``: Song et al.'s :math:`\\tau_i = 1 + (i - 1)\\lfloor T/S \\rfloor`
  (1, 21, ..., 981 for :math:`T = 1000, S = 50`): the chain starts below :math:`T`;
* ``"trailing"``: :math:`\\tau_i = \\mathrm{round}(i\\, T/S)` (20, 40, ..., 1000): it
  starts at :math:`T`, where :math:`x_T` really is :math:`N(0, I)`, and its last step
  jumps from :math:`\\tau_1 = T/S` to the data;
* ``"linspace"``: :math:`\\tau_i = \\mathrm{round}(1 + (i - 1)(T - 1)/(S - 1))` (1, 21, ..., 1000),
  both ends;
* ``"quadratic"``: :math:`\\tau_i = \\mathrm{round}(1 + (T - 1)((i - 1)/(S - 1))^2)`, raised
  where needed to keep the steps distinct (1, 2, 3, 5, ..., 960, 1000): Song et al.'s
  quadratic sequence (their CIFAR-10 runs; they stop at :math:`0.8\\,T`, this one at
  :math:`T`), small steps near the data, where sharp modes are resolved;

and steps from :math:`\\tau_i` to :math:`\\tau_{i-1}` (:math:`\\bar\\alpha_{\\tau_0} = 1`) by

.. math::
    x_{\\tau_{i-1}} = \\sqrt{\\bar\\alpha_{\\tau_{i-1}}}\\, \\hat x_0
      + \\sqrt{1 - \\bar\\alpha_{\\tau_{i-1}} - s_i^2}\\; \\hat\\epsilon + s_i z, \\qquad
    s_i = \\eta \\sqrt{\\frac{1 - \\bar\\alpha_{\\tau_{i-1}}}{1 - \\bar\\alpha_{\\tau_i}}
      \\Big(1 - \\frac{\\bar\\alpha_{\\tau_i}}{\\bar\\alpha_{\\tau_{i-1}}}\\Big)}.

:math:`\\eta = 0` is deterministic given :math:`x_T`; with all :math:`T` steps and
:math:`\\eta = 1`, :math:`s_i^2 = \\tilde\\beta_t` and the update is exactly the
ancestral step of a model with ``variance="posterior"``.

Guidance: with a label :math:`c` and weight :math:`w`,
:math:`\\hat\\epsilon = (1 + w)\\, \\epsilon_\\theta(x, c) - w\\, \\epsilon_\\theta(x, \\varnothing)`,
Ho and Salimans' convention: :math:`w = 0` is the conditional model, :math:`w > 0`
sharpens towards the label.
"""

from __future__ import annotations

import math

import torch

from ...errors import ModelError

SAMPLERS = ("ancestral", "ddim")
SPACINGS = ("leading", "trailing", "linspace", "quadratic")


def check_settings(sampler, steps, eta, spacing, guidance, has_labels, default_spacing):
    """Raise a ModelError naming the first sampler setting that cannot be used; return the
    spacing (``default_spacing`` when None). ``steps``, ``eta`` and ``spacing`` are DDIM's;
    guidance needs labels."""
    if sampler not in SAMPLERS:
        raise ModelError(f"sampler={sampler!r}: choose one of {SAMPLERS}")
    if sampler == "ancestral" and (steps is not None or eta or spacing is not None):
        raise ModelError("steps, eta and spacing are DDIM settings; use sampler='ddim'")
    spacing = default_spacing if spacing is None else spacing
    if spacing not in SPACINGS:
        raise ModelError(f"spacing={spacing!r}: choose one of {SPACINGS}")
    if guidance is not None and not (isinstance(guidance, (int, float)) and math.isfinite(guidance)):
        raise ModelError(f"guidance must be a finite number, got {guidance!r}")
    if guidance and not has_labels:
        raise ModelError("guidance needs labels: it sharpens p(x | label)")
    return spacing


def ddim_timesteps(timesteps, steps, spacing="leading"):
    """The ascending subsequence of ``steps`` time steps in ``1..timesteps`` named by
    ``spacing`` (see the module docstring)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= timesteps:
        raise ModelError(f"steps must be an integer in [1, {timesteps}] (the model's timesteps), got {steps!r}")
    if spacing == "leading":
        skip = timesteps // steps
        return [1 + i * skip for i in range(steps)]
    if spacing == "trailing":
        return [round((i + 1) * timesteps / steps) for i in range(steps)]
    if spacing in ("linspace", "quadratic"):
        if steps == 1:
            return [timesteps]
        power = 1 if spacing == "linspace" else 2
        seq = [round(1 + (timesteps - 1) * (i / (steps - 1)) ** power) for i in range(steps)]
        for i in range(1, steps):  # distinct steps (only the quadratic's first ones can collide)
            seq[i] = max(seq[i], seq[i - 1] + 1)
        return seq
    raise ModelError(f"spacing={spacing!r}: choose one of {SPACINGS}")


def standard_normal(generator=None):
    """A function ``like -> N(0, I)`` draws shaped like ``like``, from ``generator``
    (drawn on its device, then moved) or torch's global random state."""
    if generator is None:
        return lambda like: torch.randn(like.shape, dtype=like.dtype, device=like.device)
    if not isinstance(generator, torch.Generator):
        raise ModelError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return lambda like: torch.randn(like.shape, generator=generator, dtype=like.dtype,
                                    device=generator.device).to(like.device)


def guided_noise(network, x, t, labels, guidance, null_label):
    """:math:`(1 + w)\\epsilon(x, c) - w\\, \\epsilon(x, \\varnothing)` in one network pass
    (``network(x, t, labels)`` on ``(B, ...)`` rows; ``t`` and ``labels`` of shape ``(B,)``)."""
    if labels is None or not guidance:
        return network(x, t, labels)
    null = torch.full_like(labels, null_label)
    both = network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
    conditional, unconditional = both.chunk(2)
    return (1 + guidance) * conditional - guidance * unconditional


@torch.no_grad()
def ancestral(ddpm, x, labels=None, guidance=None, noise=None):
    """Run the reverse chain from ``x`` = :math:`x_T` (model units) to :math:`x_0`."""
    noise = noise or standard_normal()
    schedule = ddpm.schedule
    for t in range(schedule.timesteps, 0, -1):
        x0, _ = ddpm.predict(x, t, labels, guidance)
        mean, _ = schedule.posterior(x0, x, t)
        x = mean + schedule.reverse_std[t] * noise(x) if t > 1 else mean
    return x


@torch.no_grad()
def ddim(ddpm, x, steps, eta=0.0, labels=None, guidance=None, noise=None, spacing="leading"):
    """DDIM from ``x`` = :math:`x_T` (model units) in ``steps`` steps; ``eta`` in [0, 1]."""
    if not (isinstance(eta, (int, float)) and not isinstance(eta, bool) and 0 <= eta <= 1):
        raise ModelError(f"eta must be a number in [0, 1], got {eta!r}")
    noise = noise or standard_normal()
    alpha_bar = ddpm.schedule.alpha_bar
    seq = ddim_timesteps(ddpm.schedule.timesteps, steps, spacing)
    for i in reversed(range(len(seq))):
        t, prev = seq[i], (seq[i - 1] if i > 0 else 0)
        x0, eps = ddpm.predict(x, t, labels, guidance)
        a, a_prev = float(alpha_bar[t]), float(alpha_bar[prev])
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma ** 2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * noise(x)
    return x
