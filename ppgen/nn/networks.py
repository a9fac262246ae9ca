"""Plain feed-forward networks."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "softplus": nn.Softplus,
               "gelu": nn.GELU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}


def make_activation(name):
    """The activation module called ``name`` (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"activation={name!r}: choose one of {sorted(ACTIVATIONS)}") from None


class MLP(nn.Sequential):
    """A multilayer perceptron ``in -> hidden... -> out``.

    Parameters
    ----------
    in_features, out_features : int
    hidden : sequence of int
        Widths of the hidden layers (may be empty: one linear map).
    activation : str
        Between hidden layers, not after the last layer.
    """

    def __init__(self, in_features, out_features, hidden=(64, 64), activation="relu"):
        widths = [int(in_features), *map(int, hidden), int(out_features)]
        if any(w <= 0 for w in widths):
            raise ValueError(f"MLP widths must be positive, got {widths}")
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(make_activation(activation))
        super().__init__(*layers)
        self.in_features, self.out_features = widths[0], widths[-1]

