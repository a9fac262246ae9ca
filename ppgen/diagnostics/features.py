"""The Frechet distance between feature statistics (FID's formula), and the shipped feature networks.

Heusel et al. (2017) compare two image sets by the Frechet (2-Wasserstein)
distance between Gaussians fitted to their features:

.. math::
    d^2 = \\|\\mu_1 - \\mu_2\\|^2 + \\mathrm{tr}\\,\\Sigma_1 + \\mathrm{tr}\\,\\Sigma_2
          - 2\\,\\mathrm{tr}\\big((\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2})^{1/2}\\big).

The trace of the square root is computed from the eigenvalues of the symmetric
positive semi-definite matrix :math:`\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2}`
(equal to those of :math:`\\Sigma_1 \\Sigma_2`), which stays real and stable when
a covariance is singular (fewer samples than features), in float64.

Inception features need a download, so ppgen ships small classifiers instead,
trained by ``benchmarks/train_digit_features.py`` (fixed seeds) and stored in
``ppgen/diagnostics/data/``: ``"digits"`` (an MLP on the embedded 8x8 digits,
``ppgen.datasets.load("digits")``) and ``"mnist"`` (a small CNN on 28x28 MNIST);
the features are each network's last hidden layer (64 ReLU units). Scores made
with them compare models with each other; they are not FID values.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, DataError
from .quality import as_pair, as_samples

FEATURE_NETWORKS = ("digits", "mnist")
_FORMAT = "ppgen-feature-network"


class FeatureNetwork(nn.Module):
    """A small image classifier whose last hidden layer gives features.

    ``config["arch"]`` is ``"mlp"`` (``in_features -> hidden... -> classes``,
    ReLU) or ``"cnn"`` (for ``side x side`` grey images: two 5x5 convolutions
    with ReLU and 2x2 max-pooling, then one hidden linear layer). Inputs are
    flattened images ``(n, in_features)``.
    """

    def __init__(self, config):
        super().__init__()
        self.config = dict(config)
        classes, layers = int(config["classes"]), []
        if config["arch"] == "mlp":
            widths = [int(config["in_features"]), *map(int, config["hidden"])]
            for a, b in zip(widths[:-1], widths[1:]):
                layers += [nn.Linear(a, b), nn.ReLU()]
            self.in_features = widths[0]
        elif config["arch"] == "cnn":
            side, (c1, c2), hidden = int(config["side"]), config["channels"], int(config["hidden"])
            final = ((side - 4) // 2 - 4) // 2
            layers = [nn.Unflatten(1, (1, side, side)), nn.Conv2d(1, c1, 5), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(c2 * final * final, hidden), nn.ReLU()]
            widths = [hidden]
            self.in_features = side * side
        else:
            raise CheckpointError(f"feature network architecture {config['arch']!r} is unknown")
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], classes)
        self.heldout_accuracy = None

    def features(self, x):
        """The last hidden layer's activations ``(n, 64)`` for flattened images ``x``."""
        return self.body(x)

    def forward(self, x):
        """Class logits ``(n, classes)``."""
        return self.head(self.body(x))


