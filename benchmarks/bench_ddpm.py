"""DDPM benchmarks: training-step overhead, 2-D mixtures against diffusers' samplers, 8x8 digits.

Run:  nice python benchmarks/bench_ddpm.py              (about half an hour on 2 busy cores)
      python benchmarks/bench_ddpm.py --quick            (a smoke run: tiny settings, numbers meaningless)
      python benchmarks/bench_ddpm.py --mnist            (adds a longer 28x28 MNIST run)

1. Training step. ``ppgen.fit(DDPM, x, SVI(batch_size=B))`` (its noise-prediction objective,
   ``DDPM.training_objective``) against a plain PyTorch loop over the *same* denoiser module:
   the same minibatches from a permutation per epoch, ``t ~ U{1..T}``, ``eps ~ N(0, I)``, the
   summed squared error scaled by N/B, Adam. Contenders alternate; the median per-step time
   over rounds is reported, for the 2-D MLP and for the 8x8 U-Net.
2. Ring of 8 and grid of 25 Gaussians (``ppgen.datasets.ring``/``grid``): one DDPM per target
   with the documented recipe for sharp low-dimensional mixtures (T = 1000, linear betas,
   posterior variance, data standardised to sd 4 (``data_scale=4``), 128-128-128 MLP, weight
   average with decay 0.999, Adam 2e-3 decayed to 2e-4, batch 512; 20,000 steps on the
   ring, 30,000 on the grid), then 10,000 samples from
   ppgen's ancestral sampler (1000 steps) and DDIM (50 steps, eta = 0), and, when diffusers is
   installed, from its ``DDPMScheduler``/``DDIMScheduler`` with the same betas,
   ``clip_sample=False``, ``variance_type="fixed_small"`` and the same trained network
   (diffusers counts steps from 0: its ``t`` is ppgen's ``t - 1``). Mode coverage and
   high-quality share (PacGAN's rule: within 3 sd of a centre), KL of the mode histogram to
   uniform, MMD (Gaussian kernel, median bandwidth) and energy distance to 10,000 target
   draws, and seconds per 10,000 samples.
3. 8x8 digits (the embedded UCI set, pixels on 17 levels): a small U-Net DDPM with the
   discretized decoder (channels 32, 64) trained for 4,000 steps of 64 digits (a few minutes) on
   1,500 digits; an image grid of samples
   (``benchmarks/results/ddpm_digits_samples.png``, and a small one committed as
   ``benchmarks/ddpm_digits.png``), the Frechet distance in the shipped digit classifier's
   features (``features="digits"``) of samples against the 297 held-out digits (and of the
   training digits against them, the floor), and the bound in bits per dimension on the
   held-out digits (a bound on the discrete log-likelihood).

Tables are printed and written to ``benchmarks/results/ddpm.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, table  # noqa: E402

import ppgen  # noqa: E402
from ppgen.diagnostics import energy_distance, frechet_distance, image_grid, mmd, mode_coverage, save_figure  # noqa: E402
from ppgen.inference import SVI  # noqa: E402
from ppgen.models import DDPM  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGET = 1.1


# ------------------------------------------------------------------ 1. training step
def plain_loop(model, x, steps, batch, lr, seed):
    """The noise-prediction loss written out by hand on ``model.denoiser`` (and the moving
    average of its weights, as ppgen keeps one); seconds per step."""
    torch.manual_seed(seed)
    net, s = model.denoiser, model.schedule
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    average = [p.detach().clone() for p in net.parameters()] if model.ema_decay else None
    n, T = x.shape[0], model.timesteps
    order, cursor = torch.randperm(n), 0
    start = time.perf_counter()
    for step in range(steps):
        if cursor + batch > n:
            order, cursor = torch.randperm(n), 0
        z = (x[order[cursor:cursor + batch]] - model.shift) / model.scale
        cursor += batch
        t = torch.randint(1, T + 1, (batch,))
        eps = torch.randn_like(z)
        shape = (batch,) + (1,) * (z.dim() - 1)
        xt = s.sqrt_alpha_bar[t].reshape(shape) * z + s.sqrt_one_minus_alpha_bar[t].reshape(shape) * eps
        rows = xt if model.denoiser_name == "unet" else xt.reshape(batch, -1)
        loss = (eps.reshape(rows.shape) - net(rows, t)).pow(2).sum() * (n / batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if average is not None:
            with torch.no_grad():
                done = step + 1  # the same warmed-up decay as ppgen.nn.ema.WeightAverage
                torch._foreach_lerp_(average, list(net.parameters()), 1 - min(model.ema_decay, done / (9 + done)))
    return (time.perf_counter() - start) / steps


def ppgen_steps(model, x, steps, batch, lr, seed):
    fit = ppgen.fit(model, x, SVI(num_steps=steps, batch_size=batch, lr=lr), seed=seed, progress=False)
    return fit.timings["fit"] / steps


def step_times(name, make, x, steps, batch, rounds, lr=1e-3):
    times = {"ppgen": [], "plain": []}
    x = make().check_data(x)  # (N, *event_shape): both contenders index the same tensor
    ppgen_steps(make(), x, 5, batch, lr, 0)  # first-call costs of both paths
    plain_loop(make(), x, 5, batch, lr, 0)
    for r in range(rounds):
        for who in (["ppgen", "plain"] if r % 2 == 0 else ["plain", "ppgen"]):
            model = make()
            model.initialize(x, generator=torch.Generator().manual_seed(r))
            fn = ppgen_steps if who == "ppgen" else plain_loop
            times[who].append(fn(model, x, steps, batch, lr, r))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["ppgen"] / med["plain"]
    detail = (f"{name}: ppgen " + ", ".join(f"{1e3 * t:.2f}" for t in times["ppgen"]) + " ms; plain "
              + ", ".join(f"{1e3 * t:.2f}" for t in times["plain"]) + " ms")
    return [name, f"{batch}", f"{1e3 * med['ppgen']:.2f}", f"{1e3 * med['plain']:.2f}", f"{ratio:.3f}"], detail


# ------------------------------------------------------------------ 2. 2-D mixtures
def diffusers_samplers(model):
    """``{name: sampler(n, generator)}`` running diffusers' schedulers on ``model``'s network."""
    try:
        from diffusers import DDIMScheduler, DDPMScheduler
    except ImportError:
        return {}
    betas = model.schedule.betas[1:].double().cpu().numpy()
    common = dict(num_train_timesteps=model.timesteps, trained_betas=betas, clip_sample=False,
                  prediction_type="epsilon")

    def run(scheduler, steps, n, generator, **step_kwargs):
        scheduler.set_timesteps(steps)
        x = torch.randn((n,) + model.event_shape, generator=generator)
        with torch.no_grad():
            for t in scheduler.timesteps:
                eps = model.network(x, int(t) + 1)  # diffusers' t = ppgen's t - 1
                x = scheduler.step(eps, t, x, generator=generator, **step_kwargs).prev_sample
        return model.to_data_units(x)

    return {
        "diffusers DDPMScheduler (1000 steps)": lambda n, g: run(
            DDPMScheduler(variance_type="fixed_small", **common), model.timesteps, n, g),
        "diffusers DDIMScheduler (50 steps, eta 0)": lambda n, g: run(
            DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **common), 50, n, g, eta=0.0),
    }


def mixture_rows(name, args):
    draw = ppgen.datasets.ring if name == "ring" else ppgen.datasets.grid
    x = draw(20000, generator=torch.Generator().manual_seed(0))
    target = draw(10000, generator=torch.Generator().manual_seed(1))
    held_out = draw(2000, generator=torch.Generator().manual_seed(2))
    centers, std = ppgen.datasets.mixture_modes(name)
    model = DDPM(2, timesteps=args.timesteps, hidden=(128, 128, 128), variance="posterior", data_scale=4.0)
    fit = ppgen.fit(model, x, SVI(num_steps=args.mixture_steps[name], lr=2e-3, lr_decay=0.1, batch_size=512),
                    seed=0, progress=not args.quiet)
    bound = model.log_prob(held_out, seed=0)
    samplers = {
        "ppgen ancestral (1000 steps)": lambda n, g: model.sample(n, generator=g),
        "ppgen DDIM (50 steps, eta 0)": lambda n, g: model.sample(n, sampler="ddim", steps=50, generator=g),
        **diffusers_samplers(model),
    }
    rows = []
    for label, sampler in samplers.items():
        start = time.perf_counter()
        samples = sampler(args.num_samples, torch.Generator().manual_seed(3))
        seconds = time.perf_counter() - start
        cover = mode_coverage(samples, centers, std)
        rows.append([name, label, f"{cover.modes}/{cover.num_modes}", f"{100 * cover.high_quality:.1f}",
                     f"{cover.kl:.4f}", f"{mmd(samples[:5000], target[:5000]):.5f}",
                     f"{energy_distance(samples[:5000], target[:5000]):.5f}",
                     f"{seconds * 10000 / args.num_samples:.1f}"])
        print(" | ".join(rows[-1]), file=sys.stderr)
    note = (f"{name}: {args.mixture_steps[name]} steps (batch 512) in {fit.timings['fit']:.0f} s; "
            "bound on 2,000 held-out points "
            f"{float(bound.mean()):.3f} +- {float(bound.std() / len(bound) ** 0.5):.3f} nats per point")
    return rows, note


# ------------------------------------------------------------------ 3. images
IMAGE_SETS = {
    # name: image shape, U-Net channels, levels, batch, feature network
    "digits": ((1, 8, 8), (32, 64), 17, 64, "digits"),
    "mnist": ((1, 28, 28), (32, 64, 64), 256, 128, "mnist"),
}


def load_images(name):
    """``(train, test)`` flat float tensors in [0, 1] on the set's levels."""
    if name == "digits":
        images = torch.as_tensor(ppgen.datasets.load_digits())
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        return images[perm[:1500]], images[perm[1500:]]
    root = HERE.parent.parent / "shared" / "data" / "mnist"
    train = torch.as_tensor(ppgen.datasets.load_mnist(root, "train")[0])
    test = torch.as_tensor(ppgen.datasets.load_mnist(root, "test")[0])
    return train, test[torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:1000]]


