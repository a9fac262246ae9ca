"""Stan's warm-up: dual-averaging step sizes and windowed mass-matrix estimates.

Every chain adapts on its own (all quantities carry a leading chain dimension).

* Step size: dual averaging of :math:`\\log\\epsilon` towards a target mean
  acceptance statistic :math:`\\delta` (Hoffman and Gelman 2014, with Stan's
  constants :math:`\\gamma = 0.05, t_0 = 10, \\kappa = 0.75,
  \\mu = \\log 10\\epsilon_0`); restarted whenever the metric changes.
* Metric: the variances (or the covariance) of the draws in a window, by
  Welford's algorithm, shrunk towards :math:`10^{-3}` as Stan does,
  :math:`\\frac{n}{n+5}\\hat\\Sigma + 10^{-3}\\frac{5}{n+5}`.
* Windows (Stan's defaults): a fast initial buffer of 75 iterations (step size
  only), slow windows of 25, 50, 100, ... iterations whose end updates the metric
  (the last one stretched to the terminal buffer), and a final fast buffer of 50;
  a warm-up shorter than 150 iterations keeps the proportions 15% / 75% / 10%.
"""

from __future__ import annotations

import math

import torch

#: Stan's dual-averaging constants: gamma, t0, kappa.
GAMMA, T0, KAPPA = 0.05, 10.0, 0.75


def regularised_variance(m2, count):
    """Stan's metric estimate from Welford sums ``m2`` of ``count`` draws (a number or a
    tensor broadcasting against ``m2``): the variances shrunk towards :math:`10^{-3}`."""
    estimate = m2 / (count - 1).clamp(min=1) if torch.is_tensor(count) else m2 / max(count - 1, 1)
    return (count / (count + 5.0)) * estimate + 1e-3 * (5.0 / (count + 5.0))


def windows(warmup, init_buffer=75, term_buffer=50, base_window=25):
    """The slow windows as ``(first, last)`` iterations (0-based, inclusive):
    the metric is re-estimated from each window's draws after its last iteration."""
    if warmup < 20:
        return []
    if init_buffer + base_window + term_buffer > warmup:
        init_buffer, term_buffer = int(0.15 * warmup), int(0.1 * warmup)
        base_window = warmup - init_buffer - term_buffer
    ends, start, size = [], init_buffer, base_window
    last = warmup - term_buffer
    while start < last:
        end = start + size
        if end + 2 * size > last:  # the next window would not fit: stretch this one
            end = last
        ends.append((start, end - 1))
        start, size = end, 2 * size
    return ends


def dual_averaging_start(step_size):
    r"""The dual-averaging state ``(mu, log_step, log_step_bar, h_bar)`` at a step size (a
    float, or a tensor of per-chain step sizes): :math:`\mu = \log 10\epsilon_0`."""
    if torch.is_tensor(step_size):
        return torch.log(10 * step_size), torch.log(step_size), torch.zeros_like(step_size), \
            torch.zeros_like(step_size)
    return math.log(10 * step_size), math.log(step_size), 0.0, 0.0


def dual_averaging_update(t, mu, h_bar, log_step_bar, accept, target, gamma=GAMMA, t0=T0, kappa=KAPPA):
    """Iteration ``t >= 1`` of dual averaging with mean acceptance statistic ``accept``:
    :math:`\bar H_t = (1 - \\eta_t)\bar H_{t-1} + \\eta_t(\\delta - \alpha_t)` with
    :math:`\\eta_t = 1/(t + t_0)`; :math:`\\log\\epsilon_t = \\mu - \\sqrt{t}\bar H_t/\\gamma`;
    :math:`\\log\bar\\epsilon_t = t^{-\\kappa}\\log\\epsilon_t + (1 - t^{-\\kappa})\\log\bar\\epsilon_{t-1}`.
    Returns ``(h_bar, log_step, log_step_bar)``; floats or tensors alike (the free-running
    chains run it inside their compiled step, one ``t`` per chain)."""
    eta = 1.0 / (t + t0)
    h_bar = (1 - eta) * h_bar + eta * (target - accept)
    root = t.sqrt() if torch.is_tensor(t) else math.sqrt(t)
    log_step = mu - root / gamma * h_bar
    weight = t ** (-kappa)
    log_step_bar = weight * log_step + (1 - weight) * log_step_bar
    return h_bar, log_step, log_step_bar


