"""Two-sample distances for any data: MMD, energy distance and sliced Wasserstein.

Each takes two sample sets ``x`` ``(n, d)`` and ``y`` ``(m, d)`` (tensors on
any device, or numpy arrays; images are flattened per sample) and returns a
Python float. Pairwise distances are computed block by block, so memory stays
bounded for large ``n``; the blocks' row sums are added up in float64.

- :func:`mmd`: the unbiased estimate :math:`\\mathrm{MMD}_u^2` of Gretton et
  al. (2012, eq. 3) with a Gaussian kernel;
- :func:`energy_distance`: Szekely's energy distance in its squared form
  :math:`2E\\|X-Y\\| - E\\|X-X'\\| - E\\|Y-Y'\\|`;
- :func:`sliced_wasserstein`: :math:`(E_\\theta W_p^p(\\theta^\\top X, \\theta^\\top Y))^{1/p}`
  over random unit directions, each 1-D distance exact.
"""

from __future__ import annotations

import numbers

import torch

from ..errors import DataError
from .quality import as_pair

_BLOCK = 2**22  # matrix entries per block of pairwise distances


def _distances(a, b):
    # direct differences are exact (zero for equal points) and cheap in low dimension;
    # the matrix-product expansion is much faster for images
    mode = "donot_use_mm_for_euclid_dist" if a.shape[1] <= 32 else "use_mm_for_euclid_dist"
    return torch.cdist(a, b, compute_mode=mode)


def _pair_sum(a, b, fn, *, same=False):
    """:math:`\\sum_{i,j} f(\\|a_i - b_j\\|)` block by block, ``i == j`` left out when ``same``.

    With ``same`` (``b`` is ``a``) only the blocks on and right of the diagonal are
    computed, those right of it counted twice. Row sums stay in the data's dtype
    (torch sums pairwise, so float32 rows keep ~1e-7 relative error) and are
    added up in float64.
    """
    rows = max(1, _BLOCK // len(b))
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for start in range(0, len(a), rows):
        stop = min(start + rows, len(a))
        if not same:
            total += fn(_distances(a[start:stop], b)).sum(dim=1).sum(dtype=torch.float64)
            continue
        diagonal = fn(_distances(a[start:stop], a[start:stop]))
        diagonal.fill_diagonal_(0.0)
        total += diagonal.sum(dim=1).sum(dtype=torch.float64)
        if stop < len(a):
            total += 2 * fn(_distances(a[start:stop], a[stop:])).sum(dim=1).sum(dtype=torch.float64)
    return total


@torch.no_grad()
def median_bandwidth(x, y, *, max_points=1000):
    """The median heuristic: the median distance between distinct points of the pooled sample.

    Gretton et al. (2012, section 8) set the Gaussian kernel's width to this
    median. Above ``max_points`` pooled points a fixed-seed random subset of that
    size is used (the median of ~500,000 distances is a stable estimate).
    """
    x, y = as_pair(x, y)
    z = torch.cat([x, y])
    if len(z) > max_points:
        pick = torch.randperm(len(z), generator=torch.Generator().manual_seed(0))[:max_points]
        z = z[pick.to(z.device)]
    dist = _distances(z, z)
    upper = torch.triu_indices(len(z), len(z), offset=1, device=z.device)
    return float(torch.quantile(dist[upper[0], upper[1]], 0.5))  # the middle two averaged, as numpy


def _bandwidths(bandwidth, x, y):
    if isinstance(bandwidth, str):
        if bandwidth != "median":
            raise DataError(f"bandwidth={bandwidth!r}: give 'median', a positive number or a list of them")
        value = median_bandwidth(x, y)
        if value <= 0:
            raise DataError("bandwidth='median': the median distance between samples is 0 "
                            "(mostly repeated points); give the bandwidth explicitly")
        return [value]
    values = list(bandwidth) if isinstance(bandwidth, (list, tuple)) else [bandwidth]
    if not values or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0
                             for v in values):
        raise DataError(f"bandwidth={bandwidth!r}: give 'median', a positive number or a list of them")
    return [float(v) for v in values]


@torch.no_grad()
def mmd(x, y, kernel="rbf", bandwidth="median"):
    """The unbiased squared maximum mean discrepancy :math:`\\mathrm{MMD}_u^2` (Gretton et al. 2012).

    .. math::
        \\frac{1}{n(n-1)} \\sum_{i \\ne j} k(x_i, x_j) + \\frac{1}{m(m-1)} \\sum_{i \\ne j} k(y_i, y_j)
        - \\frac{2}{nm} \\sum_{i, j} k(x_i, y_j),
        \\qquad k(a, b) = \\sum_\\sigma \\exp\\left(-\\frac{\\|a - b\\|^2}{2\\sigma^2}\\right).

    Unbiased, so it can be slightly negative when the two distributions are equal.

    Parameters
    ----------
    x, y : tensors or arrays ``(n, d)`` and ``(m, d)``, ``n, m >= 2``
    kernel : {"rbf"}
        The Gaussian kernel.
    bandwidth : "median", float or list of floats
        :math:`\\sigma`: the median heuristic (:func:`median_bandwidth`), one
        width, or several (the kernel is then the sum of the Gaussian kernels,
        a mixture as in generative moment-matching networks).
    """
    x, y = as_pair(x, y, min_rows=2)
    if kernel != "rbf":
        raise DataError(f"kernel={kernel!r}: only 'rbf' (Gaussian) is available")
    scales = [-0.5 / s**2 for s in _bandwidths(bandwidth, x, y)]

    def k(dist):
        sq = dist.square_()
        if len(scales) == 1:
            return sq.mul_(scales[0]).exp_()
        return sum(torch.exp(c * sq) for c in scales)

    n, m = len(x), len(y)
    kxx = _pair_sum(x, x, k, same=True) / (n * (n - 1))
    kyy = _pair_sum(y, y, k, same=True) / (m * (m - 1))
    kxy = _pair_sum(x, y, k) / (n * m)
    return float(kxx + kyy - 2 * kxy)