def images(name, args, steps):
    shape, channels, levels, batch, features = IMAGE_SETS[name]
    train, test = load_images(name)
    if args.quick:
        train, test = train[:200], test[:50]
    model = DDPM(image_shape=shape, timesteps=args.timesteps, hidden=channels, decoder="discretized", levels=levels)
    # The long MNIST run checkpoints: rerun the same command to resume it after an interruption.
    checkpoint = None if args.quick or name != "mnist" else str(RESULTS / f"ddpm_{name}_checkpoint.pt")
    RESULTS.mkdir(exist_ok=True)
    fit = ppgen.fit(model, train, SVI(num_steps=steps, lr=1e-3, lr_decay=0.1, batch_size=batch,
                                      checkpoint=checkpoint, checkpoint_every=50),
                    seed=0, progress=not args.quiet)
    rows, flat = [], lambda v: v.reshape(len(v), -1)
    floor = frechet_distance(train[:len(test) * 4], test, features=features)
    rows.append(["training images (the floor)", f"{min(len(train), len(test) * 4)}", f"{floor:.2f}", "-"])
    for label, kwargs in [("ancestral (1000 steps)", {}), ("DDIM (50 steps, eta 0)", {"sampler": "ddim", "steps": 50})]:
        start = time.perf_counter()
        samples = model.sample(args.num_image_samples, generator=torch.Generator().manual_seed(1), **kwargs)
        seconds = time.perf_counter() - start
        fd = frechet_distance(flat(samples), test, features=features)
        rows.append([f"DDPM {label}", f"{len(samples)}", f"{fd:.2f}", f"{seconds:.1f}"])
        if not kwargs and not args.quick:
            RESULTS.mkdir(exist_ok=True)
            save_figure(image_grid(samples[:100], nrow=10, title=f"DDPM samples ({name}, ancestral)"),
                        RESULTS / f"ddpm_{name}_samples.png")
            if name == "digits":
                save_figure(image_grid(samples[:36], nrow=6), HERE / "ddpm_digits.png")
            else:  # the same grid, kept in the repository
                save_figure(image_grid(samples[:100], nrow=10, title=f"DDPM samples ({name}, ancestral)"),
                            HERE / f"ddpm_{name}.png")
    if name == "mnist" and not args.quick:
        # The Frechet distance is biased upward, and varies, at small n: the floor over random
        # training subsets at the samples' n, and more samples by DDIM-50 (the same code as in
        # the 2026-11-21 run, where these rows were computed on its resumed checkpoint).
        generator, n = torch.Generator().manual_seed(3), args.fd_samples
        start = time.perf_counter()
        many = model.sample(n, sampler="ddim", steps=50, generator=torch.Generator().manual_seed(2))
        seconds = time.perf_counter() - start
        rows.append([f"DDPM DDIM (50 steps, eta 0), n = {n}", f"{n}",
                     f"{frechet_distance(flat(many), test, features=features):.2f}", f"{seconds:.1f}"])
        for size in (n, args.num_image_samples):
            floors = sorted(frechet_distance(train[torch.randperm(len(train), generator=generator)[:size]], test,
                                             features=features) for _ in range(5))
            rows.append(["training images, 5 random subsets (median, min-max)", f"{size}",
                         f"{floors[2]:.2f} ({floors[0]:.2f}-{floors[-1]:.2f})", "-"])
    # The full bound costs T network passes per image, so the long MNIST run bounds a subset.
    test = test[:args.bound_images] if name == "mnist" else test
    start = time.perf_counter()
    bound = model.variational_bound(test, seed=0)
    bound_seconds = time.perf_counter() - start
    small = DDPM(**{**model.get_config(), "variance": "posterior"})
    small.load_state_dict(model.state_dict())
    small_bound = small.variational_bound(test, seed=0)
    bpd = lambda b: f"{float(b.bits_per_dim.mean()):.3f} +- {float(b.bits_per_dim.std() / len(test) ** 0.5):.3f}"
    note = (f"{name}: {steps} steps (batch {batch}) in {fit.timings['fit']:.0f} s; held-out bound "
            f"{bpd(bound)} bits/dim with sigma_t^2 = beta_t, {bpd(small_bound)} with the posterior variance "
            f"(the same network; terms L_T {float(bound.prior.mean()):.3f}, sum L_t "
            f"{float(bound.diffusion.mean()):.2f}, L_0 {float(bound.decoder.mean()):.2f} nats per image; "
            f"{bound_seconds:.0f} s for {len(test)} images)")
    return rows, note


