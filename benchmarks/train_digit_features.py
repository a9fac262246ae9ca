"""Train the feature networks that ``ppgen.diagnostics.frechet_distance`` ships, and print their accuracy.

``digits``: an MLP 64-128-64-10 on the embedded 8x8 digits; 540 of the 1,797
images (a fixed permutation, numpy seed 0) are held out and never trained on.
``mnist`` (with ``--mnist``): a small CNN on the 60,000 MNIST training images,
held-out accuracy on the 10,000 test images.

Seeds are fixed (torch seed 0, one thread), so a rerun on the same machine and
library versions gives the same weights. The files go to
``ppgen/diagnostics/data/{name}_features.pt`` (or ``--out``)::

    python benchmarks/train_digit_features.py [--mnist ../shared/data/mnist]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ppgen.datasets import load_digits, load_mnist
from ppgen.diagnostics.features import FeatureNetwork, save_feature_network

DATA = Path(__file__).resolve().parents[1] / "ppgen" / "diagnostics" / "data"
SCRIPT = "benchmarks/train_digit_features.py"


def train(net, x, y, *, epochs, batch_size, lr, weight_decay, seed=0):
    """Adam on the cross-entropy, shuffled minibatches; prints the training loss per epoch."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        net.train()
        order, total = torch.randperm(len(x), generator=gen), 0.0
        for batch in order.split(batch_size):
            opt.zero_grad()
            loss = loss_fn(net(x[batch]), y[batch])
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        if epoch % max(1, epochs // 10) == 0 or epoch == epochs - 1:
            print(f"  epoch {epoch + 1}/{epochs}: training loss {total / len(x):.4f}", flush=True)
    return net.eval()


def accuracy(net, x, y):
    with torch.no_grad():
        correct = int((torch.cat([net(b) for b in x.split(2000)]).argmax(dim=1) == y).sum())
    return correct, correct / len(y)


def digits(out):
    images, labels = load_digits(return_labels=True)
    perm = np.random.RandomState(0).permutation(len(images))
    held, fit = np.sort(perm[:540]), perm[540:]
    x, y = torch.as_tensor(images), torch.as_tensor(labels)
    torch.manual_seed(0)
    net = FeatureNetwork({"arch": "mlp", "in_features": 64, "hidden": [128, 64], "classes": 10})
    train(net, x[fit], y[fit], epochs=150, batch_size=64, lr=1e-3, weight_decay=1e-4)
    correct, acc = accuracy(net, x[held], y[held])
    print(f"digits: held-out accuracy {acc:.4f} ({correct}/{len(held)}), training accuracy "
          f"{accuracy(net, x[fit], y[fit])[1]:.4f}")
    save_feature_network(net, out / "digits_features.pt", heldout_accuracy=acc, heldout_correct=correct,
                         heldout="540 images of load('digits'), indices in heldout_indices",
                         heldout_indices=torch.as_tensor(held, dtype=torch.int16), script=SCRIPT)


def mnist(root, out, epochs):
    x, y = (torch.as_tensor(a) for a in load_mnist(root, "train"))
    xt, yt = (torch.as_tensor(a) for a in load_mnist(root, "test"))
    torch.manual_seed(0)
    net = FeatureNetwork({"arch": "cnn", "side": 28, "channels": [16, 32], "hidden": 64, "classes": 10})
    train(net, x, y, epochs=epochs, batch_size=128, lr=1e-3, weight_decay=0.0)
    correct, acc = accuracy(net, xt, yt)
    print(f"mnist: test accuracy {acc:.4f} ({correct}/{len(yt)})")
    save_feature_network(net, out / "mnist_features.pt", heldout_accuracy=acc, heldout_correct=correct,
                         heldout="the 10,000 MNIST test images (load_mnist(root, 'test'))", script=SCRIPT)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", metavar="ROOT", help="also train the MNIST network on the IDX files in ROOT")
    parser.add_argument("--mnist-epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DATA)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    digits(args.out)
    print(f"  ({time.perf_counter() - start:.1f} s)")
    if args.mnist:
        start = time.perf_counter()
        mnist(args.mnist, args.out, args.mnist_epochs)
        print(f"  ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
