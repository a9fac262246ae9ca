"""Small convolutional encoders and decoders for images ``(C, H, W)``.

:class:`ConvEncoder` halves the height and width with each stride-2 3x3
convolution (``ceil(s / 2)``: 28 -> 14 -> 7, 8 -> 4 -> 2) and ends in a linear
map to a feature vector. :class:`ConvDecoder` mirrors it: a linear map to the
smallest feature map, then stride-2 transposed convolutions whose output
padding is chosen per layer so the image comes back at exactly its size, also
for odd sizes. Both accept any leading batch dimensions (Pyro's particle and
draw plates add them).
"""

from __future__ import annotations

import torch
from torch import nn

from .networks import make_activation


def check_image_shape(image_shape):
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise ValueError(f"image_shape must be (channels, height, width) of positive sizes, got {image_shape!r}")
    return shape


def halvings(size, count):
    """Spatial sizes after each of ``count`` stride-2 convolutions, starting with ``size``."""
    sizes = [size]
    for _ in range(count):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def check_channels(channels):
    channels = tuple(int(c) for c in channels)
    if not channels or any(c <= 0 for c in channels):
        raise ValueError(f"channels must be a non-empty sequence of positive widths, got {channels!r}")
    return channels


class ConvEncoder(nn.Module):
    """``(..., C, H, W) -> (..., out_features)``: stride-2 convolutions, then a linear map.

    Parameters
    ----------
    image_shape : (C, H, W)
    out_features : int
    channels : sequence of int
        Feature maps of each convolution (one halving each).
    extra_features : int
        Width of an extra vector (a condition) joined to the flattened maps
        before the linear map; pass it as ``forward(x, extra)``.
    activation : str
    """

    def __init__(self, image_shape, out_features, channels=(32, 64), extra_features=0, activation="relu"):
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        channels = check_channels(channels)
        layers, previous = [], self.image_shape[0]
        for width in channels:
            layers += [nn.Conv2d(previous, width, kernel_size=3, stride=2, padding=1), make_activation(activation)]
            previous = width
        self.convs = nn.Sequential(*layers)
        height = halvings(self.image_shape[1], len(channels))[-1]
        width = halvings(self.image_shape[2], len(channels))[-1]
        self.extra_features = int(extra_features)
        self.linear = nn.Linear(previous * height * width + self.extra_features, int(out_features))

    def forward(self, x, extra=None):
        batch = x.shape[:-3]
        features = self.convs(x.reshape((-1,) + self.image_shape)).flatten(1)
        if self.extra_features:
            features = torch.cat([features, extra.reshape(-1, self.extra_features)], -1)
        return self.linear(features).reshape(batch + (-1,))


class ConvDecoder(nn.Module):
    """``(..., in_features) -> (..., C, H, W)``: a linear map, then stride-2 transposed convolutions.

    The last layer has no bias of its own; a per-pixel ``output_bias`` of the
    image's shape is added instead (models start it at the data mean).

    Parameters
    ----------
    in_features : int
    image_shape : (C, H, W)
    channels : sequence of int
        The encoder's channels; the decoder runs them in reverse.
    activation : str
    """

    def __init__(self, in_features, image_shape, channels=(32, 64), activation="relu"):
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        channels = check_channels(channels)[::-1]
        heights = halvings(self.image_shape[1], len(channels))[::-1]
        widths = halvings(self.image_shape[2], len(channels))[::-1]
        self.start_shape = (channels[0], heights[0], widths[0])
        self.linear = nn.Linear(int(in_features), channels[0] * heights[0] * widths[0])
        self.activation = make_activation(activation)
        layers = []
        outputs = list(channels[1:]) + [self.image_shape[0]]
        for i, (inp, out) in enumerate(zip(channels, outputs)):
            # (s - 1) * 2 - 2 + 3 + p = 2s - 1 + p must equal the target size.
            padding = (heights[i + 1] - 2 * heights[i] + 1, widths[i + 1] - 2 * widths[i] + 1)
            last = i == len(channels) - 1
            layers.append(nn.ConvTranspose2d(inp, out, kernel_size=3, stride=2, padding=1,
                                             output_padding=padding, bias=not last))
            if not last:
                layers.append(make_activation(activation))
        self.deconvs = nn.Sequential(*layers)
        self.output_bias = nn.Parameter(torch.zeros(self.image_shape))

    def forward(self, z):
        batch = z.shape[:-1]
        maps = self.activation(self.linear(z.reshape(-1, z.shape[-1]))).reshape((-1,) + self.start_shape)
        return (self.deconvs(maps) + self.output_bias).reshape(batch + self.image_shape)
