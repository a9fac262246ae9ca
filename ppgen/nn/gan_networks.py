"""Ready generator/discriminator pairs for GANs: MLPs for vectors, DCGAN-like
convolutional networks for images.

The MLP pair defaults to the architecture of PacGAN's 2-D experiments (Lin et
al. 2018, following VEEGAN): a generator of four 400-unit ReLU layers, each a
bias-free linear map followed by batch normalisation, then a linear output; a
discriminator of three 200-unit maxout layers with 5 pieces,

.. math::
    h_j = \\max_{k \\le K} (W_{jk} x + b_{jk}),

then a linear map to one logit. The convolutional pair follows DCGAN (Radford et
al. 2016): the generator maps the code linearly to a small feature map, then
stride-2 transposed convolutions with batch normalisation and ReLU up to the
image size; the discriminator runs stride-2 convolutions with leaky ReLU (no
batch normalisation, so the gradient penalty of WGAN-GP stays per sample) and a
linear map to one logit.

Discriminators take *packed* inputs (PacGAN): ``pack`` samples joined along the
feature axis (vectors) or the channel axis (images), so their input size is
``pack`` times a sample's. All networks take a batch of rank 2 (codes, packed
vectors) or 4 (packed images) and return ``(B, *out)``; discriminators return
``(B,)``.
"""

from __future__ import annotations

import torch
from torch import nn

from .conv import check_channels, check_image_shape, halvings
from .networks import make_activation


class Maxout(nn.Module):
    """``in -> out`` maxout units: the largest of ``pieces`` affine maps per unit."""

    def __init__(self, in_features, out_features, pieces=5):
        super().__init__()
        self.out_features, self.pieces = int(out_features), int(pieces)
        self.linear = nn.Linear(int(in_features), self.out_features * self.pieces)

    def forward(self, x):
        return self.linear(x).unflatten(-1, (self.out_features, self.pieces)).amax(-1)


def _widths(name, hidden):
    out = tuple(int(h) for h in hidden)
    if not out or any(h <= 0 for h in out):
        raise ValueError(f"{name} must be a non-empty sequence of positive widths, got {hidden!r}")
    return out


def _output_activation(name):
    if name in (None, "identity"):
        return nn.Identity()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"output={name!r}: choose 'identity', 'sigmoid' or 'tanh'")


class MLPGenerator(nn.Sequential):
    """``(N, latent_dim) -> (N, data_dim)``: [linear, batch norm, activation] x len(hidden), linear.

    With ``batch_norm=False`` the hidden linear maps carry biases instead.
    """

    def __init__(self, latent_dim, data_dim, hidden=(400, 400, 400, 400), activation="relu",
                 batch_norm=True, output="identity"):
        layers, previous = [], int(latent_dim)
        for width in _widths("generator hidden", hidden):
            layers.append(nn.Linear(previous, width, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(make_activation(activation))
            previous = width
        layers += [nn.Linear(previous, int(data_dim)), _output_activation(output)]
        super().__init__(*layers)


class MLPDiscriminator(nn.Module):
    """``(B, in_features) -> (B,)`` logits: maxout (``pieces > 1``) or ``activation`` layers, then linear."""

    def __init__(self, in_features, hidden=(200, 200, 200), pieces=5, activation="relu"):
        super().__init__()
        layers, previous = [], int(in_features)
        for width in _widths("discriminator hidden", hidden):
            if pieces > 1:
                layers.append(Maxout(previous, width, pieces))
            else:
                layers += [nn.Linear(previous, width), make_activation(activation)]
            previous = width
        layers.append(nn.Linear(previous, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).squeeze(-1)


class ConvGenerator(nn.Module):
    """``(N, latent_dim) -> (N, C, H, W)``: linear to the smallest feature map, then
    stride-2 3x3 transposed convolutions (output padding chosen per layer so odd sizes
    come out exact), batch norm and ReLU between them.

    ``channels`` lists the feature maps from the image side inward, as
    :class:`~ppgen.nn.conv.ConvDecoder` does (``(64, 128)``: 128 maps at a quarter
    of the size, 64 at half, then the image).
    """

    def __init__(self, latent_dim, image_shape, channels=(64, 128), output="sigmoid"):
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        channels = check_channels(channels)[::-1]
        heights = halvings(self.image_shape[1], len(channels))[::-1]
        widths = halvings(self.image_shape[2], len(channels))[::-1]
        self.start_shape = (channels[0], heights[0], widths[0])
        size = channels[0] * heights[0] * widths[0]
        self.linear = nn.Sequential(nn.Linear(int(latent_dim), size, bias=False), nn.BatchNorm1d(size), nn.ReLU())
        layers = []
        outputs = list(channels[1:]) + [self.image_shape[0]]
        for i, (inp, out) in enumerate(zip(channels, outputs)):
            padding = (heights[i + 1] - 2 * heights[i] + 1, widths[i + 1] - 2 * widths[i] + 1)
            last = i == len(channels) - 1
            layers.append(nn.ConvTranspose2d(inp, out, kernel_size=3, stride=2, padding=1,
                                             output_padding=padding, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(out), nn.ReLU()]
        layers.append(_output_activation(output))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z):
        return self.deconvs(self.linear(z).reshape((-1,) + self.start_shape))


class ConvDiscriminator(nn.Module):
    """``(B, C * pack, H, W) -> (B,)`` logits: stride-2 3x3 convolutions with leaky
    ReLU (slope 0.2), then a linear map."""

    def __init__(self, image_shape, channels=(64, 128), pack=1):
        super().__init__()
        shape = check_image_shape(image_shape)
        layers, previous = [], shape[0] * int(pack)
        for width in check_channels(channels):
            layers += [nn.Conv2d(previous, width, kernel_size=3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            previous = width
        height = halvings(shape[1], len(channels))[-1]
        width = halvings(shape[2], len(channels))[-1]
        self.convs = nn.Sequential(*layers)
        self.linear = nn.Linear(previous * height * width, 1)

    def forward(self, x):
        return self.linear(self.convs(x).flatten(1)).squeeze(-1)


def normal_init(module, generator=None, std=0.02):
    """Redraw every linear and convolution weight from :math:`N(0, \\text{std}^2)` and
    zero the biases (DCGAN's and PacGAN's initialisation); batch-norm layers restart
    at scale 1, shift 0, with fresh running statistics."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                weight = torch.randn(layer.weight.shape, generator=generator, dtype=layer.weight.dtype,
                                     device="cpu" if generator is None else generator.device)
                layer.weight.copy_(std * weight)
                if layer.bias is not None:
                    layer.bias.zero_()
            elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.reset_parameters()
