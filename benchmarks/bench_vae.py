"""Pyro's overhead in a VAE training step: ``ppgen.fit`` against a plain PyTorch loop.

Run:  python benchmarks/bench_vae.py            (about two minutes)
      python benchmarks/bench_vae.py --no-write

The same network (the IWAE paper's 784-200-200-50 MLP VAE, tanh, Bernoulli
likelihood), the same batch of 100 binarized-MNIST images per step, the same
optimiser (Adam, lr 1e-3) and the same single-sample ELBO estimator (the KL
term by Monte Carlo, as Pyro's ``Trace_ELBO`` computes it):

- ppgen: ``ppgen.fit(vae, train, SVI(num_steps, batch_size=100, lr=1e-3))``;
  the time per step is the SVI loop's (``fit.timings["fit"] / num_steps``);
  the one-off set-up of a ``fit`` call (checking the data, one trace of the
  model) is reported apart.
- plain PyTorch: the encoder and decoder modules of an identical VAE, the
  reparameterised ELBO written out by hand, minibatches from a permutation per
  epoch, ``loss.backward()``, ``optimizer.step()``.

Contenders alternate, one torch thread; the median over rounds is reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, header, table, write_section  # noqa: E402

import ppgen  # noqa: E402
from ppgen.inference import SVI  # noqa: E402
from ppgen.models import VAE  # noqa: E402

DATA = SHARED_DATA / "binarized_mnist/binarized_mnist.npz"
TARGET = 1.15


def make_vae():
    return VAE(784, 50, hidden=(200, 200), activation="tanh", likelihood="bernoulli")


def plain_loop(vae, train, steps, batch=100, lr=1e-3, seed=0):
    """A hand-written PyTorch VAE loop over the same encoder and decoder modules."""
    torch.manual_seed(seed)
    params = list(vae.encoder.parameters()) + list(vae.decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    n, latent = train.shape[0], vae.latent_dim
    order, cursor = torch.randperm(n), 0
    start = time.perf_counter()
    for _ in range(steps):
        if cursor + batch > n:
            order, cursor = torch.randperm(n), 0
        x = train[order[cursor:cursor + batch]]
        cursor += batch
        loc, raw = vae.encoder(x).split(latent, -1)
        scale = F.softplus(raw) + 1e-5
        z = loc + scale * torch.randn_like(loc)
        log_lik = -F.binary_cross_entropy_with_logits(vae.decoder(z), x, reduction="none").sum(-1)
        log_prior = (-0.5 * z.pow(2) - 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(-1)
        log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        loss = -(log_lik + log_prior - log_q).sum() * (n / batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def ppgen_steps(vae, train, steps, seed=0):
    start = time.perf_counter()
    fit = ppgen.fit(vae, train, SVI(num_steps=steps, batch_size=100, lr=1e-3), seed=seed, progress=False)
    total = time.perf_counter() - start
    return fit.timings["fit"] / steps, total - fit.timings["fit"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    train = torch.as_tensor(ppgen.datasets.load_binarized_mnist(DATA, "train"))
    times = {"ppgen": [], "plain": [], "setup": []}
    ppgen_steps(make_vae(), train, 20)  # warm-up: first-call costs of both paths
    plain_loop(make_vae(), train, 20)
    for r in range(args.rounds):
        contenders = ["ppgen", "plain"] if r % 2 == 0 else ["plain", "ppgen"]
        for name in contenders:
            print(f"round {r + 1}: {name} ...", file=sys.stderr)
            if name == "ppgen":
                per_step, setup = ppgen_steps(make_vae(), train, args.steps, seed=r)
                times["ppgen"].append(per_step)
                times["setup"].append(setup)
            else:
                times["plain"].append(plain_loop(make_vae(), train, args.steps, seed=r))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["ppgen"] / med["plain"]
    rows = [["ppgen `fit(vae, SVI(batch_size=100))`, per step", f"{1e3 * med['ppgen']:.2f}", f"{ratio:.2f}"],
            ["plain PyTorch loop, per step", f"{1e3 * med['plain']:.2f}", "1.00"],
            ["ppgen one-off set-up per `fit` call (data check, one model trace)", f"{1e3 * med['setup']:.0f}", ""]]
    text = "\n\n".join([
        header(sys.argv, ["ppgen", "torch", "pyro"], extra=[
            "one torch thread, float32; 784-200-200-50 tanh VAE, Bernoulli likelihood, batch 100, Adam lr 1e-3; "
            f"{args.steps} steps per timing, {args.rounds} rounds alternating, medians",
            "all rounds: ppgen " + ", ".join(f"{1e3 * t:.2f}" for t in times["ppgen"]) + " ms; plain "
            + ", ".join(f"{1e3 * t:.2f}" for t in times["plain"]) + " ms"]),
        table(["contender", "ms", "ppgen / plain"], rows),
        f"Target: at most {TARGET}x the plain loop per step: "
        f"{'met' if ratio <= TARGET else 'NOT met'} ({ratio:.2f}x).",
    ])
    print(text)
    if not args.no_write:
        write_section("VAE training step: ppgen vs plain PyTorch", text)


if __name__ == "__main__":
    main()
