"""Lockstep chains: each leaf's bookkeeping as one graph (``ppgen.inference.mcmc.lockstep``)
against the sampler's own tensor bookkeeping, transition for transition."""

import pytest
import torch

from ppgen.inference.mcmc.lockstep import CARRIED, compile_lockstep, lockstep_leaf
from ppgen.inference.mcmc.nuts import Metric, Sampler, State, level_masks
from ppgen.inference.mcmc.potential import Potential
from ppgen.inference.program import Program

from .test_fast_nuts import _logistic, _schools, eight_schools, logistic


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


@pytest.mark.parametrize("model,data", [(eight_schools, _schools), (logistic, _logistic)])
def test_graph_bookkeeping_equals_the_samplers(float64, model, data):
    potential = Potential(Program.build(model, data()), 3, mode="vectorized")
    count = len(CARRIED)

    def eager_kernel(*args):
        return lockstep_leaf(potential._leaf_eager, args[:count], *args[count:])

    plain, graph = _transitions(potential, None), _transitions(potential, eager_kernel)
    depths = torch.stack([stats["depth"] for _, stats in plain])
    assert len(set(depths.flatten().tolist())) > 1  # trees of several depths, chains stopping apart
    for (s1, st1), (s2, st2) in zip(plain, graph):
        assert torch.allclose(s1.z, s2.z, rtol=1e-12, atol=1e-12)
        assert torch.allclose(s1.potential, s2.potential, rtol=1e-12)
        for key in ("depth", "diverging", "leapfrogs"):
            assert torch.equal(st1[key], st2[key]), key
        assert torch.allclose(st1["accept"], st2["accept"], rtol=1e-12)


def test_level_masks_follow_the_binary_blocks():
    masks = level_masks(3, 5, "cpu")
    opening = [m[0].nonzero().flatten().tolist() for m in masks]
    closing = [m[1].nonzero().flatten().tolist() for m in masks]
    # leaf 0 opens the blocks of sizes 2, 4, 8; leaf 7 closes all three
    assert opening == [[1, 2, 3], [], [1], [], [1, 2], [], [1], []]
    assert closing == [[], [1], [], [1, 2], [], [1], [], [1, 2, 3]]


@pytest.mark.slow  # TorchInductor compiles for seconds
def test_compiled_lockstep_kernel_matches_eager(float64):
    potential = Potential(Program.build(eight_schools, _schools()), 3, mode="compiled")
    kernel = compile_lockstep(potential, 7)
    assert kernel is not None and kernel.lean
    plain, graph = _transitions(potential, None, steps=10), _transitions(potential, kernel, steps=10)
    for (s1, st1), (s2, st2) in zip(plain, graph):
        assert torch.allclose(s1.z, s2.z, rtol=1e-9, atol=1e-9)
        assert torch.equal(st1["depth"], st2["depth"])
