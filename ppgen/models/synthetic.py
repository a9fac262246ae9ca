"""The 2-D Gaussian-mixture targets of the mode-collapse literature: a ring of 8 and a grid of 25.

Both are uniform mixtures of isotropic Gaussians, defined as in PacGAN (Lin et
al. 2018, "PacGAN: the power of two samples in generative adversarial
networks", synthetic-data experiments), whose 2D-ring and 2D-grid follow VEEGAN (Srivastava et
al. 2017). The numbers are those of the PacGAN authors' experiment
configurations (github.com/fjxmlzn/PacGAN, ``synthetic_data_experiments/
2DRing_GAN&PacGAN/config.py`` and ``2DGrid_GAN&PacGAN/config.py``):

- ``ring``: 8 centres :math:`(\\cos(2\\pi k/8), \\sin(2\\pi k/8))`, ``k = 0..7``
  (radius 1), variance :math:`10^{-4}` per coordinate (std 0.01);
- ``grid``: 25 centres :math:`(i, j)` for ``i, j`` in ``{-4, -2, 0, 2, 4}``
  (spacing 2), variance 0.0025 per coordinate (std 0.05).

:func:`ppgen.diagnostics.mode_coverage` scores samples against
:func:`mixture_modes`.
"""

from __future__ import annotations

import math

import torch

from ..errors import DataError

_NAMES = ("ring", "grid")


def mixture_modes(name):
    """The centres and the common standard deviation of a 2-D mixture target.

    Parameters
    ----------
    name : {"ring", "grid"}

    Returns
    -------
    centers : tensor ``(K, 2)`` of the default dtype (K = 8 or 25)
    std : float
        The standard deviation of every coordinate of every component.
    """
    dtype = torch.get_default_dtype()
    if name == "ring":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        centers = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
        return centers.to(dtype), 0.01
    if name == "grid":
        axis = torch.arange(-4.0, 5.0, 2.0, dtype=torch.float64)
        centers = torch.cartesian_prod(axis, axis)
        return centers.to(dtype), 0.05
    raise DataError(f"mixture name={name!r}: choose one of {', '.join(map(repr, _NAMES))}")


def _sample(name, n, generator):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"n must be a positive integer, got {n!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise DataError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    centers, std = mixture_modes(name)
    component = torch.randint(len(centers), (n,), generator=generator)
    noise = torch.randn(n, 2, generator=generator, dtype=centers.dtype)
    return centers[component] + std * noise


def ring(n, generator=None):
    """``n`` draws from the ring of 8 Gaussians (radius 1, std 0.01), a tensor ``(n, 2)``.

    ``generator`` (a CPU :class:`torch.Generator`) makes the draws reproducible.
    """
    return _sample("ring", n, generator)


def grid(n, generator=None):
    """``n`` draws from the 5x5 grid of Gaussians (spacing 2, std 0.05), a tensor ``(n, 2)``.

    ``generator`` (a CPU :class:`torch.Generator`) makes the draws reproducible.
    """
    return _sample("grid", n, generator)


def two_moons(n, noise=0.1, generator=None, labels=False):
    """``n`` points from scikit-learn's two moons: a random point on one of two
    interleaved half circles, plus isotropic Gaussian noise of sd ``noise``
    (with ``labels=True`` also which moon, 1.0 for the upper one, shape ``(n, 1)``)."""
    t = math.pi * torch.rand(n, generator=generator)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    points = torch.stack([x, y], -1) + noise * torch.randn(n, 2, generator=generator)
    return (points, upper.to(points.dtype)[:, None]) if labels else points


def sticky_sequences(n, length=4, stay=0.85, generator=None):
    """``n`` sequences ``(n, length, 2)`` of a sticky two-state Gaussian HMM: the state
    keeps its value with probability ``stay``; means ``(-1.5, 0)`` and ``(1.5, 1)``, noise
    sd 0.6. Data for comparing families that see them as sequences (HMMs) or as vectors."""
    states = torch.zeros(n, length, dtype=torch.long)
    states[:, 0] = torch.randint(2, (n,), generator=generator)
    for t in range(1, length):
        keep = torch.rand(n, generator=generator) < stay
        states[:, t] = torch.where(keep, states[:, t - 1], 1 - states[:, t - 1])
    means = torch.tensor([[-1.5, 0.0], [1.5, 1.0]])
    return means[states] + 0.6 * torch.randn(n, length, 2, generator=generator)
