"""Sample-quality metrics: PacGAN's mode metrics, MMD, energy distance, sliced Wasserstein, Frechet."""

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

import ppgen
from ppgen.datasets import grid, mixture_modes, ring
from ppgen.diagnostics import distances as distances_module
from ppgen.diagnostics import (
    energy_distance,
    frechet_distance,
    gaussian_frechet_distance,
    load_feature_network,
    median_bandwidth,
    mmd,
    mode_coverage,
    sliced_wasserstein,
)
from ppgen.errors import DataError

# ---------------------------------------------------------------- mode metrics


def _at(centers, per_mode, offsets=None):
    """``per_mode[k]`` points at centre k (shifted by ``offsets`` if given)."""
    rows = [centers[k].repeat(c, 1) for k, c in enumerate(per_mode) if c]
    out = torch.cat(rows)
    return out if offsets is None else out + offsets


def test_all_modes_exactly_uniform():
    centers, std = mixture_modes("ring")
    cover = mode_coverage(_at(centers, [10] * 8), centers, std)
    assert (cover.modes, cover.num_modes, cover.num_samples) == (8, 8, 80)
    assert cover.high_quality == 1.0 and cover.counts == (10,) * 8
    assert abs(cover.kl) < 1e-12  # the uniform histogram: KL is exactly 0
    assert "8/8 modes" in str(cover)


def test_half_the_modes_gives_log_two():
    centers, std = mixture_modes("ring")
    cover = mode_coverage(_at(centers, [5, 0, 5, 0, 5, 0, 5, 0]), centers, std)
    assert cover.modes == 4 and cover.counts == (5, 0, 5, 0, 5, 0, 5, 0)
    # four modes at 1/4 each: sum 1/4 log(8 * 1/4) = log 2
    assert cover.kl == pytest.approx(math.log(2), abs=1e-12)


def test_uneven_counts_far_samples_and_min_count():
    centers, std = mixture_modes("grid")
    near = _at(centers, [3, 1] + [0] * 23)
    far = torch.tensor([[10.0, 10.0], [1.0, 1.0]])  # (1, 1) is 1.41 from four centres = 28 std
    samples = torch.cat([near, far])
    cover = mode_coverage(samples, centers, std)
    assert cover.counts[:2] == (3, 1) and sum(cover.counts) == 4
    assert cover.high_quality == pytest.approx(4 / 6)
    # by hand: p = (3/4, 1/4) over K = 25 modes
    expected = 0.75 * math.log(25 * 0.75) + 0.25 * math.log(25 * 0.25)
    assert cover.kl == pytest.approx(expected, abs=1e-12)
    assert cover.modes == 2 and cover.min_count == 1
    assert mode_coverage(samples, centers, std, min_count=2).modes == 1
    assert mode_coverage(samples, centers, std, min_count=4).modes == 0


def test_all_samples_far_away():
    centers, std = mixture_modes("ring")
    cover = mode_coverage(torch.full((50, 2), 5.0), centers, std)
    assert cover.modes == 0 and cover.high_quality == 0.0 and cover.counts == (0,) * 8
    assert math.isnan(cover.kl)  # no high-quality sample: the histogram is undefined


def test_three_std_boundary_and_nearest_centre():
    centers, std = mixture_modes("grid")
    c = centers[12]  # (0, 0)
    inside = c + torch.tensor([2.99 * std, 0.0])
    outside = c + torch.tensor([0.0, -3.01 * std])
    diagonal = c + torch.tensor([2.0, 2.0]) * std  # 2.83 std away: inside
    cover = mode_coverage(torch.stack([inside, outside, diagonal]), centers, std)
    assert cover.counts[12] == 2 and sum(cover.counts) == 2
    # a point 0.9 from (0, 0) and 1.1 from (2, 0): nearest is (0, 0), but far outside 3 std
    assert sum(mode_coverage(torch.tensor([[0.9, 0.0]]), centers, std).counts) == 0
    # with a wide std it counts, for its nearest centre
    cover = mode_coverage(torch.tensor([[0.9, 0.0]]), centers, 0.5)
    assert cover.counts[12] == 1 and sum(cover.counts) == 1


