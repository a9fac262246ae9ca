"""The 2-D mixture targets: PacGAN's centres and std, uniform weights, reproducible draws."""

import math

import pytest
import torch

from ppgen.datasets import grid, mixture_modes, ring
from ppgen.diagnostics import mode_coverage
from ppgen.errors import DataError


def test_ring_modes_are_pacgans():
    centers, std = mixture_modes("ring")
    assert std == 0.01 and centers.shape == (8, 2)
    assert torch.allclose(centers.norm(dim=1), torch.ones(8), atol=1e-6)  # radius 1
    assert torch.allclose(centers[0], torch.tensor([1.0, 0.0])) and torch.allclose(
        centers[2], torch.tensor([0.0, 1.0]), atol=1e-6)
    # neighbours 45 degrees apart: chord 2 sin(pi/8)
    gaps = (centers - centers.roll(1, dims=0)).norm(dim=1)
    assert torch.allclose(gaps, torch.full((8,), 2 * math.sin(math.pi / 8)), atol=1e-6)


def test_grid_modes_are_pacgans():
    centers, std = mixture_modes("grid")
    assert std == 0.05 and centers.shape == (25, 2)
    expected = {(float(i), float(j)) for i in range(-4, 5, 2) for j in range(-4, 5, 2)}
    assert {tuple(c.tolist()) for c in centers} == expected


@pytest.mark.parametrize("sampler,name", [(ring, "ring"), (grid, "grid")])
def test_draws_are_reproducible_and_uniform_over_modes(sampler, name):
    n = 20000
    a = sampler(n, generator=torch.Generator().manual_seed(3))
    b = sampler(n, generator=torch.Generator().manual_seed(3))
    assert a.shape == (n, 2) and a.dtype == torch.get_default_dtype() and torch.equal(a, b)
    centers, std = mixture_modes(name)
    cover = mode_coverage(a, centers, std)
    k = len(centers)
    counts = torch.tensor(cover.counts, dtype=torch.float64)
    # uniform weights: each count ~ Binomial(n * 0.989, 1/K); chi-square with K-1 dof, the 0.999
    # quantile is 26.1 (K=8) and 51.2 (K=25)
    expected = counts.sum() / k
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < {8: 26.1, 25: 51.2}[k]
    # per-coordinate spread about the assigned centre is the stated std: the sample std of
    # 2n normal deviates has relative sd 1/sqrt(4n) = 0.35%; 2% leaves room for the 3-std cut
    nearest = torch.cdist(a, centers).argmin(dim=1)
    resid = a - centers[nearest]
    assert abs(float(resid.std()) / std - 1) < 0.02


def test_bad_arguments():
    with pytest.raises(DataError, match="mixture name='spiral'"):
        mixture_modes("spiral")
    with pytest.raises(DataError, match="n must be a positive integer"):
        ring(0)
    with pytest.raises(DataError, match="n must be a positive integer"):
        grid(2.5)
    with pytest.raises(DataError, match="generator must be a torch.Generator"):
        ring(5, generator=1)
