"""Generative adversarial networks: :class:`GAN`.

The generator is a Pyro program with an implicit density,

.. math::
    z_i \\sim N(0, I_{d}), \\qquad x_i = G(z_i),

``z`` a sample site and ``x`` a deterministic site, so ``Predictive``,
``pyro.condition`` and the poutine handlers work on it (the program runs
:math:`G` in evaluation mode: batch norm at its running statistics, so each
:math:`x_i` depends on its own :math:`z_i`). There is no tractable
:math:`p(x)` (``log_prob_kind = "none"``): the networks are trained by
``ppgen.fit(gan, x, Adversarial(...))`` against a discriminator :math:`D`, and
judged by the sample-quality metrics of :mod:`ppgen.diagnostics`.

Packing (PacGAN, Lin et al. 2018) is part of the model: with ``pack = m`` the
discriminator sees ``m`` samples at once, all real or all generated, joined
along the feature axis (vectors) or the channel axis (images), which penalises
a generator that drops modes. The ready networks are in
:mod:`ppgen.nn.gan_networks`.

PacGAN's experiment (a 3 x 128 generator, a 2 x 128 maxout discriminator,
samples scored by :func:`ppgen.diagnostics.mode_coverage`) is repeated by
``benchmarks/bench_gan.py``; RESULTS.md has its figures beside the paper's.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ...data import as_tensor
from ...errors import DataError, ModelError
from ...model import GenerativeModel
from ...nn.gan_networks import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator, normal_init

READY = ("mlp", "conv")


@contextlib.contextmanager
def _evaluating(module):
    """``module`` in evaluation mode for the block, then back in its mode."""
    training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(training)


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ModelError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _widths(name, value):
    try:
        out = tuple(int(w) for w in value)
    except (TypeError, ValueError):
        out = ()
    if not out or any(w < 1 for w in out):
        raise ModelError(f"{name} must be a non-empty sequence of positive integers, got {value!r}")
    return out


def _network_name(name, value):
    if isinstance(value, nn.Module):
        return value
    if isinstance(value, dict) and "custom" in value:
        raise ModelError(
            f"{name}={value!r} names a user-supplied network ({value['custom']}), which a saved "
            "file cannot rebuild; build the GAN with your networks and pass it: "
            "ppgen.load(path, model=GAN(my_generator, my_discriminator, ...))")
    if value not in READY:
        raise ModelError(f"{name}={value!r}: choose one of {READY} or pass a torch.nn.Module")
    return value


class GAN(GenerativeModel):
    """A GAN whose generator is a Pyro program; trained by ``Adversarial``.

    Parameters
    ----------
    generator, discriminator : {"mlp", "conv"} or torch.nn.Module
        Ready networks (:mod:`ppgen.nn.gan_networks`: MLPs for vectors, DCGAN-like
        for images) or your own. Your generator maps ``(N, latent_dim)`` to
        ``(N, *event_shape)``; your discriminator maps ``(B, pack * data_dim)``
        (vectors) or ``(B, pack * C, H, W)`` (images) to ``(B,)`` or ``(B, 1)``
        logits (critic values for the Wasserstein loss).
    data_dim : int
        Size of a data vector (vectors).
    image_shape : (C, H, W)
        Shape of an image (images); give exactly one of ``data_dim`` and ``image_shape``.
    latent_dim : int, optional
        Size of :math:`z`; default ``data_dim`` for vectors (2 for 2-D data, as
        PacGAN), 64 for images.
    generator_hidden, discriminator_hidden : sequence of int
        Hidden widths of the ready MLPs (default PacGAN's: four 400-unit layers,
        three 200-unit maxout layers).
    maxout_pieces : int
        Pieces per maxout unit of the ready MLP discriminator (1: plain ``activation`` units).
    batch_norm : bool
        Batch normalisation in the ready MLP generator.
    activation : str
        Hidden activation of the ready MLP generator (and of the MLP
        discriminator when ``maxout_pieces=1``).
    channels : sequence of int
        Feature maps of the ready convolutional networks.
    output : {"identity", "sigmoid", "tanh"}, optional
        The ready generator's output map; default ``"identity"`` for vectors,
        ``"sigmoid"`` for images (pixels in [0, 1]).
    pack : int
        PacGAN's degree :math:`m`: samples per discriminator input.
    init_std : float
        ``initialize`` (run by the first ``fit``) redraws the ready networks'
        weights from :math:`N(0, \\text{init\\_std}^2)` with the fit's seed; your own
        networks keep their weights.
    """

    log_prob_kind = "none"
    methods = ("adversarial",)
    observed_site = "x"

    def __init__(self, generator: str | nn.Module = "mlp", discriminator: str | nn.Module = "mlp", *,
                 data_dim: int | None = None, image_shape: Sequence[int] | None = None, latent_dim: int | None = None,
                 generator_hidden: Sequence[int] = (400, 400, 400, 400),
                 discriminator_hidden: Sequence[int] = (200, 200, 200), maxout_pieces: int = 5,
                 batch_norm: bool = True, activation: str = "relu", channels: Sequence[int] = (64, 128),
                 output: str | None = None, pack: int = 1, init_std: float = 0.02) -> None:
        super().__init__()
        generator = _network_name("generator", generator)
        discriminator = _network_name("discriminator", discriminator)
        if (data_dim is None) == (image_shape is None):
            raise ModelError("give exactly one of data_dim (vectors) and image_shape (images)")
        if data_dim is not None:
            self.event_shape = (_positive_int("data_dim", data_dim),)
        else:
            shape = tuple(image_shape) if isinstance(image_shape, (list, tuple)) else ()
            if len(shape) != 3:
                raise ModelError(f"image_shape must be (channels, height, width), got {image_shape!r}")
            self.event_shape = tuple(_positive_int("image_shape", s) for s in shape)
        images = image_shape is not None
        default_latent = 64 if images else self.event_shape[0]
        self.latent_dim = _positive_int("latent_dim", default_latent if latent_dim is None else latent_dim)
        self.pack = _positive_int("pack", pack)
        self.generator_hidden = _widths("generator_hidden", generator_hidden)
        self.discriminator_hidden = _widths("discriminator_hidden", discriminator_hidden)
        self.maxout_pieces = _positive_int("maxout_pieces", maxout_pieces)
        self.channels = _widths("channels", channels)
        self.batch_norm, self.activation = bool(batch_norm), activation
        self.output = output if output is not None else ("sigmoid" if images else "identity")
        if not (isinstance(init_std, numbers.Real) and init_std > 0):
            raise ModelError(f"init_std must be a positive number, got {init_std!r}")
        self.init_std = float(init_std)
        for name, value in (("generator", generator), ("discriminator", discriminator)):
            if value == "conv" and not images:
                raise ModelError(f"{name}='conv' needs image_shape=(C, H, W); use 'mlp' for vectors")
        self._names = {"generator": generator if isinstance(generator, str) else {"custom": type(generator).__name__},
                       "discriminator": discriminator if isinstance(discriminator, str)
                       else {"custom": type(discriminator).__name__}}
        try:
            self.generator = generator if isinstance(generator, nn.Module) else self._ready_generator(generator)
            self.discriminator = (discriminator if isinstance(discriminator, nn.Module)
                                  else self._ready_discriminator(discriminator))
        except ValueError as exc:
            raise ModelError(f"GAN: {exc}") from None
        self.register_buffer("prior_loc", torch.zeros(self.latent_dim))
        self.register_buffer("prior_scale", torch.ones(self.latent_dim))
        self.register_buffer("initialized", torch.tensor(False))

    def _ready_generator(self, kind):
        if kind == "mlp":
            return MLPGenerator(self.latent_dim, self.data_size, self.generator_hidden, self.activation,
                                self.batch_norm, self.output)
        return ConvGenerator(self.latent_dim, self.event_shape, self.channels, self.output)

    def _ready_discriminator(self, kind):
        if kind == "mlp":
            return MLPDiscriminator(self.pack * self.data_size, self.discriminator_hidden, self.maxout_pieces,
                                    self.activation)
        return ConvDiscriminator(self.event_shape, self.channels, self.pack)

    @property
    def data_size(self):
        return int(torch.Size(self.event_shape).numel())

    @property
    def images(self):
        return len(self.event_shape) == 3

    def get_config(self):
        shape = {"image_shape": list(self.event_shape)} if self.images else {"data_dim": self.event_shape[0]}
        return {**self._names, **shape, "latent_dim": self.latent_dim,
                "generator_hidden": list(self.generator_hidden),
                "discriminator_hidden": list(self.discriminator_hidden), "maxout_pieces": self.maxout_pieces,
                "batch_norm": self.batch_norm, "activation": self.activation, "channels": list(self.channels),
                "output": self.output, "pack": self.pack, "init_std": self.init_std}

    def global_sites(self):
        return ()

    # ------------------------------------------------------------ data
    def check_data(self, data, name="data"):
        x = as_tensor(data, name, dtype=self.dtype, device=self.device)
        if tuple(x.shape[1:]) != self.event_shape or x.dim() != len(self.event_shape) + 1:
            raise DataError(f"{name}: expected shape (N, {', '.join(map(str, self.event_shape))}), "
                            f"got {tuple(x.shape)}")
        return x

    def initialize(self, data, generator=None, **kwargs):
        """Before the first fit: redraw the ready networks' weights from ``generator``."""
        if bool(self.initialized):
            return
        for name in ("generator", "discriminator"):
            if isinstance(self._names[name], str):
                normal_init(getattr(self, name), generator, self.init_std)
        self.initialized.fill_(True)

    # ------------------------------------------------------------ the networks
    def generate(self, z):
        """:math:`G(z)` for codes ``(..., latent_dim)``: ``(..., *event_shape)``."""
        batch = z.shape[:-1]
        return self.generator(z.reshape(-1, self.latent_dim)).reshape(batch + self.event_shape)

    def packed(self, x):
        """``(B * pack, *event_shape)`` samples as ``B`` discriminator inputs: consecutive
        groups of ``pack`` joined along the features (vectors) or channels (images)."""
        if x.shape[0] % self.pack:
            raise DataError(f"{x.shape[0]} samples cannot be packed in groups of pack={self.pack}")
        if self.images:
            c, h, w = self.event_shape
            return x.reshape(-1, self.pack * c, h, w)
        return x.reshape(-1, self.pack * self.data_size)

    def critic(self, packed):
        """The discriminator's logits (critic values) for packed inputs, ``(B,)``."""
        return self.discriminator(packed).reshape(packed.shape[0])

    def discriminate(self, x):
        """Logits for ``(B * pack, *event_shape)`` samples, one per pack of ``pack``: ``(B,)``."""
        return self.critic(self.packed(x))

    def generator_parameters(self):
        return [p for p in self.generator.parameters() if p.requires_grad]

    def discriminator_parameters(self):
        return [p for p in self.discriminator.parameters() if p.requires_grad]

    # ------------------------------------------------------------ the Pyro program
    def prior(self):
        """:math:`p(z) = N(0, I)`, one ``latent_dim`` vector per event."""
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    def model(self, data=None, *, n=None, subsample_size=None):
        """The generator as a Pyro program: ``z ~ N(0, I)``, ``x = G(z)`` (deterministic).

        The density of ``x`` is implicit, so ``data`` are *not* observed: given
        data, the program draws as many fakes as there are rows (``subsample_size``
        of them under minibatching); without, ``n`` (default 1). Returns ``x``.
        ``G`` runs in evaluation mode (batch norm at its running statistics), so
        each ``x_i`` depends on its own ``z_i`` only and running the program
        changes no state; training calls :meth:`generate` in training mode.
        """
        size = data.shape[0] if data is not None else (n or 1)
        with pyro.plate(self.data_plate, size, subsample_size=subsample_size):
            z = pyro.sample("z", self.prior())
            with _evaluating(self.generator):
                x = self.generate(z)
            return pyro.deterministic("x", x, event_dim=len(self.event_shape))

    def sample(self, n, params=None, generator=None):
        """``n`` new points, as ``model(n=n)`` draws them (``z`` from the prior, ``G`` in
        evaluation mode) without tracing it or recording gradients."""
        if not (isinstance(n, int) and n > 0):
            raise DataError(f"n must be a positive integer, got {n!r}")
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=self.dtype,
                        device=self.device if generator is None else generator.device).to(self.device)
        with torch.no_grad(), _evaluating(self.generator):
            return self.generate(z * self.prior_scale + self.prior_loc)

    def replicate(self, params, **kwargs):
        return self.sample(kwargs["data"].shape[0])

    # ------------------------------------------------------------ no density
    def _no_density(self):
        return ModelError(
            "GAN has log_prob_kind='none': its generator defines p(x) only implicitly, as the push-forward "
            "of N(0, I) through a network, which has no tractable density (not even a bound); compare "
            "samples with data instead (ppgen.diagnostics: energy distance, MMD, mode coverage)")

    def log_likelihood(self, data, params, **kwargs):
        raise self._no_density()

    def log_prob(self, data):
        raise self._no_density()

    @classmethod
    def example(cls, seed=0):
        """A tiny packed 2-D GAN and 64 points of the ring of eight Gaussians."""
        from ..synthetic import ring

        model = cls(data_dim=2, generator_hidden=(16, 16), discriminator_hidden=(16,), maxout_pieces=2, pack=2)
        return model, ring(64, generator=torch.Generator().manual_seed(seed))
