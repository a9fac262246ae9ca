"""Pictures of image models: grids of samples and reconstructions, latent maps.

Each function returns a matplotlib ``Figure`` built outside pyplot (see
:mod:`ppgen.diagnostics.plots`); :func:`~ppgen.diagnostics.save_figure` writes it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import DataError


def _numpy(images):
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    return np.asarray(images, dtype=float)


def _as_images(images, image_shape=None):
    """``(N, H, W)`` or ``(N, H, W, 3)`` arrays from flat or channel-first batches."""
    x = _numpy(images)
    if image_shape is not None:
        x = x.reshape((len(x),) + tuple(image_shape))
    elif x.ndim == 2:
        side = int(round(math.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise DataError(f"images: {x.shape[1]} pixels per image is not a square; give image_shape")
        x = x.reshape(len(x), side, side)
    if x.ndim == 4 and x.shape[1] in (1, 3):  # channel-first
        x = x[:, 0] if x.shape[1] == 1 else np.moveaxis(x, 1, -1)
    if x.ndim not in (3, 4):
        raise DataError(f"images: expected (N, H, W), (N, C, H, W) or flat (N, H*W), got {x.shape}")
    return x


def tile(images, nrow=None, image_shape=None, pad=1):
    """Images side by side in one array ``(rows*(H+pad)-pad, cols*(W+pad)-pad[, 3])``."""
    x = _as_images(images, image_shape)
    n = len(x)
    if n == 0:
        raise DataError("images: none to show")
    cols = nrow or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    h, w = x.shape[1:3]
    canvas = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad) + x.shape[3:], np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = x[i]
    return canvas


def image_grid(images, nrow=None, image_shape=None, title=None, cmap="gray_r"):
    """A grid of images (samples, data, reconstructions) as one figure.

    Parameters
    ----------
    images : tensor or array, ``(N, H, W)``, ``(N, C, H, W)`` or flat ``(N, H*W)``
    nrow : int, optional
        Images per row (default: a square grid).
    image_shape : tuple, optional
        The shape of one image when ``images`` are flat and not square.
    """
    from matplotlib.figure import Figure

    canvas = tile(images, nrow, image_shape)
    aspect = canvas.shape[0] / canvas.shape[1]
    fig = Figure(figsize=(5.0, max(1.0, 5.0 * aspect)), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(np.ma.masked_invalid(canvas), cmap=cmap, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def reconstruction_grid(model, data, n=8, image_shape=None):
    """Data (top row) above the model's reconstructions (bottom row)."""
    x = data[:n]
    recon = model.reconstruct(x)
    pair = np.concatenate([_as_images(x, image_shape), _as_images(recon, image_shape)])
    return image_grid(pair, nrow=len(pair) // 2, title="data (top) and reconstructions (bottom)")


def latent_plot(model, data, labels=None, ax=None):
    """The codes of ``data`` (``model.codes``; the first two dimensions), coloured by ``labels``."""
    from .plots import new_axes

    z = _numpy(model.codes(data))
    if z.ndim != 2 or z.shape[1] < 2:
        if z.ndim == 2 and z.shape[1] == 1:
            z = np.column_stack([z[:, 0], np.zeros(len(z))])
        else:
            raise DataError(f"codes of shape {z.shape}: expected (N, L)")
    fig, ax = new_axes(ax, figsize=(5.0, 4.5))
    colors = None if labels is None else _numpy(labels)
    points = ax.scatter(z[:, 0], z[:, 1], c=colors, s=6, cmap="tab10", alpha=0.8)
    if labels is not None:
        fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title(f"latent codes of {type(model).__name__}")
    return fig
