"""GANs: ppgen's training step against a plain PyTorch loop, and PacGAN's mode-collapse
experiment on the ring and the grid.

Run:  nice python benchmarks/bench_gan.py                 (both parts; long: see --help)
      python benchmarks/bench_gan.py --part speed --no-write

1. Speed. The same networks (a ``GAN``'s generator and discriminator modules,
   the same initial weights), the same batch (``batch`` packs of ``pack`` points
   of the ring), the same optimisers (Adam, lr 1e-3, betas (0.5, 0.999)) and the
   same non-saturating losses with real and fake packs in one discriminator call:

   - ppgen: ``ppgen.fit(gan, x, Adversarial(num_steps, batch_size=batch))``; the
     time per step is the loop's (``fit.timings["fit"] / num_steps``), the one-off
     set-up of a ``fit`` call (data check, one trace of the program) apart;
   - plain PyTorch: the DCGAN-tutorial loop over the same modules: ``fake = G(z)``,
     a discriminator step on ``fake.detach()``, a generator step through the
     updated discriminator, ``loss.item()`` recorded each step.

   Two sizes: PacGAN's 2-D networks (generator 4 x 400 with batch norm,
   discriminator 3 x 200 maxout units of 5 pieces) and a small pair (3 x 128,
   2 x 128), where per-step overhead weighs more. Contenders alternate, one torch
   thread; medians over rounds.

2. Modes. PacGAN's experiment (Lin et al. 2018, Table 1; 2500 samples scored by
   ``ppgen.diagnostics.mode_coverage``: modes with a sample within 3 sd, the share
   of such high-quality samples, and the KL divergence of their mode histogram
   from uniform): GAN (``pack=1``) against PacGAN2 (``pack=2``) on the ring of 8
   and the grid of 25 Gaussians, several seeds each. The paper trains its networks
   (lr 1e-4, beta1 0.8) for 400 epochs of 100,000 points, 400,000 steps; on a
   shared 2-core CPU this run uses the small pair with a generator without batch
   norm, lr 1e-3 and 10,000 (ring) or 20,000 (grid) steps, then anneals: a second
   ``fit`` of the trained model for 4,000 steps at lr 1e-4, which sharpens the
   modes (the settings are printed with the table; both stages are scored). Runs
   go to ``--jobs`` worker processes of one thread each.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, table, write_section  # noqa: E402

import ppgen  # noqa: E402
from ppgen.diagnostics import mode_coverage  # noqa: E402
from ppgen.inference import Adversarial  # noqa: E402
from ppgen.models import GAN  # noqa: E402

TARGET = 1.1
OUT = Path(__file__).resolve().parent / "results" / "gan.md"
SIZES = {"PacGAN (4x400 BN / 3x200 maxout-5)": dict(generator_hidden=(400,) * 4, discriminator_hidden=(200,) * 3),
         "small (3x128 BN / 2x128 maxout-5)": dict(generator_hidden=(128,) * 3, discriminator_hidden=(128,) * 2)}
LR, BETAS = 1e-3, (0.5, 0.999)
#: the published PacGAN Table 1 rows (10 runs each), for comparison.
PAPER = {("ring", 1): "6.3 / 98.2% / 0.45", ("ring", 2): "7.9 / 95.6% / 0.07",
         ("grid", 1): "17.3 / 94.8% / 0.70", ("grid", 2): "23.8 / 91.3% / 0.13"}


def make_gan(size, pack, seed):
    gan = GAN(data_dim=2, pack=pack, **SIZES[size])
    gan.initialize(None, torch.Generator().manual_seed(seed))
    return gan


def plain_loop(gan, data, steps, batch, seed):
    """A hand-written PyTorch loop over the GAN's own generator and discriminator modules."""
    torch.manual_seed(seed)
    G, D, pack, latent = gan.generator, gan.discriminator, gan.pack, gan.latent_dim
    G.train()
    opt_g = torch.optim.Adam(G.parameters(), lr=LR, betas=BETAS)
    opt_d = torch.optim.Adam(D.parameters(), lr=LR, betas=BETAS)
    n, rows = data.shape[0], batch * pack
    order, cursor, losses = torch.randperm(n), 0, []
    start = time.perf_counter()
    for _ in range(steps):
        if cursor + rows > n:
            order, cursor = torch.randperm(n), 0
        real = data[order[cursor:cursor + rows]].reshape(batch, -1)
        cursor += rows
        fake = G(torch.randn(rows, latent)).reshape(batch, -1)
        scores = D(torch.cat([real, fake.detach()])).squeeze(-1)
        d_loss = F.softplus(-scores[:batch]).mean() + F.softplus(scores[batch:]).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-D(fake).squeeze(-1)).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        losses.append(g_loss.item())
    return (time.perf_counter() - start) / steps