@pytest.mark.parametrize("sampler,name", [(ring, "ring"), (grid, "grid")])
def test_targets_own_samples(sampler, name):
    n = 10000
    centers, std = mixture_modes(name)
    cover = mode_coverage(sampler(n, generator=torch.Generator().manual_seed(0)), centers, std)
    assert cover.modes == len(centers)
    # |x - c|^2 / std^2 is chi-square with 2 dof: P(< 9) = 1 - exp(-9/2) = 0.98889, not the 1-D 99.73%;
    # the binomial standard error at n = 10000 is 0.00105, tolerance 4 of them
    assert cover.high_quality == pytest.approx(1 - math.exp(-4.5), abs=0.0042)
    # KL of a multinomial histogram to uniform is about (K - 1) / (2N): 0.0004 (ring), 0.0012 (grid)
    assert 0 <= cover.kl < 5 * (len(centers) - 1) / (2 * n)


# ---------------------------------------------------------------- MMD


def _brute_mmd(x, y, widths):
    k = lambda a, b: sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * s * s)) for s in widths)
    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


@pytest.fixture
def small_pair():
    rng = np.random.default_rng(5)
    return rng.normal(size=(7, 3)), rng.normal(0.5, 1.0, size=(5, 3))


def test_mmd_matches_double_loop(small_pair):
    x, y = small_pair
    assert mmd(x, y, bandwidth=0.8) == pytest.approx(_brute_mmd(x, y, [0.8]), rel=1e-12)
    assert mmd(x, y, bandwidth=[0.3, 1.0, 4.0]) == pytest.approx(_brute_mmd(x, y, [0.3, 1.0, 4.0]), rel=1e-12)
    pooled = np.concatenate([x, y])
    med = np.median([np.linalg.norm(a - b) for a, b in itertools.combinations(pooled, 2)])
    assert median_bandwidth(x, y) == pytest.approx(med, rel=1e-12)
    assert mmd(x, y) == pytest.approx(_brute_mmd(x, y, [med]), rel=1e-12)


def test_blocked_sums_equal_one_block(small_pair, monkeypatch):
    x, y = small_pair
    whole = (mmd(x, y, bandwidth=1.0), energy_distance(x, y), energy_distance(x, y, unbiased=True))
    monkeypatch.setattr(distances_module, "_BLOCK", 6)  # one or two rows per block
    blocked = (mmd(x, y, bandwidth=1.0), energy_distance(x, y), energy_distance(x, y, unbiased=True))
    assert blocked == pytest.approx(whole, rel=1e-12)


def test_mmd_same_and_shifted_distributions():
    gen = torch.Generator().manual_seed(11)
    x, y = (torch.randn(300, 2, generator=gen, dtype=torch.float64) for _ in range(2))
    # null sd of MMD_u^2 here (n = m = 300, d = 2, median bandwidth), measured over 200 replicate
    # pairs: 0.0023 (mean 0.0002); tolerance 6 sd
    assert abs(mmd(x, y)) < 0.014
    # shifted by 1 along one axis: 20 replicates gave 0.087 to 0.15 (mean 0.11), 40 null sd
    assert mmd(x, y + torch.tensor([1.0, 0.0], dtype=torch.float64)) > 0.05


# ---------------------------------------------------------------- energy distance


def test_energy_distance_matches_scipy_in_1d():
    rng = np.random.default_rng(2)
    u, v = rng.normal(size=40), rng.normal(0.3, 2.0, size=25)
    assert math.sqrt(energy_distance(u, v)) == pytest.approx(scipy.stats.energy_distance(u, v), rel=1e-10)
    assert energy_distance(u, u) == pytest.approx(0.0, abs=1e-12)


def test_energy_distance_statistics_by_hand(small_pair):
    x, y = small_pair
    d = lambda a, b: np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    n, m = len(x), len(y)
    v_stat = 2 * d(x, y).mean() - d(x, x).mean() - d(y, y).mean()
    u_stat = 2 * d(x, y).mean() - d(x, x).sum() / (n * (n - 1)) - d(y, y).sum() / (m * (m - 1))
    assert energy_distance(x, y) == pytest.approx(v_stat, rel=1e-12)
    assert energy_distance(x, y, unbiased=True) == pytest.approx(u_stat, rel=1e-12)


# ---------------------------------------------------------------- sliced Wasserstein


