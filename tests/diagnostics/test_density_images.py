"""Held-out log-likelihood, bits per dimension, and image figures."""

import math

import numpy as np
import pytest
import torch

import ppgen
from ppgen.diagnostics import bits_per_dim, dataset_log_likelihood, image_grid, latent_plot
from ppgen.diagnostics.images import tile
from ppgen.errors import DataError, ModelError
from ppgen.models import GaussianMixture


def test_dataset_log_likelihood_of_an_exact_model():
    model, data = GaussianMixture.example(seed=0)
    model.initialize(data, generator=torch.Generator().manual_seed(0))
    values = model.log_prob(data).double()
    out = dataset_log_likelihood(model, data, batch_size=7)  # batches must not change the answer
    assert out.kind == "exact" and out.n == len(data) and out.num_samples is None
    assert out.mean == pytest.approx(float(values.mean()), rel=1e-6)
    assert out.stderr == pytest.approx(float(values.std() / math.sqrt(len(data))), rel=1e-5)
    assert out.nll == -out.mean and "nats per datum" in str(out)
    assert out.bits_per_dim(2) == pytest.approx(-out.mean / (2 * math.log(2)))


def test_bits_per_dim_and_errors():
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    with pytest.raises(DataError, match="dims"):
        bits_per_dim(1.0, 0)
    model, data = GaussianMixture.example(seed=0)
    model.initialize(data, generator=torch.Generator().manual_seed(0))
    with pytest.raises(DataError, match="batch_size"):
        dataset_log_likelihood(model, data, batch_size=0)

    class NoDensity:
        log_prob_kind = "none"

        def log_prob(self, x):
            raise AssertionError

    with pytest.raises(ModelError, match="no density"):
        dataset_log_likelihood(NoDensity(), data)


def test_tile_places_every_image():
    images = torch.arange(5 * 4, dtype=torch.float32).reshape(5, 4)  # five 2x2 images, flat
    canvas = tile(images, nrow=3, pad=1)
    assert canvas.shape == (2 * 3 - 1, 3 * 3 - 1)
    np.testing.assert_array_equal(canvas[0:2, 3:5], images[1].reshape(2, 2).numpy())
    np.testing.assert_array_equal(canvas[3:5, 3:5], images[4].reshape(2, 2).numpy())
    assert np.isnan(canvas[3:5, 6:8]).all()  # the empty sixth cell
    assert tile(torch.zeros(2, 1, 3, 3)).shape == (3, 7)  # channel-first
    with pytest.raises(DataError, match="not a square"):
        tile(torch.zeros(2, 5))


def test_image_grid_and_latent_plot_return_figures():
    x, y = ppgen.datasets.load("digits", return_labels=True)
    fig = image_grid(x[:10], nrow=5, title="digits")
    assert fig.axes[0].get_title() == "digits"

    class Codes:
        def codes(self, data):
            return torch.as_tensor(data[:, :2])

    fig = latent_plot(Codes(), x[:50], labels=y[:50])
    assert fig.axes[0].get_xlabel() == "z[0]"
