"""Binarized MNIST with the IWAE paper's VAE: test log-likelihood after one CPU hour.

Run:  python benchmarks/bench_vae_mnist.py                     (one CPU hour of training + evaluation)
      python benchmarks/bench_vae_mnist.py --cpu-seconds 300 --no-write   (a short try)

The 784-200-200-50 MLP VAE of Burda et al. (2016) (tanh, Bernoulli likelihood,
Gaussian encoder), trained by ``ppgen.fit(vae, train, SVI(batch_size=100,
lr=1e-3, checkpoint=...))`` on the 50,000 training images of the fixed
binarization (Larochelle and Murray 2011). Training runs in chunks that resume
from the checkpoint until its process CPU time reaches ``--cpu-seconds``
(default 3600: "one CPU hour", one torch thread), and after each chunk the test
IWAE bound with k=100 on ``--curve-size`` test images is recorded (evaluation
time is not charged to the budget). At the end the test negative
log-likelihood is estimated by the IWAE bound with k=5000 on ``--test-size``
test images drawn at random (the split is not shuffled), with its standard
error over images, and with k=100 on the whole test split. Published anchors for this
architecture trained to convergence (3,280 epochs): VAE 86.76 nats, IWAE(k=50)
84.78 nats.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, header, table, write_section  # noqa: E402

import ppgen  # noqa: E402
from ppgen.diagnostics import dataset_log_likelihood  # noqa: E402
from ppgen.inference import SVI  # noqa: E402
from ppgen.models import VAE  # noqa: E402

DATA = SHARED_DATA / "binarized_mnist/binarized_mnist.npz"
ANCHORS = {"VAE (Burda et al. 2016, k=5000)": 86.76, "IWAE k=50 (Burda et al. 2016)": 84.78}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-seconds", type=float, default=3600.0)
    parser.add_argument("--chunk-steps", type=int, default=5000)
    parser.add_argument("--curve-size", type=int, default=1000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--final-k", type=int, default=5000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--workdir", default="benchmarks/results/vae_mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    train = torch.as_tensor(ppgen.datasets.load_binarized_mnist(DATA, "train"))
    test = torch.as_tensor(ppgen.datasets.load_binarized_mnist(DATA, "test"))
    state_path = workdir / "progress.json"
    progress = json.loads(state_path.read_text()) if state_path.exists() else {"steps": 0, "cpu": 0.0,
                                                                               "wall": 0.0, "curve": []}
    vae = VAE(784, 50, hidden=(200, 200), activation="tanh", likelihood="bernoulli")
    while progress["cpu"] < args.cpu_seconds:
        steps = progress["steps"] + args.chunk_steps
        cpu0, wall0 = time.process_time(), time.perf_counter()
        fit = ppgen.fit(vae, train, SVI(num_steps=steps, batch_size=100, lr=args.lr,
                                        checkpoint=str(workdir / "checkpoint.pt"), checkpoint_every=1000),
                        seed=args.seed, progress=False)
        progress["cpu"] += time.process_time() - cpu0
        progress["wall"] += time.perf_counter() - wall0
        progress["steps"] = steps
        curve = dataset_log_likelihood(vae, test[:args.curve_size], num_samples=100, batch_size=100)
        window = fit.losses[-500:]
        train_elbo = -sum(window) / len(window) / len(train)
        progress["curve"].append({"steps": steps, "epochs": steps * 100 / len(train), "cpu_s": progress["cpu"],
                                  "train_elbo": train_elbo, "test_iwae100": curve.mean,
                                  "test_iwae100_se": curve.stderr})
        state_path.write_text(json.dumps(progress, indent=1))
        print(f"{steps} steps, {progress['cpu']:.0f} CPU s: train ELBO {train_elbo:.2f}, "
              f"test IWAE(100) {curve.mean:.2f} +- {curve.stderr:.2f}", file=sys.stderr, flush=True)
    if progress["steps"] and not (workdir / "checkpoint.pt").exists():
        sys.exit("checkpoint missing")
    # Rebuild the trained weights from the checkpoint (a run may have resumed in a new process).
    ppgen.fit(vae, train, SVI(num_steps=progress["steps"], batch_size=100, lr=args.lr,
                              checkpoint=str(workdir / "checkpoint.pt")), seed=args.seed, progress=False)
    # The test split is not in random order (its second thousand is mostly ones, ~50 nats
    # easier): score a seeded random subset, and the whole split with k=100.
    subset = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))[:args.test_size]
    start = time.perf_counter()
    final = dataset_log_likelihood(vae, test[subset], num_samples=args.final_k, batch_size=50)
    eval_seconds = time.perf_counter() - start
    whole = dataset_log_likelihood(vae, test, num_samples=100, batch_size=500)
    rows = [[f"{p['steps']:,}", f"{p['epochs']:.1f}", f"{p['cpu_s']:.0f}", f"{-p['train_elbo']:.2f}",
             f"{-p['test_iwae100']:.2f} +- {p['test_iwae100_se']:.2f}"] for p in progress["curve"]]
    text = "\n\n".join([
        header(sys.argv, ["ppgen", "torch", "pyro"], extra=[
            "one torch thread; float32; VAE 784-200-200-50 (tanh), Bernoulli likelihood, Adam lr "
            f"{args.lr}, batch 100, Trace_ELBO (one sample)",
            f"training CPU budget {args.cpu_seconds:.0f} s (process time, evaluation excluded)"]),
        table(["steps", "epochs", "training CPU (s)", "train -ELBO (nats, last 500 steps)",
               f"test -IWAE(k=100), first {args.curve_size} test images"], rows),
        f"Final: test NLL by the IWAE bound with k={args.final_k} on {final.n} test images drawn at random "
        f"(seed {args.seed}): **{-final.mean:.2f} +- {final.stderr:.2f} nats** ({eval_seconds:.0f} s to evaluate); "
        f"with k=100 on all {whole.n} test images: {-whole.mean:.2f} +- {whole.stderr:.2f} nats. The curve's "
        "first 1000 test images are harder than the average (the split is not shuffled). "
        + "Published, trained to convergence (3,280 epochs): "
        + ", ".join(f"{k} {v}" for k, v in ANCHORS.items()) + ".",
    ])
    print(text)
    (workdir / "final.json").write_text(json.dumps({"nll": -final.mean, "stderr": final.stderr, "n": final.n,
                                                    "k": args.final_k, "nll_k100_all": -whole.mean,
                                                    **progress}, indent=1))
    if not args.no_write:
        write_section("Binarized MNIST VAE under a CPU-time budget", text)


if __name__ == "__main__":
    main()