def save_feature_network(net, path, **info):
    """Write ``net`` and ``info`` (held-out accuracy and how it was measured) for :func:`load_feature_network`."""
    payload = {"format": _FORMAT, "version": 1, "config": net.config,
               "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, **info}
    torch.save(payload, path)


@functools.cache
def _payload(name):
    if name not in FEATURE_NETWORKS:
        raise DataError(f"features={name!r}: choose None, a callable or one of {FEATURE_NETWORKS}")
    resource = resources.files(__package__).joinpath("data", f"{name}_features.pt")
    try:
        with resources.as_file(resource) as path:
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"feature network {name!r}: cannot read {resource} ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise CheckpointError(f"{resource}: not a ppgen feature network")
    return payload


def load_feature_network(name):
    """The shipped feature network ``name`` ("digits" or "mnist"), in eval mode on the CPU.

    Its ``heldout_accuracy`` attribute is the accuracy the training script
    measured on held-out images; ``info`` holds the rest of what it recorded
    (for "digits" the held-out indices into ``load("digits")``).
    """
    payload = _payload(name)
    net = FeatureNetwork(payload["config"])
    net.load_state_dict(payload["state_dict"])
    net.heldout_accuracy = float(payload["heldout_accuracy"])
    net.info = {k: v for k, v in payload.items() if k not in ("format", "version", "config", "state_dict")}
    return net.eval()


@torch.no_grad()
def gaussian_frechet_distance(mu1, cov1, mu2, cov2):
    """The Frechet distance :math:`d^2` between :math:`N(\\mu_1, \\Sigma_1)` and :math:`N(\\mu_2, \\Sigma_2)`.

    The squared 2-Wasserstein distance between the two Gaussians (the formula in
    the module docstring), in float64; tiny negative round-off is clipped to 0.
    """
    mu1, mu2 = (torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v) for v in (mu1, mu2))
    cov1, cov2 = (torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v) for v in (cov1, cov2))
    d = mu1.reshape(-1).shape[0]
    for name, value, shape in (("mu1", mu1, (d,)), ("mu2", mu2, (d,)), ("cov1", cov1, (d, d)),
                               ("cov2", cov2, (d, d))):
        if tuple(value.shape) != shape:
            raise DataError(f"{name} has shape {tuple(value.shape)}, expected {shape}")
        if not torch.isfinite(value).all():
            raise DataError(f"{name} holds NaN or infinite values")
    device = mu1.device
    mu1, mu2, cov1, cov2 = (v.to(device=device, dtype=torch.float64) for v in (mu1, mu2, cov1, cov2))
    cov1, cov2 = (cov1 + cov1.T) / 2, (cov2 + cov2.T) / 2
    values, vectors = torch.linalg.eigh(cov1)
    root1 = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    middle = root1 @ cov2 @ root1
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * trace_root
    return max(float(value), 0.0)


def _moments(features):
    features = features.to(torch.float64)
    return features.mean(dim=0), torch.atleast_2d(torch.cov(features.T))


def _network_features(net, x, name, batch_size):
    x = as_samples(x, name, min_rows=2)
    if x.shape[1] != net.in_features:
        raise DataError(f"{name} has {x.shape[1]} values per sample; this feature network expects "
                        f"{net.in_features} (flattened images)")
    net = net.to(x.device)
    param = next(net.parameters())
    with torch.no_grad():
        return torch.cat([net.features(batch.to(param.dtype)) for batch in x.split(batch_size)])


def _callable_features(fn, x, name, batch_size):
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.dim() == 0 or len(x) < 2:
        raise DataError(f"{name} must hold at least 2 samples along its first dimension")
    with torch.no_grad():
        out = [as_samples(fn(batch), f"features({name})") for batch in x.split(batch_size)]
    return torch.cat(out)


@torch.no_grad()
def frechet_distance(x, y, features=None, *, batch_size=1000):
    """The Frechet distance between Gaussians fitted to the features of ``x`` and of ``y``.

    Parameters
    ----------
    x, y : tensors or arrays, ``n, m >= 2`` samples along the first dimension
    features : None, callable or str
        ``None``: the data themselves are the features (``(n, d)``, images
        flattened). A callable maps a batch of ``x`` (a tensor, first dimension
        the batch) to feature vectors ``(batch, f)``. ``"digits"`` or
        ``"mnist"``: the shipped networks' last hidden layer, for flattened
        8x8 digits or 28x28 MNIST images with values in [0, 1].
    batch_size : int
        Samples per call of the feature map.

    Returns
    -------
    float
        :math:`d^2` of :func:`gaussian_frechet_distance`, with sample means and
        unbiased (``n - 1``) sample covariances, as in FID.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    if features is None:
        fx, fy = as_pair(x, y, min_rows=2)
    elif isinstance(features, str):
        net = load_feature_network(features)
        fx, fy = (_network_features(net, v, n, batch_size) for v, n in ((x, "x"), (y, "y")))
    elif callable(features):
        fx, fy = (_callable_features(features, v, n, batch_size) for v, n in ((x, "x"), (y, "y")))
        fx, fy = as_pair(fx, fy, min_rows=2, names=("features(x)", "features(y)"))
    else:
        raise DataError(f"features must be None, a callable or one of {FEATURE_NETWORKS}, "
                        f"got {type(features).__name__}")
    return gaussian_frechet_distance(*_moments(fx), *_moments(fy))
