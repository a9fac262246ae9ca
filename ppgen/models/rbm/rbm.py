"""Restricted Boltzmann machines: Bernoulli (binary data) and Gaussian-Bernoulli (real data).

Both are trained by contrastive divergence (``ppgen.fit(rbm, x, ContrastiveDivergence(...))``,
CD-k or persistent CD) or, for small layers, by exact maximum likelihood (``MAP()``,
gradient ascent through the enumerated :math:`\\log Z`). ``log_prob`` is exact while the
enumerated layer has at most ``exact_limit`` units and an AIS estimate otherwise; see
:mod:`ppgen.models.rbm.base` for the shared machinery and the energy-based-model protocol
that CD uses, and :mod:`ppgen.models.rbm.partition` for enumeration and AIS.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import constraints

from ...data import as_tensor
from ...errors import DataError, ModelError
from .base import RBMBase, RBMMarginal
from .partition import BernoulliPath, GaussianPath, LogPartition, bernoulli_draw

__all__ = ["BernoulliRBM", "GaussianBernoulliRBM", "LogPartition", "RBMMarginal"]



def _real_matrix(data, width):
    """True for a non-empty ``(N, width)`` tensor or numpy array of real numbers."""
    if isinstance(data, np.ndarray):
        real = data.dtype.kind in "fiub"
    elif isinstance(data, torch.Tensor):
        real = not data.is_complex()
    else:
        return False
    return real and data.ndim == 2 and data.shape[0] > 0 and data.shape[1] == width


def _is_binary(tensor):
    return bool(tensor.eq(0).logical_or_(tensor.eq(1)).all())


class BernoulliRBM(RBMBase):
    """Bernoulli RBM on binary data: log p(x) exact up to 20 units in the smaller layer, AIS above.

    .. math::
        E(v, h) = -a^\\top v - b^\\top h - v^\\top W h, \\qquad v \\in \\{0,1\\}^V,\\ h \\in \\{0,1\\}^H,

        F(v) = -a^\\top v - \\sum_j \\mathrm{softplus}(b_j + v^\\top W_{:,j}),\\quad
        p(h_j = 1 \\mid v) = \\sigma(b_j + v^\\top W_{:,j}),\\quad p(v_i = 1 \\mid h) = \\sigma(a_i + W_{i,:} h),

        \\log Z = \\log \\sum_h \\exp\\Big(b^\\top h + \\sum_i \\mathrm{softplus}(a_i + W_{i,:} h)\\Big)
        \\quad (\\text{or the same sum over } v \\text{ when } V < H).

    ``log_prob_kind`` is ``"exact"`` on the class, and on an instance ``"exact"`` or, when
    :math:`\\min(V, H) >` ``exact_limit``, ``"estimate"`` (``log_prob_is_exact`` says which;
    ``log_partition()`` gives the AIS standard error). The AIS base rate is the training
    data's pixel frequencies (set by ``initialize``, which ``fit`` calls).

    Parameters
    ----------
    n_visible, n_hidden : int
    exact_limit : int
        Largest enumerated layer (the smaller layer of a Bernoulli RBM, the hidden layer of a
        Gaussian-Bernoulli one) for which :math:`\\log Z` is computed exactly (``2**exact_limit``
        states); above it :meth:`log_partition` uses AIS.
    init_scale : float
        Standard deviation of the initial weights (``fit`` draws them from its seed).
    ais_runs, ais_betas, ais_seed : int
        AIS particles, temperatures (spaced as in Salakhutdinov and Murray 2008) and seed,
        used when :math:`\\log Z` is estimated.
    burn_in : int
        Gibbs sweeps per chain in :meth:`sample`.

    Sites: ``obs`` (observed, :class:`RBMMarginal`); no latent sites. Parameters ``weights``
    ``(V, H)``, ``visible_bias``, ``hidden_bias``.
    """

    cd_monitor_name = "stochastic negative pseudo-log-likelihood (nats per datum)"
    support = constraints.independent(constraints.boolean, 1)

    def __init__(self, n_visible: int, n_hidden: int, **kwargs: Any) -> None:
        super().__init__(n_visible, n_hidden, **kwargs)
        self.register_buffer("base_rate_logits", torch.zeros(n_visible))

    def get_config(self):
        return self._common_config()

    def check_data(self, data, name="data"):
        # Binary values are finite: a binary tensor or array of the right shape skips
        # as_tensor's finiteness scan (seconds on MNIST-sized data).
        if _real_matrix(data, self.n_visible):
            # row-major: minibatches gather rows (a Fortran-ordered array makes that 30x slower)
            tensor = torch.as_tensor(data).to(device=self.device, dtype=self.dtype).contiguous()
            if _is_binary(tensor):
                return tensor
        tensor = as_tensor(data, name, dtype=self.dtype, device=self.device, ndim=2, dim=self.n_visible)
        tensor = tensor.to(self.dtype)
        if not _is_binary(tensor):
            where = tuple((tensor.ne(0) & tensor.ne(1)).nonzero()[0].tolist())
            raise DataError(f"{name}: {type(self).__name__} needs binary (0/1) data; found "
                            f"{float(tensor[where]):g} at index {where} (binarize it, e.g. x > 0.5)")
        return tensor.contiguous()

    def initialize(self, data, generator=None, **kwargs):
        """Base rate from ``data`` (smoothed pixel frequencies); on an untrained model also
        the starting point of Hinton's guide: small random weights, visible biases at the
        base-rate log-odds, zero hidden biases."""
        data = self.check_data(data)
        with torch.no_grad():
            rate = (data.sum(0) + 0.5) / (data.shape[0] + 1.0)
            self.base_rate_logits.copy_(torch.logit(rate))
            if not bool(self.initialized):
                self.weights.copy_(self._initial_weights(generator))
                self.visible_bias.copy_(self.base_rate_logits)
                self.hidden_bias.zero_()
                self.initialized.fill_(True)

    # ------------------------------------------------------------ conditionals and energies
    def hidden_logits(self, v):
        return self.hidden_bias + v @ self.weights

    def visible_logits(self, h):
        """Logits of :math:`p(v_i = 1 \\mid h)`."""
        return self.visible_bias + h @ self.weights.T

    def visible_mean(self, h):
        return torch.sigmoid(self.visible_logits(h))

    def sample_visible(self, h, generator=None):
        return bernoulli_draw(self.visible_mean(h), generator)

    def energy(self, v, h):
        """:math:`E(v, h)`, broadcasting over leading dimensions."""
        return -(v @ self.visible_bias) - (h @ self.hidden_bias) - ((v @ self.weights) * h).sum(-1)

    def free_energy(self, v):
        return -(v @ self.visible_bias) - F.softplus(self.hidden_logits(v)).sum(-1)

    def _enumerated_units(self):
        return min(self.n_visible, self.n_hidden)

    def _enumeration(self, weights, visible_bias, hidden_bias):
        if self.n_hidden <= self.n_visible:
            def score(h):
                return h @ hidden_bias + F.softplus(visible_bias + h @ weights.T).sum(-1)
            return score, self.n_hidden, 0.0

        def score(v):
            return v @ visible_bias + F.softplus(hidden_bias + v @ weights).sum(-1)
        return score, self.n_visible, 0.0

    def _ais_path(self, dtype):
        return BernoulliPath(self.weights.detach().to(dtype), self.visible_bias.detach().to(dtype),
                             self.hidden_bias.detach().to(dtype), self.base_rate_logits.to(dtype))

    # ------------------------------------------------------------ CD protocol
    def free_energy_gradients(self, v, hidden_probs):
        return {"weights": -(v.T @ hidden_probs) / v.shape[0], "visible_bias": -v.mean(0),
                "hidden_bias": -hidden_probs.mean(0)}

    def cd_step(self, v_data, v_start=None, k=1, generator=None):
        """:meth:`RBMBase.cd_step` fused for binary units: the same draws from ``generator`` in
        the same order, with fewer tensor operations (per-update overhead bounds small batches)."""
        with torch.no_grad():
            weights, visible_bias, hidden_bias = self.weights, self.visible_bias, self.hidden_bias
            p_data = torch.sigmoid(torch.addmm(hidden_bias, v_data, weights))
            v, p = (v_data, p_data) if v_start is None else \
                (v_start, torch.sigmoid(torch.addmm(hidden_bias, v_start, weights)))
            for _ in range(k):
                h = bernoulli_draw(p, generator)
                v = bernoulli_draw(torch.sigmoid(torch.addmm(visible_bias, h, weights.T)), generator)
                p = torch.sigmoid(torch.addmm(hidden_bias, v, weights))
            gradients = {
                "weights": torch.addmm(v.T @ p, v_data.T, p_data, beta=1 / v.shape[0], alpha=-1 / v_data.shape[0]),
                "visible_bias": v.mean(0).sub_(v_data.mean(0)),
                "hidden_bias": p.mean(0).sub_(p_data.mean(0)),
            }
            return gradients, v

    def cd_monitor(self, v, generator=None):
        """:math:`-V \\log p(v_i \\mid v_{-i})` for one random unit :math:`i` per datum: an
        unbiased estimate of the negative pseudo-log-likelihood, nats per datum (the
        negative of scikit-learn's ``score_samples``)."""
        with torch.no_grad():
            hidden_logits = self.hidden_logits(v)
            unit = torch.randint(self.n_visible, (v.shape[0],), generator=generator, device=v.device)
            sign = 1 - 2 * v[torch.arange(v.shape[0], device=v.device), unit]  # +1 turns a unit on
            flipped = torch.addcmul(hidden_logits, sign.unsqueeze(-1), self.weights[unit])
            # F(flipped) - F(v); the a.v terms cancel but for the flipped unit's
            gap = F.softplus(hidden_logits).sum(-1) - F.softplus(flipped).sum(-1) - sign * self.visible_bias[unit]
            return -self.n_visible * F.logsigmoid(gap)

    @classmethod
    def example(cls, seed=0):
        """A 9-visible, 4-hidden RBM and 120 3x3 "bars" images (each row or column on w.p. 1/3)."""
        generator = torch.Generator().manual_seed(seed)
        n = 120
        bars = (torch.rand(n, 3, generator=generator) < 1 / 3).float()
        horizontal = torch.rand(n, generator=generator) < 0.5
        images = torch.where(horizontal[:, None, None], bars[:, :, None].expand(n, 3, 3),
                             bars[:, None, :].expand(n, 3, 3))
        return cls(9, 4, burn_in=200), images.reshape(n, 9).contiguous()


class GaussianBernoulliRBM(RBMBase):
    """Gaussian-Bernoulli RBM on real data: log density exact up to 20 hidden units, AIS above.

    With per-unit scales :math:`\\sigma_i`:

    .. math::
        E(v, h) = \\sum_i \\frac{(v_i - a_i)^2}{2 \\sigma_i^2} - b^\\top h - (v / \\sigma)^\\top W h,

        F(v) = \\sum_i \\frac{(v_i - a_i)^2}{2\\sigma_i^2}
        - \\sum_j \\mathrm{softplus}(b_j + (v/\\sigma)^\\top W_{:,j}),\\quad
        p(h_j = 1 \\mid v) = \\sigma(b_j + (v/\\sigma)^\\top W_{:,j}),\\quad
        v_i \\mid h \\sim N(a_i + \\sigma_i W_{i,:} h,\\ \\sigma_i^2),

        \\log Z = \\sum_i \\log(\\sqrt{2\\pi}\\sigma_i) + \\log \\sum_h
        \\exp\\Big(b^\\top h + (a/\\sigma)^\\top W h + \\tfrac12 \\lVert W h \\rVert^2\\Big)

    (the visible integral is Gaussian, so only the hidden layer is enumerated).
    ``log_prob`` is a log density in nats; ``log_prob_kind`` as for :class:`BernoulliRBM`.

    Parameters
    ----------
    n_visible, n_hidden : int
    scale : float or None
        :math:`\\sigma` of every visible unit (1 suits standardised data); ``None``: each
        feature's standard deviation in the first data ``initialize`` sees.
    learn_scale : bool
        Train :math:`\\log \\sigma` too (CD is often unstable with it; off by default).
    exact_limit : int
        Largest enumerated layer (the smaller layer of a Bernoulli RBM, the hidden layer of a
        Gaussian-Bernoulli one) for which :math:`\\log Z` is computed exactly (``2**exact_limit``
        states); above it :meth:`log_partition` uses AIS.
    init_scale : float
        Standard deviation of the initial weights (``fit`` draws them from its seed).
    ais_runs, ais_betas, ais_seed : int
        AIS particles, temperatures (spaced as in Salakhutdinov and Murray 2008) and seed,
        used when :math:`\\log Z` is estimated.
    burn_in : int
        Gibbs sweeps per chain in :meth:`sample`.

    Parameters ``weights``, ``visible_bias``, ``hidden_bias`` and ``log_scale`` (a parameter
    when ``learn_scale``, else a buffer).
    """

    cd_monitor_name = "squared reconstruction error per datum (data units squared)"
    support = constraints.independent(constraints.real, 1)

    def __init__(self, n_visible: int, n_hidden: int, *, scale: float | None = 1.0, learn_scale: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(n_visible, n_hidden, **kwargs)
        if scale is not None and not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
            raise ModelError(f"scale must be a positive number or None, got {scale!r}")
        self.scale_config, self.learn_scale = scale, bool(learn_scale)
        log_scale = torch.full((n_visible,), math.log(scale if scale is not None else 1.0))
        if self.learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.register_buffer("base_mean", torch.zeros(n_visible))

    def get_config(self):
        return {**self._common_config(), "scale": self.scale_config, "learn_scale": self.learn_scale}

    @property
    def scale(self):
        """:math:`\\sigma`, shape ``(V,)``."""
        return self.log_scale.exp()

    def check_data(self, data, name="data"):
        tensor = as_tensor(data, name, dtype=self.dtype, device=self.device, ndim=2, dim=self.n_visible)
        return tensor.contiguous()  # minibatches gather rows

    def initialize(self, data, generator=None, **kwargs):
        """AIS base mean from ``data``; on an untrained model also :math:`\\sigma` (when
        ``scale=None``), small random weights, visible biases at the data mean."""
        data = self.check_data(data)
        with torch.no_grad():
            self.base_mean.copy_(data.mean(0))
            if not bool(self.initialized):
                if self.scale_config is None:
                    self.log_scale.copy_(data.std(0).clamp_min(1e-3).log() if data.shape[0] > 1
                                         else torch.zeros_like(self.log_scale))
                self.weights.copy_(self._initial_weights(generator))
                self.visible_bias.copy_(self.base_mean)
                self.hidden_bias.zero_()
                self.initialized.fill_(True)

    # ------------------------------------------------------------ conditionals and energies
    def hidden_logits(self, v):
        return self.hidden_bias + (v / self.scale) @ self.weights

    def visible_mean(self, h):
        return self.visible_bias + self.scale * (h @ self.weights.T)

    def sample_visible(self, h, generator=None):
        mean = self.visible_mean(h)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + self.scale * noise

    def energy(self, v, h):
        return ((((v - self.visible_bias) / self.scale) ** 2) / 2).sum(-1) - h @ self.hidden_bias \
            - (((v / self.scale) @ self.weights) * h).sum(-1)

    def free_energy(self, v):
        return ((((v - self.visible_bias) / self.scale) ** 2) / 2).sum(-1) \
            - F.softplus(self.hidden_logits(v)).sum(-1)

    def _enumeration(self, weights, visible_bias, hidden_bias):
        scale = self.log_scale.to(weights.dtype).exp()
        constant = (scale.log() + 0.5 * math.log(2 * math.pi)).sum()

        def score(h):
            projected = h @ weights.T
            return h @ hidden_bias + projected @ (visible_bias / scale) + 0.5 * (projected ** 2).sum(-1)
        return score, self.n_hidden, constant

    def _ais_path(self, dtype):
        return GaussianPath(self.weights.detach().to(dtype), self.visible_bias.detach().to(dtype),
                            self.hidden_bias.detach().to(dtype), self.scale.detach().to(dtype),
                            self.base_mean.to(dtype))

    # ------------------------------------------------------------ CD protocol
    def free_energy_gradients(self, v, hidden_probs):
        scale = self.scale
        scaled = v / scale
        out = {"weights": -(scaled.T @ hidden_probs) / v.shape[0],
               "visible_bias": -((v - self.visible_bias) / scale ** 2).mean(0),
               "hidden_bias": -hidden_probs.mean(0)}
        if self.learn_scale:
            out["log_scale"] = (-((v - self.visible_bias) / scale) ** 2
                                + scaled * (hidden_probs @ self.weights.T)).mean(0)
        return out

    def cd_monitor(self, v, generator=None):
        """Squared reconstruction error :math:`\\lVert v - E[v \\mid h] \\rVert^2`, :math:`h \\sim p(h \\mid v)`."""
        with torch.no_grad():
            h = self.sample_hidden(v, generator)
            return ((v - self.visible_mean(h)) ** 2).sum(-1)

    @classmethod
    def example(cls, seed=0):
        """A 4-visible, 3-hidden RBM and 150 standardised points from two Gaussian clusters."""
        generator = torch.Generator().manual_seed(seed)
        n = 150
        centres = torch.tensor([[-1.5, 1.0, 0.0, 0.5], [1.5, -1.0, 0.5, -0.5]])
        labels = (torch.rand(n, generator=generator) < 0.5).long()
        points = centres[labels] + 0.5 * torch.randn(n, 4, generator=generator)
        points = (points - points.mean(0)) / points.std(0)
        return cls(4, 3, burn_in=200), points