# ------------------------------------------------------------------ main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke run)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--skip", nargs="*", default=(), choices=("step", "mixtures", "digits"))
    parser.add_argument("--mnist", action="store_true", help="add the longer 28x28 MNIST run")
    parser.add_argument("--mnist-steps", type=int, default=20000)
    parser.add_argument("--fd-samples", type=int, default=2000,
                        help="DDIM-50 MNIST samples for the Frechet distance at a larger n")
    parser.add_argument("--bound-images", type=int, default=100,
                        help="held-out MNIST images in the bits/dim bound (each costs T network passes)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    quick = args.quick
    args.timesteps = 50 if quick else 1000
    args.mixture_steps = {"ring": 50, "grid": 50} if quick else {"ring": 20000, "grid": 30000}
    args.digit_steps = 20 if quick else 4000
    args.num_samples = 500 if quick else 10000
    args.num_image_samples = 50 if quick else 300
    steps, rounds = (5, 2) if quick else (100, 5)
    sections = [header(sys.argv, ["ppgen", "torch", "pyro", "diffusers"], extra=[
        "one torch thread, float32; medians over rounds where timed"])]
    if "step" not in args.skip:
        ring = ppgen.datasets.ring(20000, generator=torch.Generator().manual_seed(0))
        digit_x = torch.as_tensor(ppgen.datasets.load_digits())
        mlp = lambda: DDPM(2, timesteps=args.timesteps, hidden=(128, 128, 128))
        unet = lambda: DDPM(image_shape=(1, 8, 8), timesteps=args.timesteps, hidden=(32, 64),
                            decoder="discretized", levels=17)
        rows, details = [], []
        for name, make, x, batch in [("2-D MLP 128x3", mlp, ring, 512), ("8x8 U-Net (32, 64)", unet, digit_x, 64)]:
            row, detail = step_times(name, make, x, steps, batch, rounds)
            rows.append(row)
            details.append(detail)
            print(detail, file=sys.stderr)
        worst = max(float(r[-1]) for r in rows)
        sections += ["## Training step: ppgen.fit vs a plain PyTorch loop",
                     table(["network", "batch", "ppgen ms/step", "plain ms/step", "ppgen / plain"], rows),
                     f"Target: at most {TARGET}x: {'met' if worst <= TARGET else 'NOT met'} (worst {worst:.3f}x). "
                     f"{steps} steps per timing, {rounds} alternating rounds.\n\n"
                     + "\n".join(f"- {d}" for d in details)]
    if "mixtures" not in args.skip:
        rows, notes = [], []
        for name in ("ring", "grid"):
            r, note = mixture_rows(name, args)
            rows += r
            notes.append(note)
        try:
            import diffusers  # noqa: F401
            peer = ""
        except ImportError:
            peer = "diffusers is not installed here, so its rows are absent. "
        sections += ["## Ring and grid: samplers on one trained DDPM",
                     table(["target", "sampler", "modes", "high quality %", "KL to uniform", "MMD^2",
                            "energy distance", "s per 10,000"], rows),
                     peer + f"{args.num_samples} samples per sampler (MMD and energy distance on 5,000 of them "
                     "against 5,000 target draws).\n\n" + "\n".join(f"- {n}" for n in notes)]
    for name, run, steps in [("digits", "digits" not in args.skip, args.digit_steps),
                             ("mnist", args.mnist, 20 if quick else args.mnist_steps)]:
        if run:
            rows, note = images(name, args, steps)
            sections += [f"## {name}: U-Net DDPM, discretized decoder ({IMAGE_SETS[name][2]} levels)",
                         table(["samples", "n", f"Frechet distance ({name} features)", "sampling s"], rows),
                         note + f". Samples: `benchmarks/results/ddpm_{name}_samples.png`."]
    text = "\n\n".join(sections)
    print(text)
    if not quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "ddpm.md").write_text("# DDPM benchmarks\n\n" + text + "\n")


if __name__ == "__main__":
    main()
