"""Sample quality on the 2-D mixture targets: modes captured, high-quality share, KL to uniform.

The metrics of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018) for
the ring of 8 and the grid of 25 Gaussians (:func:`ppgen.datasets.ring`,
:func:`ppgen.datasets.grid`). Each generated sample is assigned to its nearest
centre :math:`c_k`; it is *high quality* if :math:`\\|x - c_k\\| < 3\\sigma`
(three standard deviations of the isotropic component). With :math:`n_k` the
high-quality samples of mode :math:`k`, :math:`N` all samples and
:math:`H = \\sum_k n_k`:

- modes captured: :math:`\\#\\{k : n_k \\ge \\text{min\\_count}\\}`;
- high-quality share: :math:`H / N`;
- KL: :math:`\\mathrm{KL}(\\hat p \\,\\|\\, u) = \\sum_k \\hat p_k \\log(K \\hat p_k)`
  with :math:`\\hat p_k = n_k / H` and :math:`u` uniform over the K modes: the
  "reverse" direction (generated against true), finite when modes are missing.

The default ``min_count=1`` is the published rule: VEEGAN counts a mode as
captured when at least one high-quality sample (of 2500 generated) has it as
nearest centre, and the PacGAN authors' metric code (``MetricLogger`` in
github.com/fjxmlzn/PacGAN, ``pacgan/extensions.py``) counts the modes with a
nonzero high-quality count. A count of one does not scale with the sample size;
pass a larger ``min_count`` for a stricter rule.

:func:`as_samples` is the input check shared by the sample-based metrics.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..errors import DataError


def as_samples(value, name, *, min_rows=1):
    """``value`` as a floating tensor ``(n, d)``, or a :class:`DataError` naming ``name``.

    Tensors keep their device and floating dtype; numpy arrays and other
    array-likes become tensors (float64 stays float64; integer and boolean data
    take the default dtype). A 1-D input is ``n`` scalars, ``(n, 1)``; more than
    two dimensions are flattened per sample (images ``(n, C, H, W)`` become
    ``(n, C*H*W)``).
    """
    if not isinstance(value, torch.Tensor):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{name}: cannot be read as an array ({exc})") from None
        if array.dtype.kind not in "biuf":
            raise DataError(f"{name} must hold real numbers, got dtype {array.dtype}")
        value = torch.as_tensor(array)
    if value.is_complex():
        raise DataError(f"{name} must hold real numbers, got dtype {value.dtype}")
    if not value.is_floating_point():
        value = value.to(torch.get_default_dtype())
    if value.dim() == 0:
        raise DataError(f"{name} must be an array of samples (n, d), got a scalar")
    if value.shape[0] < min_rows or value.numel() == 0:
        raise DataError(f"{name} has shape {tuple(value.shape)}; at least {min_rows} samples "
                        f"with at least one value each are needed")
    value = value.reshape(len(value), -1) if value.dim() != 1 else value.reshape(-1, 1)
    if not torch.isfinite(value).all():
        bad = int((~torch.isfinite(value)).any(dim=1).nonzero()[0])
        raise DataError(f"{name} holds NaN or infinite values (first in sample {bad})")
    return value


def as_pair(x, y, *, min_rows=1, names=("x", "y")):
    """Check two sample sets together: same number of columns, same device, one dtype."""
    x = as_samples(x, names[0], min_rows=min_rows)
    y = as_samples(y, names[1], min_rows=min_rows)
    if x.shape[1] != y.shape[1]:
        raise DataError(f"{names[0]} has {x.shape[1]} values per sample but {names[1]} has "
                        f"{y.shape[1]}; both must have the same dimension")
    if x.device != y.device:
        raise DataError(f"{names[0]} is on {x.device} but {names[1]} is on {y.device}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), y.to(dtype)


@dataclasses.dataclass(frozen=True)
class ModeCoverage:
    """How generated samples cover the modes of a 2-D mixture (PacGAN's metrics).

    Attributes
    ----------
    modes : int
        Modes captured: those with at least ``min_count`` high-quality samples.
    high_quality : float
        Share of all samples within three standard deviations of their nearest centre.
    kl : float
        :math:`\\mathrm{KL}(\\hat p \\| \\mathrm{uniform})` in nats, with :math:`\\hat p`
        the high-quality samples' histogram over modes; NaN when no sample is
        high quality.
    counts : tuple of int
        High-quality samples assigned to each mode, in the order of ``centers``.
    num_modes : int
        Number of centres K.
    num_samples : int
        Samples scored N.
    min_count : int
        The capture threshold used.
    """

    modes: int
    high_quality: float
    kl: float
    counts: tuple
    num_modes: int
    num_samples: int
    min_count: int

    def __str__(self):
        return (f"{self.modes}/{self.num_modes} modes, {100 * self.high_quality:.1f}% high quality, "
                f"KL to uniform {self.kl:.4f} nats (n={self.num_samples})")


def _check_std(std):
    try:
        value = float(std)
    except (TypeError, ValueError):
        raise DataError(f"std must be a positive number, got {std!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise DataError(f"std must be a positive number, got {std!r}")
    return value


@torch.no_grad()
def mode_coverage(samples, centers, std, min_count=None, *, num_std=3.0):
    """Modes captured, high-quality share and KL to uniform, as defined by VEEGAN and PacGAN.

    Parameters
    ----------
    samples : tensor or array ``(N, d)``
        Generated samples (``d = 2`` for the ring and the grid).
    centers : tensor or array ``(K, d)``
        The mixture's centres, e.g. from :func:`ppgen.datasets.mixture_modes`.
    std : float
        The components' common standard deviation.
    min_count : int, optional
        High-quality samples a mode needs to count as captured; default 1, the
        published rule (see the module docstring).
    num_std : float
        The high-quality radius in standard deviations (3 in both papers).

    Returns
    -------
    ModeCoverage
    """
    samples = as_samples(samples, "samples")
    centers = as_samples(centers, "centers")
    if samples.shape[1] != centers.shape[1]:
        raise DataError(f"samples have {samples.shape[1]} coordinates but centers have {centers.shape[1]}")
    std = _check_std(std)
    if min_count is None:
        min_count = 1
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise DataError(f"min_count must be a positive integer, got {min_count!r}")
    if not (isinstance(num_std, (int, float)) and num_std > 0):
        raise DataError(f"num_std must be a positive number, got {num_std!r}")
    dtype = torch.promote_types(samples.dtype, centers.dtype)
    samples, centers = samples.to(dtype), centers.to(device=samples.device, dtype=dtype)

    num_modes = len(centers)
    counts = torch.zeros(num_modes, dtype=torch.int64, device=samples.device)
    for chunk in samples.split(max(1, 2**22 // num_modes)):
        # direct differences, not the matrix-product expansion: exact for points near a centre
        dist, nearest = torch.cdist(chunk, centers, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
        counts += torch.bincount(nearest[dist < num_std * std], minlength=num_modes)
    counts = counts.cpu()
    high = int(counts.sum())
    if high == 0:
        kl = math.nan
    else:
        p = counts[counts > 0].double() / high
        kl = float((p * torch.log(num_modes * p)).sum())
    return ModeCoverage(modes=int((counts >= min_count).sum()), high_quality=high / len(samples), kl=kl,
                        counts=tuple(int(c) for c in counts), num_modes=num_modes,
                        num_samples=len(samples), min_count=min_count)
