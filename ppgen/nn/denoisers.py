"""Noise-prediction networks :math:`\\epsilon_\\theta(x_t, t, c)` for diffusion models.

Both take a noisy input ``x`` of shape ``(B, *event_shape)``, integer (or float)
time steps ``t`` of shape ``(B,)`` and optional class labels ``(B,)`` (the value
``num_classes`` is the "no label" class of classifier-free guidance), and return
a tensor shaped like ``x``. The time step enters through a sinusoidal embedding
(Vaswani et al. 2017, as in Ho et al. 2020) followed by a small MLP; a label adds
a learnt embedding to it.

* :class:`MLPDenoiser` for vectors: every hidden layer adds a projection of the
  embedding before its activation.
* :class:`UNetDenoiser` for images ``(C, H, W)``: a small U-Net (Ronneberger et
  al. 2015 as used by Ho et al.): residual blocks with GroupNorm and SiLU, the
  embedding added inside each block, one resolution per entry of ``channels``
  (stride-2 convolutions down, nearest-neighbour upsampling back to the skip's
  exact size, so odd sizes such as 7x7 work), skip connections by concatenation.
  Sized for 8x8 (``channels=(32, 64)``: 8, 4) and 28x28 (``(32, 64, 64)``: 28, 14, 7).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .networks import make_activation


def timestep_embedding(t, dim, max_period=10000.0):
    """Sinusoidal features of ``t`` (any shape): ``(*t.shape, dim)``,
    :math:`[\\sin(t f_k), \\cos(t f_k)]` with :math:`f_k = P^{-k/(d/2)}`."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float64) / half)
    angles = t.to(torch.float64)[..., None] * freqs
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], -1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[..., :1])], -1)
    return emb


class _Embedding(nn.Module):
    """Time step (and label) to one conditioning vector of width ``width``."""

    def __init__(self, time_dim, width, num_classes):
        super().__init__()
        self.time_dim = int(time_dim)
        self.mlp = nn.Sequential(nn.Linear(self.time_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.num_classes = int(num_classes)
        self.labels = nn.Embedding(self.num_classes + 1, width) if self.num_classes else None

    def forward(self, t, labels=None):
        dtype = self.mlp[0].weight.dtype
        e = self.mlp(timestep_embedding(t, self.time_dim).to(dtype))
        if self.labels is not None:
            if labels is None:
                labels = torch.full(t.shape, self.num_classes, dtype=torch.long, device=t.device)
            e = e + self.labels(labels)
        return e


def _positive(name, values):
    values = tuple(int(v) for v in values)
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {values!r}")
    return values


class MLPDenoiser(nn.Module):
    """:math:`\\epsilon_\\theta` for vectors ``(B, dim)``.

    Parameters
    ----------
    dim : int
    hidden : sequence of int
        Hidden widths; layer :math:`l` computes
        :math:`h_l = \\mathrm{act}(W_l h_{l-1} + U_l e + b_l)` with :math:`e` the embedding.
    time_dim : int
        Width of the sinusoidal time features.
    num_classes : int
        Labels ``0..num_classes-1`` plus the null label ``num_classes``; 0: none.
    activation : str
    """

    def __init__(self, dim, hidden=(256, 256, 256), time_dim=64, num_classes=0, activation="silu"):
        super().__init__()
        hidden = _positive("hidden", hidden)
        self.dim = int(dim)
        width = hidden[0]
        self.embedding = _Embedding(time_dim, width, num_classes)
        sizes = (self.dim,) + hidden
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.inject = nn.ModuleList(nn.Linear(width, b, bias=False) for b in hidden)
        self.activation = make_activation(activation)
        self.out = nn.Linear(hidden[-1], self.dim)

    def forward(self, x, t, labels=None):
        e = self.embedding(t, labels)
        h = x
        for layer, inject in zip(self.layers, self.inject):
            h = self.activation(layer(h) + inject(e))
        return self.out(h)


def _norm(channels):
    return nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, plus the embedding, GroupNorm-SiLU-conv; a residual connection."""

    def __init__(self, cin, cout, width):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(width, cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x, e):
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.emb(self.act(e))[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return self.skip(x) + h


class UNetDenoiser(nn.Module):
    """:math:`\\epsilon_\\theta` for images ``(B, C, H, W)``: a small U-Net.

    Parameters
    ----------
    image_shape : (C, H, W)
    channels : sequence of int
        Feature maps at each resolution, finest first; each further entry halves
        the height and width (rounding up).
    time_dim : int
        Width of the sinusoidal time features; the embedding is ``4 * channels[0]`` wide.
    num_classes : int
    """

    def __init__(self, image_shape, channels=(32, 64), time_dim=64, num_classes=0):
        super().__init__()
        self.image_shape = _positive("image_shape", image_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape must be (channels, height, width), got {image_shape!r}")
        channels = _positive("channels", channels)
        width = 4 * channels[0]
        self.embedding = _Embedding(time_dim, width, num_classes)
        self.inp = nn.Conv2d(self.image_shape[0], channels[0], 3, padding=1)
        self.down_blocks, self.downs = nn.ModuleList(), nn.ModuleList()
        previous = channels[0]
        for i, c in enumerate(channels):
            self.down_blocks.append(_ResBlock(previous, c, width))
            if i < len(channels) - 1:
                self.downs.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
            previous = c
        self.middle = _ResBlock(previous, previous, width)
        self.up_blocks, self.ups = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(channels))):
            # the input is the upsampled maps (channels[i] wide) joined to the skip's
            self.up_blocks.append(_ResBlock(2 * channels[i], channels[i], width))
            if i > 0:
                self.ups.append(nn.Conv2d(channels[i], channels[i - 1], 3, padding=1))
        self.out_norm = _norm(channels[0])
        self.out = nn.Conv2d(channels[0], self.image_shape[0], 3, padding=1)
        self.zero_output()

    def zero_output(self):
        """Start the last convolution at zero (the network first predicts no noise),
        as Ho et al.'s and Nichol & Dhariwal's U-Nets do."""
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.zero_()

    def forward(self, x, t, labels=None):
        e = self.embedding(t, labels)
        h = self.inp(x)
        skips = []
        for i, block in enumerate(self.down_blocks):
            h = block(h, e)
            skips.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)
        h = self.middle(h, e)
        for j, block in enumerate(self.up_blocks):
            skip = skips[-1 - j]
            if j > 0:
                h = self.ups[j - 1](nn.functional.interpolate(h, size=skip.shape[-2:], mode="nearest"))
            h = block(torch.cat([h, skip], 1), e)
        return self.out(nn.functional.silu(self.out_norm(h)))