@pytest.mark.parametrize("p", [1, 2, 3.5])
def test_sliced_wasserstein_is_exact_wp_in_1d(p):
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=30), rng.exponential(size=30)
    exact = np.mean(np.abs(np.sort(x) - np.sort(y)) ** p) ** (1 / p)  # equal sizes: sorted pairs
    assert sliced_wasserstein(x, y, num_projections=3, p=p) == pytest.approx(exact, rel=1e-12)
    # unequal sizes: W_p is unchanged by repeating every point of x m times and of y n times,
    # which makes the sizes equal
    y = rng.exponential(size=12)
    exact = np.mean(np.abs(np.sort(np.repeat(x, 12)) - np.sort(np.repeat(y, 30))) ** p) ** (1 / p)
    assert sliced_wasserstein(x, y, num_projections=2, p=p) == pytest.approx(exact, rel=1e-12)
    if p == 1:
        assert sliced_wasserstein(x, y, p=1) == pytest.approx(scipy.stats.wasserstein_distance(x, y), rel=1e-12)


def test_sliced_wasserstein_of_a_shift():
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    shift = torch.tensor([3.0, 4.0], dtype=torch.float64)
    value = sliced_wasserstein(x, x + shift, num_projections=256, generator=torch.Generator().manual_seed(4))
    # each projection is shifted by theta . s, so SW_2^2 is the mean of (theta . s)^2 over the
    # same directions: redraw them from the same seed
    theta = torch.randn(256, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)
    assert value == pytest.approx(float((theta @ shift).square().mean().sqrt()), rel=1e-10)
    # and it is near its expectation |s| / sqrt(2): (theta . s)^2 = 25 cos^2 phi has mean 12.5 and
    # sd 25 / sqrt(8); the mean of 256 has sd 0.55 on SW^2, tolerance 5 of them
    assert value**2 == pytest.approx(12.5, abs=2.8)
    again = sliced_wasserstein(x, x + shift, num_projections=256, generator=torch.Generator().manual_seed(4))
    assert again == value


# ---------------------------------------------------------------- Frechet distance


def test_gaussian_frechet_closed_forms():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    # commuting (diagonal) covariances: |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2
    expected = 5.0 + (1 - 3) ** 2 + (2 - 1) ** 2 + 0.0
    assert gaussian_frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # general covariances, against scipy's matrix square root
    rng = np.random.default_rng(0)
    for d in (1, 4, 20):
        s1 = (lambda m: m @ m.T + 0.1 * np.eye(d))(rng.normal(size=(d, d)))
        s2 = (lambda m: m @ m.T)(rng.normal(size=(d, d - 1 if d > 1 else 1)))  # singular for d > 1
        m1, m2 = rng.normal(size=d), rng.normal(size=d)
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
        ref = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
        assert gaussian_frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-7, abs=1e-9)
    assert gaussian_frechet_distance(mu1, np.diag(a), mu1, np.diag(a)) == pytest.approx(0.0, abs=1e-12)


def _with_moments(z, mean, cov):
    """Samples whose sample mean and (n - 1) covariance are exactly ``mean`` and ``cov``."""
    z = z - z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return mean + z @ np.linalg.cholesky(cov).T


def test_frechet_distance_of_samples():
    rng = np.random.default_rng(3)
    cov1, cov2 = np.array([[2.0, 0.5], [0.5, 1.0]]), np.array([[1.0, -0.3], [-0.3, 0.5]])
    x = _with_moments(rng.normal(size=(50, 2)), np.array([1.0, 0.0]), cov1)
    y = _with_moments(rng.normal(size=(80, 2)), np.array([0.0, 2.0]), cov2)
    exact = gaussian_frechet_distance([1.0, 0.0], cov1, [0.0, 2.0], cov2)
    assert frechet_distance(x, y) == pytest.approx(exact, rel=1e-10)
    # a direct scipy computation from the samples (FID's reference recipe)
    mx, my, cx, cy = x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ref = np.sum((mx - my) ** 2) + np.trace(cx + cy - 2 * scipy.linalg.sqrtm(cx @ cy).real)
    assert frechet_distance(torch.as_tensor(x, dtype=torch.float32), y) == pytest.approx(ref, rel=1e-5)
    # a callable feature map, applied in batches
    feats = lambda batch: batch[:, :1] * 2.0
    expected = (2 * (mx[0] - my[0])) ** 2 + (2 * math.sqrt(cx[0, 0]) - 2 * math.sqrt(cy[0, 0])) ** 2
    assert frechet_distance(x, y, features=feats, batch_size=7) == pytest.approx(expected, rel=1e-10)


