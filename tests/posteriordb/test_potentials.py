"""ppgen's fast potential on every posteriordb program: the mode it picks, and its numbers
against Pyro's own potential (``initialize_model``'s ``potential_fn``), float64.

The recorded TorchScript graph (``"jit"``) must equal the recorded graph run eagerly
(``"vectorized"``) bit for bit (freezing changes no operation). Against Pyro, with one
chain, value and gradient bit for bit: the graph is Pyro's own one-chain potential,
enumerated HMM included. With several chains (the graph batched by vmap) the batched
reductions may round differently: 1e-13 relative, and 1e-8 for the GP and the HMM (the
GP's covariance carries a 1e-10 jitter, condition numbers near 1e10 amplify an ulp of the
batched Cholesky to ~1e-10 relative in the gradient).
"""

import pytest
import torch

from ppgen.inference.mcmc.potential import Potential
from ppgen.inference.program import Program

from . import programs

CASES = [pytest.param(name, program, id=program.__name__) for name, (program, _) in programs.PROGRAMS.items()]
CASES.append(pytest.param("hmm_example-hmm_example", programs.hmm_example_marginal, id="hmm_example_marginal"))
BATCHED_ROUNDING = {"gp_pois_regr", "hmm_example_marginal", "hmm_example"}
EXPECTED_MODE = {"hmm_example": "vectorized"}  # 100 enumerated steps unrolled: too large to compile


@pytest.mark.parametrize("name, program", CASES)
def test_fast_potential_equals_pyros(float64, posteriordb_root, name, program):
    data = programs.data(name, posteriordb_root)
    built = Program.build(program, data)
    for chains in (1, 2):
        loop = Potential(built, chains, mode="loop")
        fast = Potential(built, chains)  # "auto", as a short NUTS run gets it
        assert fast.mode == EXPECTED_MODE.get(program.__name__, "jit"), fast.reason
        eager = fast if fast.mode == "vectorized" else Potential(built, chains, mode="vectorized")
        noise = torch.randn((3,) + tuple(loop.initial.shape), generator=torch.Generator().manual_seed(5))
        for u in loop.initial + 0.5 * noise:
            expected, got = loop.value_and_grad(u), fast.value_and_grad(u)
            assert bool(torch.isfinite(expected[0]).all())
            assert all(torch.equal(a, b) for a, b in zip(got, eager.value_and_grad(u)))
            if chains == 1:
                assert torch.equal(got[0], expected[0]), program.__name__
                assert torch.equal(got[1], expected[1]), (program.__name__, (got[1] - expected[1]).abs().max())
            else:
                tol = 1e-8 if program.__name__ in BATCHED_ROUNDING else 1e-13
                for a, b in zip(got, expected):
                    assert torch.allclose(a, b, rtol=tol, atol=tol * float(b.abs().max())), program.__name__
