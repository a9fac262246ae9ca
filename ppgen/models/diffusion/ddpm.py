"""Denoising diffusion probabilistic models (Ho et al. 2020) as a Pyro model/guide pair.

The guide is the fixed forward (noising) process and the model the learnt reverse chain,

.. math::
    q(x_{1:T} \\mid x_0) = \\prod_{t=1}^T N(x_t; \\sqrt{1-\\beta_t}\\, x_{t-1}, \\beta_t I), \\qquad
    p(x_{0:T}) = N(x_T; 0, I) \\prod_{t=2}^{T} N(x_{t-1}; \\mu_\\theta(x_t, t), \\sigma_t^2 I)
      \\; p(x_0 \\mid x_1),

with :math:`\\mu_\\theta(x_t, t) = c_1(t)\\, \\hat x_0 + c_2(t)\\, x_t` the mean of
:math:`q(x_{t-1} \\mid x_t, x_0 = \\hat x_0)`, :math:`\\hat x_0 = (x_t - \\sqrt{1-\\bar\\alpha_t}\\,
\\epsilon_\\theta(x_t, t)) / \\sqrt{\\bar\\alpha_t}` (optionally clipped to [-1, 1]), see
:mod:`ppgen.models.diffusion.schedules`. The Pyro sites are ``"x_1"`` ... ``"x_T"``
(``x_t`` in model units) and ``"obs"`` (:math:`x_0`, the data), all in the plate ``"data"``,
so ``Trace_ELBO`` on ``(model, guide)`` is the variational bound

.. math::
    \\log p(x_0) \\ge -\\Big(\\underbrace{\\mathrm{KL}(q(x_T \\mid x_0) \\| p(x_T))}_{L_T}
      + \\sum_{t=2}^T \\underbrace{E_q\\, \\mathrm{KL}(q(x_{t-1} \\mid x_t, x_0) \\| p(x_{t-1} \\mid x_t))}_{L_{t-1}}
      \\underbrace{- E_q \\log p(x_0 \\mid x_1)}_{L_0}\\Big).

Training (``ppgen.fit(ddpm, x, SVI(...))``) minimises instead the noise-prediction
loss :math:`L_\\text{simple}` (Ho et al., eq. 14) through :meth:`DDPM.training_objective`:
:math:`t \\sim U\\{1..T\\}`, :math:`\\epsilon \\sim N(0, I)`,
:math:`\\| \\epsilon - \\epsilon_\\theta(\\sqrt{\\bar\\alpha_t} x_0 + \\sqrt{1 - \\bar\\alpha_t}\\epsilon, t) \\|^2`.
Each :math:`L_{t-1}` (:math:`t \\ge 2`) is :math:`\\lambda_t = \\beta_t^2 / (2\\sigma_t^2 \\alpha_t
(1 - \\bar\\alpha_t))` times that squared error (Ho et al., eq. 12; without clipping), so
:math:`L_\\text{simple}` is the bound with its terms reweighted (and :math:`L_T` dropped: it has
no parameters). ``SVI(elbo="trace")`` trains on the bound itself.

The decoder :math:`p(x_0 \\mid x_1)` and hence what the bound bounds:

* ``decoder="gaussian"``: :math:`N(\\mu_\\theta(x_1, 1), \\sigma_1^2)` in model units. Data
  are first standardised, :math:`z = c\\,(x - m)/s` (per dimension for vectors, one
  :math:`m, s` for images; set from the first data fitted, or :math:`m = 0, s = 1` with
  ``standardize=False``; :math:`c` is ``data_scale``, default 1); the Jacobian
  :math:`-\\sum \\log (s / c)` is included, so
  ``log_prob`` bounds the log *density* of :math:`x` in nats. On discrete data
  (pixels) this is a density, not a probability, and its bits per dimension are not
  comparable with those of discrete models.
* ``decoder="discretized"``: Ho et al.'s discretized Gaussian for data on ``levels``
  equally spaced values in [0, 1] (pixel / 255 for 256 levels, the embedded 8x8 digits
  / 16 for 17 levels), mapped to [-1, 1]; bins of width :math:`2/(L-1)` with open end
  bins. ``log_prob`` then bounds the log *probability* of the discrete image, and
  :meth:`DDPM.bits_per_dim` is the number quoted in the papers.

Training state: with ``ema_decay`` (default 0.999) the model keeps an exponential moving
average of the denoiser's weights (:class:`~ppgen.nn.ema.WeightAverage`, as Ho et al.),
updated after every optimiser step, kept in checkpoints (a resumed run equals an
uninterrupted one) and in saved fits; everything run without gradients (sampling,
``log_prob``, held-out losses, ``Trace_ELBO.loss`` under ``torch.no_grad``) uses it once
training has updated it (a training loop of one's own, which never calls
:meth:`DDPM.after_step`, leaves the trained weights in use).

Recipe for sharp low-dimensional mixtures (the ring of 8 and the grid of 25 Gaussians,
whose components are 1-2.5% as wide as the data): ``DDPM(2, hidden=(128, 128, 128),
variance="posterior", data_scale=4.0)``, Adam 2e-3 decayed to 2e-4, batch 512, 20,000-30,000
steps. At unit scale the modes are narrower than the noise of all but the first few of the
1000 linear-schedule steps, and the network's error sends DDIM's deterministic paths between
modes. With the data at sd 4 both samplers find every mode of the ring and the grid
(``benchmarks/bench_ddpm.py``, RESULTS.md "DDPM").

``log_prob`` returns the bound per datum (a Monte Carlo estimate with one draw of
:math:`x_t` per step, or the mean of ``num_samples``; :math:`L_T` and the KLs exactly);
``log_prob_kind = "bound"``. ``sample`` draws by ancestral sampling (all :math:`T`
steps) or DDIM; see :mod:`ppgen.models.diffusion.sampling`. With ``num_classes > 0``
the model is conditional on a label (data ``(x, labels)``), trained with classifier-free
guidance: labels are replaced by a null label with probability ``guidance_dropout``, so
the same network is also the unconditional model (``labels=None`` everywhere means it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch

from ...errors import DataError, ModelError
from ...model import GenerativeModel
from ...nn.denoisers import MLPDenoiser, UNetDenoiser
from ...nn.ema import WeightAverage
from ..synthetic import two_moons
from . import sampling
from .bound import PASS_ELEMENTS, variational_bound
from .data import DiffusionData
from .schedules import SCHEDULES, VARIANCES, DiscretizedNormal, Schedule, make_betas

DEFAULT_HIDDEN = {"mlp": (256, 256, 256), "unet": (32, 64)}
#: DDIM's default time steps (``sample(sampler="ddim", spacing=...)``)
DDIM_SPACING = "leading"


def _integer(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class DDPM(DiffusionData, GenerativeModel):
    """Denoising diffusion probabilistic model; see the module docstring.

    Parameters
    ----------
    data_dim : int, optional
        Features per datum (vectors); give this or ``image_shape``.
    image_shape : (C, H, W), optional
        Images; data may come as ``(N, C, H, W)`` or flat ``(N, C*H*W)``.
    timesteps : int
        :math:`T`, at least 2.
    schedule : {"linear", "cosine"}
        The betas (:mod:`ppgen.models.diffusion.schedules`).
    variance : {"beta", "posterior"}
        :math:`\\sigma_t^2` of the reverse kernels: :math:`\\beta_t` or :math:`\\tilde\\beta_t`.
    denoiser : {"mlp", "unet"}, optional
        The network :math:`\\epsilon_\\theta`; default ``"mlp"`` for vectors, ``"unet"`` for images.
    hidden : sequence of int, optional
        MLP hidden widths (default 256, 256, 256) or U-Net channels per resolution
        (default 32, 64).
    time_dim : int
        Width of the sinusoidal time-step features.
    activation : str
        The MLP's activation.
    num_classes : int
        0 for an unconditional model; else labels ``0..num_classes-1``.
    guidance_dropout : float
        Probability of training on the null label (classifier-free guidance).
    decoder : {"gaussian", "discretized"}
    levels : int
        Number of discrete values of the data (``decoder="discretized"``).
    standardize : bool
        Standardise data for the Gaussian decoder (see the module docstring).
    data_scale : float
        The standard deviation the standardised data get in model units (default 1):
        :math:`z = \\text{data\\_scale}\\,(x - m) / s` (:math:`z = \\text{data\\_scale}\\; x`
        with ``standardize=False``). Larger values put more of the
        schedule's time steps (and of training) where fine structure is resolved;
        see the module docstring's recipe for sharp low-dimensional mixtures.
    clip_denoised : bool, optional
        Clip :math:`\\hat x_0` to [-1, 1] in the reverse kernels; default: with the
        discretized decoder (whose data live there).
    ema_decay : float or None
        Keep an exponential moving average of the denoiser's weights with this decay
        (:class:`~ppgen.nn.ema.WeightAverage`, updated after every optimiser step of
        ``ppgen.fit``, with the warm-up :math:`\\min(d, (1 + n)/(10 + n))`); None or 0: none.
        Whenever gradients are off (sampling, the bound, ``log_prob``, held-out losses)
        the model uses the average once training has updated it; with gradients on
        (training) the trained weights.
    """

    log_prob_kind = "bound"
    methods = ("svi",)

    def __init__(self, data_dim: int | None = None, *, image_shape: Sequence[int] | None = None,
                 timesteps: int = 1000, schedule: str = "linear", variance: str = "beta",
                 denoiser: str | torch.nn.Module | None = None, hidden: Sequence[int] | None = None,
                 time_dim: int = 64, activation: str = "silu", num_classes: int = 0, guidance_dropout: float = 0.1,
                 decoder: str = "gaussian", levels: int = 256, standardize: bool = True,
                 clip_denoised: bool | None = None, data_scale: float = 1.0, ema_decay: float | None = 0.999) -> None:
        super().__init__()
        if (data_dim is None) == (image_shape is None):
            raise ModelError("give data_dim (vectors) or image_shape (images), not both or neither")
        if image_shape is not None:
            shape: tuple[int, ...] = tuple(image_shape) if isinstance(image_shape, (list, tuple)) else ()
            if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
                raise ModelError(f"image_shape must be (channels, height, width), got {image_shape!r}")
            self.event_shape: tuple[int, ...] = shape
        else:
            self.event_shape = (_integer("data_dim", data_dim, 1),)
        self.timesteps = _integer("timesteps", timesteps, 2)
        if schedule not in SCHEDULES:
            raise ModelError(f"schedule={schedule!r}: choose one of {SCHEDULES}")
        if variance not in VARIANCES:
            raise ModelError(f"variance={variance!r}: choose one of {VARIANCES}")
        denoiser = denoiser or ("unet" if image_shape is not None else "mlp")
        if denoiser not in DEFAULT_HIDDEN:
            raise ModelError(f"denoiser={denoiser!r}: choose 'mlp' or 'unet'")
        if denoiser == "unet" and image_shape is None:
            raise ModelError("denoiser='unet' needs image_shape=(C, H, W)")
        if decoder not in ("gaussian", "discretized"):
            raise ModelError(f"decoder={decoder!r}: choose 'gaussian' or 'discretized'")
        self.num_classes = _integer("num_classes", num_classes, 0)
        if not (isinstance(guidance_dropout, (int, float)) and 0 <= guidance_dropout < 1):
            raise ModelError(f"guidance_dropout must be in [0, 1), got {guidance_dropout!r}")
        self.schedule_name, self.variance, self.denoiser_name = schedule, variance, denoiser
        self.guidance_dropout, self.decoder = float(guidance_dropout), decoder
        self.levels = _integer("levels", levels, 2)
        self.standardize = bool(standardize)
        if isinstance(data_scale, bool) or not isinstance(data_scale, (int, float)) or not (
                math.isfinite(data_scale) and data_scale > 0):
            raise ModelError(f"data_scale must be a positive number, got {data_scale!r}")
        self.data_scale = float(data_scale)
        if decoder == "discretized" and self.data_scale != 1:
            raise ModelError("data_scale is for the Gaussian decoder; the discretized one maps [0, 1] to [-1, 1]")
        self.clip_denoised = decoder == "discretized" if clip_denoised is None else bool(clip_denoised)
        self.time_dim, self.activation = _integer("time_dim", time_dim, 2), activation
        self.hidden = DEFAULT_HIDDEN[denoiser] if hidden is None else hidden
        self.schedule = Schedule(make_betas(schedule, self.timesteps), variance)
        try:
            if denoiser == "mlp":
                self.denoiser = MLPDenoiser(self.data_dim, self.hidden, time_dim, self.num_classes, activation)
            else:
                self.denoiser = UNetDenoiser(self.event_shape, self.hidden, time_dim, self.num_classes)
        except ValueError as exc:
            raise ModelError(f"DDPM: {exc}") from None
        self.hidden = tuple(int(h) for h in self.hidden)
        if ema_decay is not None and not (isinstance(ema_decay, (int, float)) and not isinstance(ema_decay, bool)
                                          and 0 <= ema_decay < 1):
            raise ModelError(f"ema_decay must be None or a number in [0, 1), got {ema_decay!r}")
        self.ema_decay = float(ema_decay) if ema_decay else None
        self.ema = WeightAverage(self.denoiser, self.ema_decay) if self.ema_decay else None
        if self.ema is not None:
            self.register_load_state_dict_post_hook(_average_missing)
        # Data units <-> model units: z = (x - shift) / scale.
        fixed = decoder == "discretized"
        self.register_buffer("shift", torch.full(self.event_shape, 0.5 if fixed else 0.0))
        self.register_buffer("scale", torch.full(self.event_shape, 0.5 if fixed else 1.0 / self.data_scale))
        self.register_buffer("initialized", torch.tensor(False))

    # ------------------------------------------------------------ protocol
    def get_config(self):
        config = {"timesteps": self.timesteps, "schedule": self.schedule_name, "variance": self.variance,
                  "denoiser": self.denoiser_name, "hidden": list(self.hidden), "time_dim": self.time_dim,
                  "activation": self.activation, "num_classes": self.num_classes,
                  "guidance_dropout": self.guidance_dropout, "decoder": self.decoder, "levels": self.levels,
                  "standardize": self.standardize, "data_scale": self.data_scale,
                  "clip_denoised": self.clip_denoised,
                  "ema_decay": self.ema_decay}
        if self.is_image:
            return {"image_shape": list(self.event_shape), **config}
        return {"data_dim": self.data_dim, **config}

    def global_sites(self):
        return ()

    @property
    def is_image(self):
        return len(self.event_shape) == 3

    @property
    def data_dim(self):
        return math.prod(self.event_shape)

    @property
    def null_label(self):
        """The label that means "no label" (classifier-free guidance)."""
        return self.num_classes

    def initialize(self, data, generator=None, condition=None, **kwargs):
        """Before the first fit: the standardisation from ``data`` (Gaussian decoder),
        and the network's weights redrawn from ``generator`` (torch's default
        initialisation), so ``fit(..., seed=s)`` is reproducible."""
        if bool(self.initialized):
            return
        if self.num_classes and condition is None:
            raise DataError(f"data: this DDPM is conditional (num_classes={self.num_classes}); "
                            "fit it on (x, labels)")
        x = self.check_data(data)
        if self.decoder == "gaussian" and self.standardize:
            dims = 0 if not self.is_image else tuple(range(x.dim()))
            shift = x.mean(dims)
            scale = x.std(dims) if x.shape[0] > 1 else torch.ones_like(shift)
            self.shift.copy_(shift.expand(self.event_shape))
            scale = torch.where(scale > 0, scale, torch.ones_like(scale)) / self.data_scale
            self.scale.copy_(scale.expand(self.event_shape))
        if generator is not None:
            seed = int(torch.randint(2**62, (1,), generator=generator))
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                for module in self.denoiser.modules():
                    if module is not self.denoiser and hasattr(module, "reset_parameters"):
                        module.reset_parameters()
                if hasattr(self.denoiser, "zero_output"):
                    self.denoiser.zero_output()
        if self.ema is not None:
            self.ema.reset(self.denoiser)
        self.initialized.fill_(True)

    # ------------------------------------------------------------ the weight average (hooks of SVI's loop)
    def after_step(self):
        """Called by ``ppgen.fit``'s SVI loop after every optimiser step: update the average."""
        if self.ema is not None:
            self.ema.update(self.denoiser)

    def training_state(self):
        """What a training checkpoint must keep besides the parameters: the average."""
        return {} if self.ema is None else self.ema.state()

    def load_training_state(self, state):
        if self.ema is not None and state:
            self.ema.load_state(state)

    def active_denoiser(self):
        """The network in use: the weight average when gradients are off (and there is one
        that training has updated: a loop that never calls :meth:`after_step` leaves the
        trained weights in use), else the trained network."""
        if self.ema is not None and not torch.is_grad_enabled() and int(self.ema.updates) > 0:
            return self.ema.average
        return self.denoiser

    # ------------------------------------------------------------ the network
    def network(self, x, t, labels=None):
        """:math:`\\epsilon_\\theta(x, t, c)` for ``x`` of shape ``(*batch, *event_shape)`` (model
        units); ``t`` an int or a tensor and ``labels`` (or None) broadcastable to ``batch``."""
        k = len(self.event_shape)
        batch = x.shape[:x.dim() - k]
        steps = self.schedule.steps[t] if isinstance(t, int) else t
        flat_t = steps.expand(batch).reshape(-1)
        flat_labels = None if labels is None else labels.expand(batch).reshape(-1)
        rows = x.reshape((-1,) + (self.event_shape if self.denoiser_name == "unet" else (self.data_dim,)))
        return self.active_denoiser()(rows, flat_t, flat_labels).reshape(x.shape)

    def predict(self, x, t, labels=None, guidance=None):
        """``(x0_hat, eps_hat)`` at ``x`` = :math:`x_t`: the network's (guided) noise and
        the :math:`x_0` it implies, clipped to [-1, 1] when the model clips (the noise is
        then recomputed to match)."""
        k = len(self.event_shape)
        batch = x.shape[:x.dim() - k]
        if guidance and labels is not None:
            flat = x.reshape((-1,) + self.event_shape)
            steps = self.schedule.steps[t] if isinstance(t, int) else t
            eps = sampling.guided_noise(self.network, flat, steps.expand(batch).reshape(-1),
                                        labels.expand(batch).reshape(-1), guidance, self.null_label)
            eps = eps.reshape(x.shape)
        else:
            eps = self.network(x, t, labels)
        x0 = self.schedule.predict_x0(x, t, eps)
        if self.clip_denoised:
            x0 = x0.clamp(-1, 1)
            eps = self.schedule.predict_eps(x, t, x0)
        return x0, eps

    def reverse(self, x, t, labels=None):
        """Mean and standard deviation of :math:`p(x_{t-1} \\mid x_t)` (model units)."""
        x0, _ = self.predict(x, t, labels)
        mean, _ = self.schedule.posterior(x0, x, t)
        return mean, self.schedule.at(self.schedule.reverse_std, t, x)

    def decoder_distribution(self, mean, std):
        """:math:`p(x_0 \\mid x_1)` in data units from its model-units mean and sd."""
        loc, scale = self.shift + self.scale * mean, self.scale * std
        if self.decoder == "discretized":
            base = DiscretizedNormal(loc, scale.expand_as(loc), self.levels)
        else:
            base = dist.Normal(loc, scale.expand_as(loc))
        return base.to_event(len(self.event_shape))

    # ------------------------------------------------------------ Pyro programs
    def _plate(self, data, condition, n, subsample_size):
        if data is not None:
            size = data.shape[0]
        elif condition is not None:
            size = condition.shape[0]
        else:
            size = 1 if n is None else _integer("n", n, 1)
        return pyro.plate(self.data_plate, size, subsample_size=subsample_size, device=self.device)

    def model(self, data=None, *, condition=None, n=None, subsample_size=None):
        """The reverse chain: ``x_T`` ~ N(0, I), ``x_{t-1}`` ~ N(mu(x_t, t), sigma_t^2) for
        t = T..2, then ``obs`` ~ p(x_0 | x_1), observed when ``data`` is given."""
        with self._plate(data, condition, n, subsample_size) as idx:
            x0 = _take(data, idx, subsample_size)
            labels = _take(condition, idx, subsample_size)
            zeros = self.shift.new_zeros((idx.shape[0],) + self.event_shape)
            k = len(self.event_shape)
            x = pyro.sample(f"x_{self.timesteps}", dist.Normal(zeros, 1.0).to_event(k))
            for t in range(self.timesteps, 1, -1):
                mean, std = self.reverse(x, t, labels)
                x = pyro.sample(f"x_{t - 1}", dist.Normal(mean, std.expand_as(mean)).to_event(k))
            return pyro.sample(self.observed_site, self.decoder_distribution(*self.reverse(x, 1, labels)), obs=x0)

    def guide(self, data=None, *, condition=None, n=None, subsample_size=None):
        """The forward process: ``x_t`` ~ N(sqrt(1 - beta_t) x_{t-1}, beta_t) for t = 1..T,
        from the data in model units (nothing to do without data)."""
        if data is None:
            return None
        schedule, k = self.schedule, len(self.event_shape)
        with self._plate(data, condition, n, subsample_size) as idx:
            x = self.to_model_units(_take(data, idx, subsample_size))
            for t in range(1, self.timesteps + 1):
                mean = schedule.alphas[t].sqrt() * x
                x = pyro.sample(f"x_{t}", dist.Normal(mean, schedule.betas[t].sqrt().expand_as(mean)).to_event(k))
        return x

    def training_objective(self, data, *, condition=None, subsample_size=None, n=None):
        """:math:`L_\\text{simple}` summed over the (mini)batch and scaled by ``N / B``."""
        with self._plate(data, condition, n, subsample_size) as idx:
            x0 = self.to_model_units(_take(data, idx, subsample_size))
            size, batch = data.shape[0], x0.shape[0]
            t = torch.randint(1, self.timesteps + 1, (batch,), device=x0.device)
            eps = torch.randn_like(x0)
            xt = self.schedule.noised(x0, t, eps)
            labels = None
            if self.num_classes:
                labels = _take(condition, idx, subsample_size)
                if self.guidance_dropout > 0:
                    drop = torch.rand(batch, device=x0.device) < self.guidance_dropout
                    labels = labels.masked_fill(drop, self.null_label)
            rows = xt if self.denoiser_name == "unet" else xt.reshape(batch, -1)
            error = eps.reshape(rows.shape) - self.active_denoiser()(rows, t, labels)
            return error.pow(2).sum() * (size / batch)

    # ------------------------------------------------------------ densities
    def variational_bound(self, data, context=None, *, num_samples=1, seed=None, progress=False):
        """The bound and its terms per datum: a :class:`~ppgen.models.diffusion.bound.Bound`
        (``context``: the class labels of a conditional model)."""
        x, labels = self._split(data, context, "data")
        return variational_bound(self, x, labels, num_samples=num_samples, seed=seed, progress=progress)

    def log_prob(self, data, context=None, *, num_samples=1, seed=None, progress=False):
        """The variational lower bound on :math:`\\log p(x_i)` per datum, in nats (see the module
        docstring for what it bounds). ``seed`` fixes its draws (default: torch's global state)."""
        return self.variational_bound(data, context, num_samples=num_samples, seed=seed,
                                      progress=progress).log_prob

    def bits_per_dim(self, data, context=None, *, num_samples=1, seed=None, progress=False):
        """The negative bound in bits per dimension, per datum: :math:`-\\mathcal{L} / (D \\ln 2)`."""
        return self.variational_bound(data, context, num_samples=num_samples, seed=seed,
                                      progress=progress).bits_per_dim

    def log_likelihood(self, data, params=None, condition=None, **kwargs):
        """``(1, N)``: the bound per datum (the weights are the one draw)."""
        return variational_bound(self, data, condition).log_prob[None]

    # ------------------------------------------------------------ sampling
    def sample(self, n, params=None, *, sampler="ancestral", steps=None, eta=0.0, spacing=None, context=None,
               guidance=None, generator=None, labels=None):
        """``n`` new data points in data units, shape ``(n, *event_shape)``.

        Parameters
        ----------
        sampler : {"ancestral", "ddim"}
            Ancestral sampling over all :math:`T` steps, or DDIM over ``steps``.
        steps : int, optional
            DDIM steps (default 50, at most :math:`T`).
        eta : float
            DDIM's noise: 0 deterministic given :math:`x_T`, 1 DDPM-like.
        spacing : {"leading", "trailing", "linspace", "quadratic"}, optional
            DDIM's time steps (:mod:`ppgen.models.diffusion.sampling`); default
            :data:`DDIM_SPACING`.
        context : int or tensor ``(n,)``, optional
            Class labels of a conditional model (None: the unconditional model); the
            name every family gives its conditioning data (``labels=`` is the same).
        guidance : float, optional
            Classifier-free guidance weight :math:`w` (needs labels).
        generator : torch.Generator, optional
            The source of all draws (default: torch's global random state).

        The last step returns the decoder's mean (the nearest level with the
        discretized decoder), as Ho et al. do.
        """
        n = _integer("n", n, 1)
        if labels is not None and context is not None:
            raise ModelError("give the class labels once: context=... (labels= is the same)")
        labels = context if labels is None else labels
        spacing = sampling.check_settings(sampler, steps, eta, spacing, guidance, labels is not None, DDIM_SPACING)
        labels = None if labels is None else self.check_labels(labels, n, "labels")
        noise = sampling.standard_normal(generator)
        rows = max(1, PASS_ELEMENTS // self.data_dim)
        out = []
        for start in range(0, n, rows):
            size = min(rows, n - start)
            part = None if labels is None else labels[start:start + size]
            x = noise(self.shift.new_empty((size,) + self.event_shape))
            if sampler == "ancestral":
                x = sampling.ancestral(self, x, part, guidance, noise)
            else:
                x = sampling.ddim(self, x, 50 if steps is None else steps, eta, part, guidance, noise, spacing)
            out.append(self.to_data_units(x))
        return torch.cat(out)

    def replicate(self, params, data, condition=None, **kwargs):
        return self.sample(data.shape[0], context=condition)

    @classmethod
    def example(cls, seed=0):
        """A small DDPM (T = 20, cosine schedule, 32-32 MLP) and 256 points of two moons."""
        data = two_moons(256, generator=torch.Generator().manual_seed(seed))
        return cls(2, timesteps=20, schedule="cosine", hidden=(32, 32)), data


def _average_missing(module, incompatible):
    """A state without the weight average (saved by a model that kept none): average = weights."""
    missing = [k for k in incompatible.missing_keys if k.startswith("ema.")]
    if missing:
        module.ema.reset(module.denoiser)
        for key in missing:
            incompatible.missing_keys.remove(key)


def _take(values, idx, subsample_size):
    if values is None or subsample_size is None:
        return values
    return values[idx]
