"""Data-parallel training throughput: 1 and 2 CPU processes (gloo on loopback), and a scaling model.

Run:  nice python benchmarks/bench_distributed.py           (a few minutes on 2 busy cores)
      python benchmarks/bench_distributed.py --quick        (a smoke run: numbers meaningless)

Two workloads, each at a fixed *global* batch ``B`` (strong scaling: with ``W``
processes each takes ``B / W`` points per step):

- VAE: 64-256-128-8 MLP VAE (Bernoulli likelihood) on the 1,797 binarized 8x8 digits, B = 256.
- DDPM: the 8x8 digits U-Net DDPM of ``bench_ddpm.py`` (channels 32, 64; T = 1000), B = 64.

For each, in fresh processes with one torch thread each: the plain one-process
fit (``distributed=False``); ``distributed=True`` in a group of 1 (the overhead
of the data-parallel loop); 2 processes; and the one-process fit at batch
``B / 2`` (the compute of one rank's step). Throughput is ``B * steps / seconds``
of the training loop (``Fit.timings["fit"]``, after a warm-up fit), median over
rounds. Separately, the time of one gloo all-reduce of the gradient buffer
(``4 P`` bytes, float32) between 2 processes on loopback.

The table goes to the ``distributed`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, table, write_section  # noqa: E402

import ppgen  # noqa: E402
from ppgen.distributed.local import spawn  # noqa: E402
from ppgen.inference import SVI  # noqa: E402
from ppgen.models import DDPM, VAE  # noqa: E402

HERE = Path(__file__).resolve()
BATCH = {"VAE": 256, "DDPM": 64}


def build(name):
    torch.manual_seed(0)
    pixels = torch.as_tensor(ppgen.datasets.load_digits(), dtype=torch.float32)
    if name == "VAE":
        return VAE(64, latent_dim=8, hidden=(256, 128), likelihood="bernoulli"), (pixels > 0.5).float()
    images = pixels.reshape(-1, 1, 8, 8)
    return DDPM(image_shape=(1, 8, 8), timesteps=1000, hidden=(32, 64), decoder="discretized", levels=17), images


def parameters(name):
    model, _ = build(name)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train(name, steps, batch, distributed):
    """Seconds per training step over ``steps`` steps (after a short warm-up fit), in this process."""
    model, data = build(name)
    ppgen.fit(model, data, SVI(num_steps=max(2, steps // 10), batch_size=batch, lr=1e-3), seed=1, progress=False,
              distributed=distributed)
    fit = ppgen.fit(model, data, SVI(num_steps=steps, batch_size=batch, lr=1e-3), seed=0, progress=False,
                    distributed=distributed)
    return fit.timings["fit"] / steps


def _all_reduce_worker(numel, repeats):
    buffer = torch.randn(numel)
    for _ in range(3):
        torch.distributed.all_reduce(buffer)
    times = []
    for _ in range(repeats):
        torch.distributed.barrier()
        start = time.perf_counter()
        torch.distributed.all_reduce(buffer)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


CONFIGS = ("plain", "world1", "world2", "half")
LABELS = {"plain": "1 process, plain fit", "world1": "1 process, distributed=True",
          "world2": "2 processes, distributed=True", "half": "1 process, plain fit at B/2 (one rank's compute)"}


def measure(name, steps, rounds):
    """Median seconds per step of each configuration; every run in fresh processes."""
    target, batch = f"{HERE}:train", BATCH[name]
    runs = {config: [] for config in CONFIGS}
    for _ in range(rounds):
        runs["plain"].append(spawn(target, 1, name, steps, batch, False)[0])
        runs["world1"].append(spawn(target, 1, name, steps, batch, True)[0])
        runs["world2"].append(spawn(target, 2, name, steps, batch, True)[0])
        runs["half"].append(spawn(target, 1, name, steps, batch // 2, False)[0])
    return {k: statistics.median(v) for k, v in runs.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    steps = {"VAE": 20, "DDPM": 4} if args.quick else {"VAE": 400, "DDPM": 40}
    rounds = 1 if args.quick else args.rounds
    intro = header(["benchmarks/bench_distributed.py"] + (argv if argv is not None else sys.argv[1:]),
                   ["torch", "pyro"], [f"{rounds} round(s), median; one torch thread per process; gloo on 127.0.0.1"])
    rows, comm, notes = [], [], []
    for name in ("VAE", "DDPM"):
        batch = BATCH[name]
        per_step = measure(name, steps[name], rounds)
        for config in CONFIGS:
            size = batch // 2 if config == "half" else batch
            rows.append([name, size, LABELS[config], f"{1e3 * per_step[config]:.2f}",
                         f"{size / per_step[config]:,.0f}",
                         "" if config == "half" else f"{per_step['plain'] / per_step[config]:.2f}"])
            print(rows[-1], flush=True)
        numel = parameters(name)
        reduce_s = statistics.median(spawn(f"{HERE}:_all_reduce_worker", 2, numel, 5 if args.quick else 50))
        model_s = per_step["half"] + reduce_s
        comm.append([name, f"{numel:,}", f"{4 * numel / 1e6:.2f}", f"{1e3 * reduce_s:.2f}",
                     f"{1e3 * per_step['half']:.2f}", f"{batch / model_s:,.0f}", f"{batch / per_step['world2']:,.0f}"])
        notes.append(f"- {name}: halving the batch leaves {per_step['half'] / per_step['plain']:.0%} of the step "
                     f"time (the per-step overhead of tracing the Pyro program and of Adam does not shrink with "
                     f"the batch); the all-reduce is {reduce_s / per_step['half']:.0%} of one rank's compute.")
        print(comm[-1], flush=True)
    text = "\n".join([
        "## Data-parallel training throughput (`bench_distributed.py`)", "", intro, "",
        "Global batch B = 256 (VAE: 64-256-128-8 MLP, binarized 8x8 digits) and B = 64 (DDPM: 8x8 digits "
        "U-Net, channels 32, 64, T = 1000); strong scaling: 2 processes take B/2 each. Time per step of the "
        "training loop and samples per second; speed-up against the plain one-process fit.", "",
        table(["model", "batch", "configuration", "ms/step", "samples/s", "vs plain"], rows), "",
        "The model T(2) = T_c(B/2) + T_ar against the measurement: T_c(B/2) is the one-process step at "
        "half the batch, T_ar one gloo all-reduce of the 4P-byte float32 gradient buffer between 2 "
        "processes on loopback (median of 50).", "",
        table(["model", "parameters P", "all-reduce MB (4P)", "T_ar ms", "T_c(B/2) ms",
               "model: 2-process samples/s", "measured 2-process samples/s"], comm), "",
        *notes,
        "- The model assumes a core per rank; this machine has 2 cores for the 2 processes, their gloo "
        f"threads and anything else running (load average {os.getloadavg()[0]:.1f} at the end of the run; "
        "above about 2, the ranks did not have a core each).",
    ])
    print(text)
    if not args.no_write and not args.quick:
        write_section("distributed", text + "\n\n" + SCALING)


SCALING = """### Scaling model for N GPUs

A data-parallel step on N ranks costs

    T(N) = T_c(B / N) + T_ar(N),    T_ar(N) = 2 (N - 1) / N * 4P / beta + 2 (N - 1) alpha

(ring all-reduce of the 4P-byte float32 gradient: each rank sends and receives 2 (N - 1) / N of
the buffer over links of bandwidth beta with per-message latency alpha; ppgen sends the whole
gradient as one buffer per step, so the latency is paid once per step, not per parameter
tensor; a GAN step sends one buffer per discriminator step and one for the generator). The
throughput B / T(N) keeps growing while T_ar(N) stays small against T_c(B / N). Once the
per-rank batch no longer fills a device, T_c(B / N) stops shrinking as 1 / N and only a larger
global batch helps. The communication volume per step is fixed by P (the table above), so the
rule is: scale out when one rank's step computes for much longer than 8P / beta - for
P = 400,000 (the DDPM above) 0.13 ms at an assumed 25 GB/s link and 2.6 ms at an assumed
1.25 GB/s (10 Gbit/s Ethernet). GPU step times were not measured (no GPU on this machine), so
no GPU speed-up is claimed here."""


if __name__ == "__main__":
    main()