@torch.no_grad()
def energy_distance(x, y, *, unbiased=False):
    """Szekely's energy distance, squared: :math:`2E\\|X-Y\\| - E\\|X-X'\\| - E\\|Y-Y'\\|`.

    By default every expectation is the plain average over all pairs of the
    samples, ``i == j`` included (a V-statistic, always >= 0). Its square root is
    what :func:`scipy.stats.energy_distance` returns for 1-D samples (scipy's
    value is :math:`\\sqrt{2}` times the L2 distance between the empirical CDFs,
    which is that square root). With ``unbiased=True`` the within-sample
    averages skip ``i == j`` (U-statistics), giving an unbiased estimate of the
    population value that can be slightly negative.
    """
    x, y = as_pair(x, y, min_rows=2 if unbiased else 1)
    n, m = len(x), len(y)
    norm = lambda dist: dist
    xy = _pair_sum(x, y, norm) / (n * m)
    # the i == j terms are 0, so leaving them out changes only the divisor
    xx = _pair_sum(x, x, norm, same=True) / (n * (n - 1) if unbiased else n * n)
    yy = _pair_sum(y, y, norm, same=True) / (m * (m - 1) if unbiased else m * m)
    return float(2 * xy - xx - yy)


def _wasserstein_1d(px, py, p):
    """:math:`W_p^p` between the empirical measures of each row of ``px`` ``(L, n)`` and ``py`` ``(L, m)``.

    Exact: :math:`\\int_0^1 |F^{-1}(u) - G^{-1}(u)|^p du` with both quantile
    functions piecewise constant, integrated over the merged breakpoints
    :math:`\\{i/n\\} \\cup \\{j/m\\}`.
    """
    px, py = px.sort(dim=1).values, py.sort(dim=1).values
    n, m = px.shape[1], py.shape[1]
    if n == m:
        return (px - py).abs().pow(p).mean(dim=1, dtype=torch.float64)
    device = px.device
    steps = torch.cat([torch.arange(1, n + 1, device=device, dtype=torch.float64) / n,
                       torch.arange(1, m + 1, device=device, dtype=torch.float64) / m]).sort().values
    width = torch.diff(steps, prepend=steps.new_zeros(1))
    middle = steps - width / 2
    ix = (middle * n).floor().long().clamp_(max=n - 1)
    iy = (middle * m).floor().long().clamp_(max=m - 1)
    cost = (px[:, ix] - py[:, iy]).abs().pow(p).double()
    return cost @ width


@torch.no_grad()
def sliced_wasserstein(x, y, num_projections=256, p=2, generator=None):
    """The sliced Wasserstein distance :math:`(E_\\theta W_p^p(\\theta^\\top X, \\theta^\\top Y))^{1/p}`.

    The expectation is a Monte Carlo average over ``num_projections`` directions
    :math:`\\theta` drawn uniformly on the unit sphere (normalised Gaussian
    vectors); each 1-D :math:`W_p^p` between the projected empirical measures is
    exact, also for ``n != m`` (integrated over the merged quantile
    breakpoints). The p-th root is taken after averaging, so the result is in
    the data's units. In 1-D every direction is +-1 and the result is the exact
    :math:`W_p` of the two samples.

    Parameters
    ----------
    x, y : tensors or arrays ``(n, d)`` and ``(m, d)``
    num_projections : int
    p : float >= 1
    generator : torch.Generator, optional
        Draws the directions (on the generator's device); default: torch's
        global generator.
    """
    x, y = as_pair(x, y)
    if isinstance(num_projections, bool) or not isinstance(num_projections, int) or num_projections < 1:
        raise DataError(f"num_projections must be a positive integer, got {num_projections!r}")
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not p >= 1:
        raise DataError(f"p must be a number >= 1, got {p!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise DataError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    device = generator.device if generator is not None else torch.device("cpu")
    theta = torch.randn(num_projections, x.shape[1], generator=generator, device=device, dtype=torch.float64)
    theta = (theta / theta.norm(dim=1, keepdim=True)).to(device=x.device, dtype=x.dtype)
    per_chunk = max(1, 2**24 // (len(x) + len(y)))
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for directions in theta.split(per_chunk):
        total += _wasserstein_1d(directions @ x.T, directions @ y.T, float(p)).sum()
    return float(total / num_projections) ** (1.0 / float(p))
