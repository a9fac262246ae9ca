"""Reference posteriors of the corpus (:mod:`tests.programs.corpus`) from Pyro's own NUTS.

Run once (minutes; Pyro evaluates its potential in Python) and kept as the small fixture
``references.json``: for each program and each scalar of each latent site, the posterior
mean, standard deviation and Monte Carlo standard error of the mean (from ArviZ's bulk
ESS), float64, so that CI compares ppgen's NUTS against Pyro's without rerunning Pyro::

    python -m tests.programs.make_references [name ...]   (from the project root)
"""

import json
import sys
import time
from pathlib import Path

import arviz as az
import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS

from .corpus import PROGRAMS, data

OUT = Path(__file__).with_name("references.json")
WARMUP, DRAWS, CHAINS = 1000, 2000, 2


def reference(name):
    model, _, features = PROGRAMS[name]
    pyro.set_rng_seed(0)
    kernel = NUTS(model, max_plate_nesting=2 if "enumerated" in features else None, target_accept_prob=0.9)
    mcmc = MCMC(kernel, num_samples=DRAWS, warmup_steps=WARMUP, num_chains=1, disable_progbar=True)
    start = time.perf_counter()
    samples = {}
    for chain in range(CHAINS):
        pyro.set_rng_seed(chain)
        mcmc.run(**data(name))
        for k, v in mcmc.get_samples().items():
            samples.setdefault(k, []).append(v.detach().numpy())
    out = {"seconds": time.perf_counter() - start, "sites": {}}
    samples = canonical(name, {k: np.stack(v) for k, v in samples.items()})
    for site, draws in samples.items():  # (chains, draws, ...)
        flat = draws.reshape(draws.shape[:2] + (-1,))
        ess = np.array([float(az.ess(flat[..., i], method="bulk")) for i in range(flat.shape[-1])])
        out["sites"][site] = {"shape": list(draws.shape[2:]), "mean": flat.mean((0, 1)).tolist(),
                              "sd": flat.std((0, 1)).tolist(),
                              "mcse": (flat.std((0, 1)) / np.sqrt(ess)).tolist()}
    return out


#: Programs whose components are exchangeable (a posterior mode per labelling of them): the
#: site whose first coordinate orders the components in every draw, and each site's
#: component axis (after chain and draw).
LABELLED_BY = {"mixture_vindex": ("locs", {"weights": 0, "locs": 0})}


def canonical(name, draws):
    """``draws`` (``(chain, draw, ...)`` arrays or tensors) with each draw's components put in
    one order, so that posteriors found in different labellings compare (the identity for
    programs with identifiable components)."""
    if name not in LABELLED_BY:
        return draws
    key, axes = LABELLED_BY[name]
    order = np.argsort(np.asarray(draws[key])[..., 0], axis=-1)  # (chain, draw, K)
    out = dict(draws)
    for site, axis in axes.items():
        value = np.asarray(draws[site])
        index = order.reshape(order.shape + (1,) * (value.ndim - 3 - axis))
        out[site] = np.take_along_axis(value, np.broadcast_to(index, value.shape), axis=2 + axis)
    return out


#: Programs whose reference is another's: ``obs_mask`` leaves Pyro's NUTS a latent whose
#: entries at observed positions have no density (every tree at the maximum depth, hours
#: for this run); its (a, b, sigma) posterior is the ``poutine.mask`` program's.
SAME_POSTERIOR = {"obs_mask_regression": "poutine_mask_regression"}


def main(names):
    torch.set_default_dtype(torch.float64)
    table = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in names or [n for n, p in PROGRAMS.items() if "params" not in p[2] and n not in SAME_POSTERIOR]:
        table[name] = reference(name)
        print(f"{name}: {table[name]['seconds']:.0f} s", flush=True)
        OUT.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