def test_digits_feature_network_accuracy_and_distances():
    net = load_feature_network("digits")
    images, labels = ppgen.datasets.load("digits", return_labels=True)
    held = torch.as_tensor(net.info["heldout_indices"]).long()
    with torch.no_grad():
        predicted = net(torch.as_tensor(images)[held]).argmax(dim=1)
    correct = int((predicted == torch.as_tensor(labels)[held]).sum())
    # the stored count was measured by the training script on these 540 images; 1 image of slack for a
    # near-tie decided differently by another BLAS
    assert abs(correct - net.info["heldout_correct"]) <= 1 and net.heldout_accuracy > 0.95
    assert net.features(torch.as_tensor(images[:3])).shape == (3, 64)
    half = len(images) // 2
    same = frechet_distance(images[:half], images[half:], features="digits")
    noise = np.random.default_rng(0).uniform(size=(half, 64)).astype(np.float32)
    assert frechet_distance(images, images, features="digits") == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(images[:half], noise, features="digits") > 20 * same
    assert frechet_distance(images.reshape(-1, 8, 8)[:half], images[half:], features="digits") == pytest.approx(same)


def test_mnist_feature_network(shared_data):
    net = load_feature_network("mnist")
    images, labels = ppgen.datasets.load_mnist(shared_data / "mnist", "test")
    with torch.no_grad():
        predicted = torch.cat([net(b) for b in torch.as_tensor(images).split(2500)]).argmax(dim=1)
    correct = int((predicted == torch.as_tensor(labels)).sum())
    assert abs(correct - net.info["heldout_correct"]) <= 1 and net.heldout_accuracy > 0.98  # as above
    shuffled = np.random.default_rng(0).permutation(images[:2000].reshape(2000, -1), axis=1)  # pixels shuffled
    same = frechet_distance(images[:1000], images[1000:2000], features="mnist")
    assert frechet_distance(images[:1000], shuffled, features="mnist") > 10 * same


# ---------------------------------------------------------------- errors and devices


def test_bad_inputs_name_the_argument():
    good = np.zeros((5, 2))
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match=r"y holds NaN or infinite values \(first in sample 3\)"):
        mmd(good, bad, bandwidth=1.0)
    with pytest.raises(DataError, match="x has 2 values per sample but y has 3"):
        energy_distance(good, np.zeros((4, 3)))
    with pytest.raises(DataError, match=r"x has shape \(1, 2\); at least 2 samples"):
        mmd(good[:1], good)
    with pytest.raises(DataError, match="x must hold real numbers"):
        sliced_wasserstein(np.array([["a", "b"]]), good)
    with pytest.raises(DataError, match="bandwidth=-1.0"):
        mmd(good, good, bandwidth=-1.0)
    with pytest.raises(DataError, match="median distance between samples is 0"):
        mmd(good, good)
    with pytest.raises(DataError, match="kernel='laplace'"):
        mmd(good, good + 1, kernel="laplace")
    with pytest.raises(DataError, match="p must be a number >= 1"):
        sliced_wasserstein(good, good, p=0.5)
    with pytest.raises(DataError, match="num_projections must be a positive integer"):
        sliced_wasserstein(good, good, num_projections=0)
    with pytest.raises(DataError, match="samples have 2 coordinates but centers have 3"):
        mode_coverage(good, np.zeros((4, 3)), 0.1)
    with pytest.raises(DataError, match="std must be a positive number"):
        mode_coverage(good, good, 0.0)
    with pytest.raises(DataError, match="min_count must be a positive integer"):
        mode_coverage(good, good, 0.1, min_count=0)
    with pytest.raises(DataError, match="features='inception'"):
        frechet_distance(good, good, features="inception")
    with pytest.raises(DataError, match="x has 2 values per sample; this feature network expects 64"):
        frechet_distance(good, good, features="digits")
    with pytest.raises(DataError, match="cov2 has shape"):
        gaussian_frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


@pytest.mark.cuda
def test_metrics_on_cuda_match_cpu():
    x, y = ring(500, generator=torch.Generator().manual_seed(0)), grid(400, generator=torch.Generator().manual_seed(1))
    gx, gy = x.cuda(), y.cuda()
    assert mmd(gx, gy) == pytest.approx(mmd(x, y), rel=1e-4)
    assert energy_distance(gx, gy) == pytest.approx(energy_distance(x, y), rel=1e-4)
    assert frechet_distance(gx, gy) == pytest.approx(frechet_distance(x, y), rel=1e-4)
    sw = sliced_wasserstein(gx, gy, generator=torch.Generator().manual_seed(2))
    assert sw == pytest.approx(sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(2)), rel=1e-4)
    centers, std = mixture_modes("ring")
    assert mode_coverage(gx, centers, std) == mode_coverage(x, centers, std)
