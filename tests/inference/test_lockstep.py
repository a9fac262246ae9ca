"""Lockstep chains: the binary blocks' masks, and each leaf's bookkeeping compiled as one
graph (``ppgen.inference.mcmc.lockstep``) against the sampler's tensor bookkeeping; both
against the reference kernel in ``test_reference_kernel``."""

import pytest
import torch

from ppgen.inference.mcmc.integrator import State
from ppgen.inference.mcmc.lockstep import compile_lockstep
from ppgen.inference.mcmc.metric import Metric
from ppgen.inference.mcmc.nuts import Sampler
from ppgen.inference.mcmc.potential import Potential
from ppgen.inference.mcmc.termination import level_masks
from ppgen.inference.program import Program

from .test_fast_nuts import eight_schools, schools_data


def _transitions(potential, kernel, steps=25, chains=3):
    generator = torch.Generator().manual_seed(11)
    sampler = Sampler(potential.value_and_grad, 6, generator, lockstep_kernel=kernel)
    z = potential.initial
    value, grad = potential.value_and_grad(z)
    state = State(z, value, grad)
    metric = Metric(torch.rand(z.shape, generator=torch.Generator().manual_seed(2), dtype=z.dtype) + 0.5)
    step = torch.linspace(0.2, 0.9, chains, dtype=z.dtype).unsqueeze(-1)  # chains stop at different leaves
    out = []
    for _ in range(steps):
        state, stats = sampler.transition(state, step, metric)
        out.append((state, stats))
    return out


def test_level_masks_follow_the_binary_blocks():
    masks = level_masks(3, 5, "cpu")
    opening = [m[0].nonzero().flatten().tolist() for m in masks]
    closing = [m[1].nonzero().flatten().tolist() for m in masks]
    # leaf 0 opens the blocks of sizes 2, 4, 8; leaf 7 closes all three
    assert opening == [[1, 2, 3], [], [1], [], [1, 2], [], [1], []]
    assert closing == [[], [1], [], [1, 2], [], [1], [], [1, 2, 3]]


@pytest.mark.slow  # TorchInductor compiles for seconds
def test_compiled_lockstep_kernel_matches_eager(float64):
    potential = Potential(Program.build(eight_schools, schools_data()), 3, mode="compiled")
    kernel = compile_lockstep(potential, 7)
    assert kernel is not None and kernel.lean
    plain, graph = _transitions(potential, None, steps=10), _transitions(potential, kernel, steps=10)
    for (s1, st1), (s2, st2) in zip(plain, graph):
        assert torch.allclose(s1.z, s2.z, rtol=1e-9, atol=1e-9)
        assert torch.equal(st1["depth"], st2["depth"])
