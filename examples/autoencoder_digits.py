"""Autoencoders on the 8x8 digits: a plain and a denoising autoencoder trained by
reconstruction likelihood (MAP with a point-mass encoder), against PCA.

Run: python examples/autoencoder_digits.py [OUT_DIR]   (PPGEN_QUICK=1 for a fast smoke run)

An autoencoder has no density (``log_prob_kind == "none"``): it is judged here by
held-out reconstruction error, and by how well it cleans corrupted digits.
"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import ppgen
from ppgen.diagnostics import image_grid, reconstruction_grid, save_figure
from ppgen.inference import MAP
from ppgen.models import Autoencoder, DenoisingAutoencoder

torch.set_num_threads(1)
quick = os.environ.get("PPGEN_QUICK") == "1"
if len(sys.argv) > 1:
    out = Path(sys.argv[1])
else:
    out = Path(tempfile.mkdtemp(prefix="autoencoder_digits_")) if quick else Path("autoencoder_digits_figures")
steps = 60 if quick else 3000
latent = 4

x = ppgen.datasets.load("digits")
perm = np.random.default_rng(0).permutation(len(x))
x_train, x_test = x[perm[:1500]], x[perm[1500:]]
rng = np.random.default_rng(1)
noisy = np.clip(x_test + 0.3 * rng.standard_normal(x_test.shape), 0, 1).astype(np.float32)

mean = x_train.mean(0)
basis = np.linalg.svd(x_train - mean, full_matrices=False)[2][:latent]


def pca_reconstruct(values):
    return (values - mean) @ basis.T @ basis + mean


def mse(values):
    return float(((np.asarray(values) - x_test) ** 2).mean())


print(f"held-out reconstruction MSE with a {latent}-d code (noisy input: MSE {mse(noisy):.4f} before)")
print(f"  {'PCA':<22} clean {mse(pca_reconstruct(x_test)):.4f}   noisy {mse(pca_reconstruct(noisy)):.4f}")
method = MAP(solver="gradient", num_steps=steps, batch_size=100, lr=3e-3)
models = {"Autoencoder": Autoencoder(64, latent, hidden=(128,), likelihood="continuous_bernoulli"),
          "DenoisingAutoencoder": DenoisingAutoencoder(64, latent, hidden=(128,), likelihood="continuous_bernoulli",
                                                       corruption="gaussian", noise_level=0.3)}
for name, model in models.items():
    fit = ppgen.fit(model, x_train, method, seed=0, progress=not quick)
    clean, cleaned = model.reconstruct(x_test).numpy(), model.reconstruct(noisy).numpy()
    print(f"  {name:<22} clean {mse(clean):.4f}   noisy {mse(cleaned):.4f}   "
          f"(training -log p(x | code) per image {fit.losses[-1] / len(x_train):.1f} nats)")
    try:
        model.log_prob(x_test)
    except ppgen.ModelError as exc:
        print(f"    log_prob: {str(exc).split(':')[0]}")
    # Samples decode codes drawn from a Gaussian fitted to the training codes.
    model.fit_code_distribution(x_train)
    save_figure(image_grid(model.sample(36, mean=True), nrow=6, title=f"{name}: decoded code-Gaussian draws"),
                out / f"{name}_samples.png")
    save_figure(reconstruction_grid(model, noisy, n=10), out / f"{name}_denoising.png")
print(f"figures in {out}/")
