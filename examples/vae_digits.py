"""Variational autoencoders on the 8x8 digits: an MLP VAE, a convolutional VAE and a
conditional VAE, with held-out IWAE bounds, reconstructions against PCA, and samples.

Run: python examples/vae_digits.py [OUT_DIR]   (PPGEN_QUICK=1 for a fast smoke run)

Pictures (samples, reconstructions, the 2-d latent map, samples per label) are
written to OUT_DIR (default: vae_digits_figures).
"""

import os
import sys
from pathlib import Path

import numpy as np
import torch

import ppgen
from ppgen.diagnostics import (
    dataset_log_likelihood,
    image_grid,
    latent_plot,
    reconstruction_grid,
    save_figure,
)
from ppgen.inference import SVI
from ppgen.models import VAE, ConditionalVAE, ConvVAE
from ppgen.models.vae.base import ConditionalData

torch.set_num_threads(1)
quick = os.environ.get("PPGEN_QUICK") == "1"
out = Path(sys.argv[1] if len(sys.argv) > 1 else "vae_digits_figures")
if quick and len(sys.argv) == 1:
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="vae_digits_"))
out.mkdir(parents=True, exist_ok=True)
steps, k = (60, 10) if quick else (3000, 500)

# Pixels in [0, 1] (grey levels): the continuous Bernoulli is a proper density for them.
x, labels = ppgen.datasets.load("digits", return_labels=True)
perm = np.random.default_rng(0).permutation(len(x))
train, test = perm[:1500], perm[1500:]
x_train, x_test = x[train], x[test]

method = SVI(num_steps=steps, batch_size=100, lr=3e-3)
vae = VAE(64, latent_dim=2, hidden=(256, 128), likelihood="continuous_bernoulli")
fit = ppgen.fit(vae, x_train, method, seed=0, progress=not quick)
# Each step's loss is the minibatch's -ELBO scaled up to the whole training set.
print(f"VAE: training -ELBO per image {np.mean(fit.losses[:20]) / len(train):.1f} -> "
      f"{np.mean(fit.losses[-20:]) / len(train):.1f} nats")

# log_prob is the IWAE bound: a lower bound on log p(x) that tightens as k grows.
for num_samples in (1, k):
    bound = dataset_log_likelihood(vae, x_test, num_samples=num_samples)
    print(f"  held-out {bound}")
# A density over [0, 1]^64 can exceed 1, so log p(x) can be positive and the NLL negative.
print(f"  NLL bound {bound.bits_per_dim(64):.3f} bits per pixel")


def pca_mse(components):
    mean = x_train.mean(0)
    basis = np.linalg.svd(x_train - mean, full_matrices=False)[2][:components]
    return float((((x_test - mean) @ basis.T @ basis + mean - x_test) ** 2).mean())


mse = float(((vae.reconstruct(x_test).numpy() - x_test) ** 2).mean())
print(f"  held-out reconstruction MSE {mse:.4f} (PCA with 2 components: {pca_mse(2):.4f})")

conv = ConvVAE((1, 8, 8), latent_dim=8, channels=(32, 64), likelihood="continuous_bernoulli")
ppgen.fit(conv, x_train, method, seed=0, progress=not quick)
conv_mse = float(((conv.reconstruct(x_test).numpy() - x_test) ** 2).mean())
print(f"ConvVAE (8-d code): held-out {dataset_log_likelihood(conv, x_test, num_samples=k)}")
print(f"  held-out reconstruction MSE {conv_mse:.4f} (PCA with 8 components: {pca_mse(8):.4f})")

cvae = ConditionalVAE(64, num_classes=10, latent_dim=2, hidden=(256, 128), likelihood="continuous_bernoulli")
ppgen.fit(cvae, (x_train, labels[train]), method, seed=0, progress=not quick)
per_label = torch.cat([cvae.sample(8, context=c, mean=True) for c in range(10)])
held_out = dataset_log_likelihood(cvae, ConditionalData(x_test, labels[test]), num_samples=k)
print(f"ConditionalVAE: held-out {held_out}")

save_figure(image_grid(vae.sample(64, mean=True), nrow=8, title="VAE samples (means)"), out / "vae_samples.png")
save_figure(reconstruction_grid(conv, x_test, n=10), out / "convvae_reconstructions.png")
save_figure(latent_plot(vae, x_test, labels=labels[test]), out / "vae_latent.png")
save_figure(image_grid(per_label, nrow=8, title="ConditionalVAE: one row per label"), out / "cvae_labels.png")
path = vae.interpolate(x_test[0], x_test[1], steps=8)
save_figure(image_grid(path, nrow=8, title="interpolation in latent space"), out / "vae_interpolation.png")
print(f"figures in {out}/")