def welford_update(count, mean, m2, z, dense=False):
    """Welford's update with the ``count``-th draw ``z``: the new ``(mean, m2)``, with
    ``m2`` the sum of squared deviations (outer products when ``dense``)."""
    delta = z - mean
    mean = mean + delta / count
    after = z - mean
    if dense:
        return mean, m2 + delta.unsqueeze(-1) * after.unsqueeze(-2)
    return mean, m2 + delta * after


class DualAveraging:
    """Per-chain dual averaging of the log step size: step sizes ``(C, 1)`` tensors, or
    one chain's as Python floats (no tensor operations per iteration)."""

    def __init__(self, step_size, target, gamma=GAMMA, t0=T0, kappa=KAPPA):
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.restart(step_size)

    def restart(self, step_size):
        self.scalar = isinstance(step_size, float)
        self.mu, self.log_step, self.log_step_bar, self.h_bar = dual_averaging_start(step_size)
        self.t = 0

    def update(self, accept):
        self.t += 1
        accept = float(accept) if self.scalar else accept.reshape(self.h_bar.shape)
        self.h_bar, self.log_step, self.log_step_bar = dual_averaging_update(
            self.t, self.mu, self.h_bar, self.log_step_bar, accept, self.target, self.gamma, self.t0, self.kappa)
        return math.exp(self.log_step) if self.scalar else self.log_step.exp()

    def final(self):
        return math.exp(self.log_step_bar) if self.scalar else self.log_step_bar.exp()


class Welford:
    """Running mean and (co)variance of ``(C, D)`` draws, per chain."""

    def __init__(self, chains, dim, dense, dtype, device):
        self.dense, self.count = dense, 0
        self.mean = torch.zeros(chains, dim, dtype=dtype, device=device)
        shape = (chains, dim, dim) if dense else (chains, dim)
        self.m2 = torch.zeros(shape, dtype=dtype, device=device)

    def add(self, z):
        self.count += 1
        self.mean, self.m2 = welford_update(self.count, self.mean, self.m2, z, self.dense)

    def inverse_mass(self):
        if not self.dense:
            return regularised_variance(self.m2, self.count)
        n = self.count
        shrunk = (n / (n + 5.0)) * (self.m2 / max(n - 1, 1))
        eye = torch.eye(shrunk.shape[-1], dtype=shrunk.dtype, device=shrunk.device)
        return shrunk + 1e-3 * (5.0 / (n + 5.0)) * eye


def initial_step_size(sampler, state, step_size, metric, generator, max_rounds=100):
    """Stan's heuristic, per chain: double or halve the step until one leapfrog
    step's acceptance probability crosses 0.8."""
    z, grad, potential = state.z, state.grad, state.potential
    log_target = math.log(0.8)
    direction = None
    settled = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
    for _ in range(max_rounds):
        r = metric.momentum(z.shape, generator, z.dtype, z.device)
        energy0 = potential + metric.kinetic(r)
        _, r_new, _, potential_new = sampler.leapfrog(z, r, grad, step_size, metric)
        delta = energy0 - (potential_new + metric.kinetic(r_new))
        delta = torch.where(torch.isnan(delta), -math.inf, delta)
        above = delta > log_target
        if direction is None:
            direction = above
        crossed = torch.where(direction, ~above, above)
        settled = settled | crossed
        if bool(settled.all()):
            break
        grow = (~settled) & direction
        shrink = (~settled) & ~direction
        step_size = torch.where(grow.unsqueeze(-1), 2 * step_size,
                                torch.where(shrink.unsqueeze(-1), 0.5 * step_size, step_size))
        step_size = step_size.clamp(1e-10, 1e7)
    return step_size