def ppgen_steps(gan, data, steps, batch, seed):
    method = Adversarial(num_steps=steps, batch_size=batch, lr_generator=LR, lr_discriminator=LR, betas=BETAS)
    start = time.perf_counter()
    fit = ppgen.fit(gan, data, method, seed=seed, progress=False)
    total = time.perf_counter() - start
    return fit.timings["fit"] / steps, total - fit.timings["fit"]


def speed(args):
    data = ppgen.datasets.ring(100_000, generator=torch.Generator().manual_seed(0))
    rows, notes = [], []
    for size in SIZES:
        steps = args.steps if "small" in size else max(20, args.steps // 4)
        times = {"ppgen": [], "plain": [], "setup": []}
        ppgen_steps(make_gan(size, 2, 0), data, 10, args.batch, 0)  # warm-up: first-call costs of both
        plain_loop(make_gan(size, 2, 0), data, 10, args.batch, 0)
        for r in range(args.rounds):
            for name in (["ppgen", "plain"] if r % 2 == 0 else ["plain", "ppgen"]):
                print(f"speed, {size}, round {r + 1}: {name} ...", file=sys.stderr)
                if name == "ppgen":
                    per_step, setup = ppgen_steps(make_gan(size, 2, r), data, steps, args.batch, r)
                    times["ppgen"].append(per_step)
                    times["setup"].append(setup)
                else:
                    times["plain"].append(plain_loop(make_gan(size, 2, r), data, steps, args.batch, r))
        ratios = [a / b for a, b in zip(times["ppgen"], times["plain"])]
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = statistics.median(ratios)
        rows.append([size, f"{1e3 * med['ppgen']:.2f}", f"{1e3 * med['plain']:.2f}", f"{ratio:.3f}",
                     f"{min(ratios):.3f}-{max(ratios):.3f}", f"{1e3 * med['setup']:.0f}",
                     "met" if ratio <= TARGET else "NOT met"])
        notes.append(f"{size}, {steps} steps per timing: ppgen " + ", ".join(f"{1e3 * t:.2f}" for t in times["ppgen"])
                     + " ms; plain " + ", ".join(f"{1e3 * t:.2f}" for t in times["plain"]) + " ms")
    text = "\n\n".join([
        "### Training step: ppgen vs plain PyTorch",
        "\n".join(f"- {n}" for n in notes),
        table(["networks (pack 2, batch 100 packs)", "ppgen ms/step", "plain ms/step", "median ratio",
               "ratio range", "ppgen set-up per fit (ms)", f"target <= {TARGET}x"], rows),
    ])
    return text


#: the networks of the mode experiment: SIZES' small pair, its generator without batch norm
#: (which trained faster and more stably on the ring and the grid than with it, on this budget).
MODE_NETS = dict(generator_hidden=(128,) * 3, discriminator_hidden=(128,) * 2, batch_norm=False)


def _mean_sd(values, digits):
    """``"mean +- sd"`` of the finite values (a KL is NaN when no sample is high quality)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    nan = f" ({len(values) - len(finite)} NaN)" if len(finite) < len(values) else ""
    return f"{statistics.mean(finite):.{digits}f} +- {sd:.{digits}f}{nan}"


def mode_run(name, pack, seed, steps, lr, anneal_steps, anneal_lr):
    """One PacGAN run on 100,000 points: train, score 2500 samples, anneal (a second fit of
    the trained model at a smaller step size), score again; ``(before, after, seconds)``."""
    torch.set_num_threads(1)
    centers, std = ppgen.datasets.mixture_modes(name)
    data = getattr(ppgen.datasets, name)(100_000, generator=torch.Generator().manual_seed(1000 + seed))
    gan = GAN(data_dim=2, pack=pack, **MODE_NETS)
    score = lambda: mode_coverage(gan.sample(2500, generator=torch.Generator().manual_seed(seed)), centers, std)
    start = time.perf_counter()
    ppgen.fit(gan, data, Adversarial(num_steps=steps, batch_size=100, lr_generator=lr, lr_discriminator=lr,
                                     betas=BETAS), seed=seed, progress=False)
    before = score()
    ppgen.fit(gan, data, Adversarial(num_steps=anneal_steps, batch_size=100, lr_generator=anneal_lr,
                                     lr_discriminator=anneal_lr, betas=BETAS), seed=10_000 + seed, progress=False)
    return before, score(), time.perf_counter() - start


def modes(args):
    steps = {"ring": args.ring_steps, "grid": args.grid_steps}
    seeds = {"ring": args.seeds, "grid": args.grid_seeds}
    jobs = [(name, pack, seed) for name in args.datasets for pack in (1, 2) for seed in range(seeds[name])]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = {job: pool.submit(mode_run, *job, steps[job[0]], args.lr, args.anneal_steps, args.anneal_lr)
                   for job in jobs}
        for job, future in futures.items():
            future.add_done_callback(lambda f, job=job: print(
                "{} pack={} seed={}: ".format(*job) + "{}; annealed: {} ({:.0f} s)".format(*f.result()),
                file=sys.stderr, flush=True))
        results = {job: future.result() for job, future in futures.items()}
    rows, raw = [], []
    for name in args.datasets:
        for pack in (1, 2):
            runs = [results[(name, pack, seed)] for seed in range(seeds[name])]
            raw += [f"{name} pack={pack} seed={seed}: trained {before}; annealed {after} ({seconds:.0f} s)"
                    for seed, (before, after, seconds) in enumerate(runs)]
            for stage, index in (("trained", 0), ("annealed", 1)):
                scores = [run[index] for run in runs]
                rows.append([name, "GAN" if pack == 1 else f"PacGAN{pack}", stage, str(len(scores)),
                             _mean_sd([s.modes for s in scores], 2) + f" / {scores[0].num_modes}",
                             _mean_sd([100 * s.high_quality for s in scores], 1),
                             _mean_sd([s.kl for s in scores], 3), PAPER[(name, pack)]])
    text = "\n\n".join([
        "### PacGAN's mode experiment (2500 samples per run)",
        f"- networks: generator 3 x 128 ReLU (no batch norm), discriminator 2 x 128 maxout units of 5 pieces; "
        f"batch 100 packs; non-saturating loss; Adam betas {BETAS}; 100,000 training points per run",
        f"- trained: {args.ring_steps} steps on the ring, {args.grid_steps} on the grid, lr {args.lr} for both "
        f"players; annealed: then a second `fit` of the trained model, {args.anneal_steps} steps at lr "
        f"{args.anneal_lr} (fresh Adam state)",
        "- seed s draws the data (1000 + s), the weights, the batches and z (s; 10000 + s when annealing), "
        "and the 2500 scored samples (s)",
        table(["target", "model", "stage", "runs", "modes (mean +- sd)", "high quality % (mean +- sd)",
               "KL (nats)", "paper (10 runs): modes / high quality / KL"], rows),
        "Runs:\n\n" + "\n".join(f"    {line}" for line in raw),
    ])
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["speed", "modes", "all"], default="all")
    parser.add_argument("--steps", type=int, default=400, help="steps per speed timing (small networks)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=5, help="runs per row on the ring")
    parser.add_argument("--grid-seeds", type=int, default=3, help="runs per row on the grid")
    parser.add_argument("--ring-steps", type=int, default=10000)
    parser.add_argument("--grid-steps", type=int, default=20000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--anneal-steps", type=int, default=4000)
    parser.add_argument("--anneal-lr", type=float, default=1e-4)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes for the mode runs")
    parser.add_argument("--datasets", nargs="+", default=["ring", "grid"])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    parts = []
    if args.part in ("speed", "all"):
        parts.append(speed(args))
    if args.part in ("modes", "all"):
        parts.append(modes(args))
    text = "\n\n".join([header(sys.argv, ["ppgen", "torch", "pyro"], extra=["one torch thread, float32"]), *parts])
    print(text)
    if not args.no_write:
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text("## GANs: training step and PacGAN's mode experiment\n\n" + text + "\n")
        write_section("GAN", text)


if __name__ == "__main__":
    main()
