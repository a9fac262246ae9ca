"""The graph rewrites before TorchInductor (``ppgen.inference.mcmc.broadcasts``) and the
compiled kernel's reused buffers (``ppgen.inference.mcmc.inductor._reusing_buffers``):
the same numbers as the recorded graph, with the work moved where it should be."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from ppgen.inference.mcmc import broadcasts
from ppgen.inference.mcmc.broadcasts import (
    compute_broadcasts_once,
    simplify_for_inductor,
    split_small_last_dim,
    unroll_short_cumsums,
)
from ppgen.inference.mcmc.inductor import _reusing_buffers, inductor_decompositions

aten = torch.ops.aten
Y = torch.linspace(-3.0, 4.0, 500, dtype=torch.float64)


def mixture_value_and_grad(params):
    """A two-component normal mixture's log density over ``Y`` and its gradient, as
    Pyro computes it in a plate (the expanded ``MixtureSameFamily`` carries weights and
    scales broadcast to (N, 2))."""
    params = params.detach().requires_grad_(True)
    with torch.enable_grad():
        loc, log_scale, logit = params[:2], params[2:4], params[4]
        weights = dist.Categorical(probs=torch.stack([torch.sigmoid(logit), 1 - torch.sigmoid(logit)]),
                                   validate_args=False)
        mixture = dist.MixtureSameFamily(weights, dist.Normal(loc, log_scale.exp(), validate_args=False),
                                         validate_args=False)
        value = mixture.expand(Y.shape).log_prob(Y).sum()  # expanded, as under pyro.plate - 0.5 * (params ** 2).sum()
        (grad,) = torch.autograd.grad(value, params)
    return value.detach(), grad


def record(fn, *example):
    return make_fx(fn, decomposition_table=inductor_decompositions())(*example)


def heavy(graph, target):
    """How many ``target`` operations of ``graph`` produce a (500, ...) tensor."""
    return sum(1 for n in graph.graph.nodes if n.target == target and isinstance(n.meta.get("val"), torch.Tensor)
               and n.meta["val"].dim() >= 1 and Y.numel() in tuple(n.meta["val"].shape))


PARAMS = [torch.tensor([-1.0, 2.0, 0.1, -0.3, 0.4], dtype=torch.float64),
          torch.tensor([0.5, 0.7, -1.0, 0.8, -2.0], dtype=torch.float64)]


@pytest.mark.parametrize("params", PARAMS)
def test_both_rewrites_keep_the_mixtures_value_and_gradient(params):
    graph = record(mixture_value_and_grad, params)
    logs_before = heavy(graph, aten.log.default)
    simplified = simplify_for_inductor(record(mixture_value_and_grad, params), (params,))
    for point in PARAMS + [params + 0.3]:
        expected = mixture_value_and_grad(point)
        got = simplified(point)
        torch.testing.assert_close(got[0], expected[0], rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(got[1], expected[1], rtol=1e-12, atol=1e-10)
    # the per-point log of the two scales and the log-softmax of the weights are gone:
    # what is left is the log-sum-exp's one log per data point
    assert logs_before >= 3
    assert heavy(simplified, aten.log.default) <= 1
    # no (500, 2) tensor is left but the ones stacked back at the outputs' edges
    assert not any(tuple(n.meta["val"].shape)[-2:] == (Y.numel(), 2) and n.target != aten.cat.default
                   for n in simplified.graph.nodes if n.op == "call_function"
                   and isinstance(n.meta.get("val"), torch.Tensor) and n.meta["val"].dim() >= 2)


def broadcast_reductions(x, w):
    big = x.unsqueeze(-1).expand(50, 40, 3)  # (50, 40, 3), real in dims 0 and 1
    wide = w.expand(50, 40, 3)  # w (1, 1, 3): broadcast in dims 0 and 1
    a = (wide.exp() * 2).sum([0, 1])  # over two broadcast dims: 2000 copies of the same
    b = wide.log1p().amax(1, keepdim=True)  # over a broadcast dim: nothing to reduce
    c = (big * wide.sigmoid()).sum(-1)  # a real reduction stays
    d = wide.tanh().amin([0, 2])  # a broadcast dim and a real one
    e = (wide.square() + 1).sum(2).squeeze(-1).unsqueeze(0)
    return a, b, c, d, e


def test_broadcast_reductions_multiply_or_vanish():
    x = torch.randn(50, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w = torch.randn(1, 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    graph = record(broadcast_reductions, x, w)
    moved = compute_broadcasts_once(graph)
    assert moved >= 8
    graph.recompile()
    expected = broadcast_reductions(x, w)
    got = graph(x, w)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-9)  # a sum of 2000 equal terms vs 2000 * term
    # exp, log1p, tanh and square now run on w's three numbers
    for target in (aten.exp.default, aten.log1p.default, aten.tanh.default):
        shapes = [tuple(n.meta["val"].shape) for n in graph.graph.nodes
                  if n.target == target and "val" in n.meta]
        assert all(math.prod(s) <= 3 for s in shapes), (target, shapes)


def softmax_through(x, m):
    parts = x.unsqueeze(-1) * torch.tensor([1.0, -2.0, 0.5], dtype=x.dtype) + m  # (200, 3)
    normalised = torch.log_softmax(parts, -1)
    mixed = normalised @ torch.arange(3.0, dtype=x.dtype).reshape(3, 1)  # a matmul: stacked back
    return normalised.logsumexp(-1).sum(), mixed, parts.amax(-1), parts.amin(-1, keepdim=True), parts.sum(0)


def test_small_last_dimension_split_and_stacked_back():
    x = torch.randn(200, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    m = torch.randn(3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    graph = record(softmax_through, x, m)
    assert split_small_last_dim(graph) >= 3
    broadcasts._propagate(graph, (x, m))
    graph.recompile()
    for g, e in zip(graph(x, m), softmax_through(x, m)):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    # the exponentials run on (200,) columns
    assert all(tuple(n.meta["val"].shape) == (200,) for n in graph.graph.nodes if n.target == aten.exp.default)


def test_a_failing_rewrite_leaves_the_graph_as_recorded(monkeypatch):
    params = PARAMS[0]
    graph = record(mixture_value_and_grad, params)
    code = graph.code

    def broken(gm, least=64):
        gm.graph.erase_node(next(iter(gm.graph.nodes)))  # half-done, then it fails
        raise RuntimeError("boom")

    monkeypatch.setattr(broadcasts, "compute_broadcasts_once", broken)
    out = simplify_for_inductor(graph, (params,))
    assert out.code == code
    torch.testing.assert_close(out(params)[1], mixture_value_and_grad(params)[1])


@pytest.mark.parametrize("shape,dim", [((5, 3), -1), ((4, 6, 2), 1), ((7,), 0), ((3, 20), 1)])
def test_short_cumsums_become_additions(shape, dim):
    """Pyro's ordered transform (a cumsum of exponentials) and its gradient (a flipped
    cumsum): slices and running additions, the same sums in the same order, so equal to
    the last bit; a dimension longer than 16 stays a cumsum."""
    def fn(x):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            y = torch.cumsum(x.exp(), dim)
            (grad,) = torch.autograd.grad((y * torch.arange(y.numel()).reshape(y.shape).sin()).sum(), x)
        return y.detach(), grad

    x = torch.randn(shape, dtype=torch.float64)
    graph = record(fn, x)
    count = unroll_short_cumsums(graph)
    graph.recompile()
    cumsums = sum(1 for n in graph.graph.nodes if n.target == aten.cumsum.default)
    assert (count, cumsums) == ((0, 2) if shape[dim] > 16 else (2, 0))
    for got, expected in zip(graph(x), fn(x)):
        assert torch.equal(got, expected)


# ---------------------------------------------------------------- the compiled kernel's buffers
WRAPPER = '''
def call(args):
    (x,) = args
    args.clear()
    buf0 = empty_strided_cpu((3,), (1,), torch.float64)  # an intermediate
    torch.mul(x, 2.0, out=buf0)
    buf1 = empty_strided_cpu((3,), (1,), torch.float64)  # returned
    torch.add(buf0, 1.0, out=buf1)
    buf2 = reinterpret_tensor(buf0, (2,), (1,), 1)  # a view of the intermediate
    buf3 = empty_strided_cpu((4,), (1,), torch.float64)
    buf4 = reinterpret_tensor(buf3, (2,), (1,), 2)  # a view of a returned buffer
    torch.neg(buf2, out=buf4)
    torch.sum(buf2, dim=0, keepdim=True, out=reinterpret_tensor(buf3, (1,), (1,), 0))
    torch.zeros(1, out=reinterpret_tensor(buf3, (1,), (1,), 1))
    return (buf1, buf4, buf3)
'''


def test_the_compiled_call_reuses_intermediates_and_returns_fresh_outputs():
    allocated = []

    def empty_strided_cpu(size, stride, dtype):
        allocated.append(size)
        return torch.empty_strided(size, stride, dtype=dtype)

    def reinterpret_tensor(base, size, stride, offset):
        return base.as_strided(size, stride, base.storage_offset() + offset)

    names = {"torch": torch, "empty_strided_cpu": empty_strided_cpu, "reinterpret_tensor": reinterpret_tensor}
    exec(WRAPPER, names)  # noqa: S102 - a fixed test source, standing in for Inductor's module
    call = _reusing_buffers(names["call"])
    kept = []
    for k in range(4):
        x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64) * (k + 1)
        allocated.clear()
        out = call([x])
        # one allocation for each returned buffer after the first call, none for buf0
        assert len(allocated) == (3 if k == 0 else 2)
        kept.append((x, out))
    for x, (buf1, buf4, buf3) in kept:  # earlier outputs were not overwritten by later calls
        torch.testing.assert_close(buf1, 2 * x + 1)
        torch.testing.assert_close(buf4, -2 * x[1:])
        torch.testing.assert_close(buf3[0], 2 * x[1:].sum())
    pointers = {out[0].data_ptr() for _, out in kept}
    assert len(pointers) == len(kept)
    # the wrapper's module globals are untouched: another kernel of the same module allocates normally
    assert names["empty_strided_cpu"] is empty_strided_cpu


@pytest.mark.slow
def test_compiled_mixture_potential_matches_eager():
    """A Pyro mixture model through ``Potential(mode="compiled")``: compiled (with both
    rewrites), and equal to eager evaluation; about 10 s to compile cold."""
    from ppgen.inference.mcmc.potential import Potential
    from ppgen.inference.program import Program

    def model(y):
        loc = pyro.sample("loc", dist.Normal(0.0, 3.0).expand([2]).to_event(1))
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0).expand([2]).to_event(1))
        weight = pyro.sample("weight", dist.Beta(2.0, 2.0))
        weights = torch.stack([weight, 1 - weight], -1)
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.MixtureSameFamily(dist.Categorical(weights), dist.Normal(loc, scale)), obs=y)

    y = torch.cat([torch.randn(300, generator=torch.Generator().manual_seed(4)) - 2,
                   torch.randn(200, generator=torch.Generator().manual_seed(6)) + 3])
    potential = Potential(Program.build(model, {"y": y}), 2, mode="compiled")
    assert potential.mode == "compiled", potential.reason
    u = potential.initial + 0.3 * torch.randn(potential.initial.shape, generator=torch.Generator().manual_seed(5))
    value, grad = potential.value_and_grad(u)
    eager = Potential(Program.build(model, {"y": y}), 2, mode="vectorized").value_and_grad(u)
    torch.testing.assert_close(value, eager[0], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(grad, eager[1], rtol=1e-4, atol=1e-3)


def test_disagreement_names_the_output_and_the_difference():
    from ppgen.inference.mcmc.inductor import disagreement

    expected = (torch.tensor([1.0, float("inf"), float("nan")]), torch.ones(3, dtype=torch.float64))
    assert disagreement(expected, (torch.tensor([1.0 + 1e-6, float("inf"), float("nan")]),
                                    torch.ones(3, dtype=torch.float64))) == ""
    why = disagreement(expected, (expected[0], torch.tensor([1.0, 1.4, 1.0], dtype=torch.float64)))
    assert "output 1" in why and "0.4" in why
    assert "shape" in disagreement(expected, (expected[0], torch.ones(2, dtype=torch.float64)))


@pytest.mark.slow
def test_dirichlet_model_compiles_right():
    """The lean Inductor path miscompiled the gradient of the simplex's stick-breaking
    transform until the graph's in-place writes were made functional (and
    ``inductor_kernel(check=True)`` then sent it the public way); either way the potential
    is compiled, and right."""
    from ppgen.inference.mcmc.potential import Potential
    from ppgen.inference.program import Program

    def model(y):
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(3, dtype=torch.float64)))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Categorical(weights), obs=y)

    y = torch.tensor([0, 1, 2, 2, 1, 0, 0, 2, 2, 2])
    potential = Potential(Program.build(model, {"y": y}), 2, mode="compiled")
    assert potential.mode == "compiled", potential.reason
    u = torch.tensor([[0.3, -0.7], [-1.2, 0.4]], dtype=torch.float64)
    eager = Potential(Program.build(model, {"y": y}), 2, mode="vectorized").value_and_grad(u)
    value, grad = potential.value_and_grad(u)
    torch.testing.assert_close(value, eager[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grad, eager[1], rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_dirichlet_model_runs_free_chains_compiled():
    """Several chains batched: the free-running step of a Dirichlet model (miscompiled the
    lean way until in-place writes were made functional, then compiled the public way) is
    compiled the lean way and samples the exact posterior."""
    import ppgen
    from ppgen.inference import NUTS
    from ppgen.inference.mcmc import accelerate

    def model(y):
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(3, dtype=torch.float64)))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Categorical(weights), obs=y)

    counts = torch.tensor([3, 5, 12])
    y = torch.cat([torch.full((int(n),), k) for k, n in enumerate(counts)])
    built = []
    real = accelerate.compile_free_step

    def recording(*args):
        kernel = real(*args)
        built.append(kernel)
        return kernel

    accelerate.compile_free_step = recording
    try:
        fit = ppgen.fit(model, {"y": y}, NUTS(num_samples=500, warmup=500, chains=2, potential="compiled",
                                              chain_method="vectorized"), seed=0, progress=False)
    finally:
        accelerate.compile_free_step = real
    assert built and built[0] is not None and built[0].lean
    # Dirichlet(1 + counts) posterior mean, within 5 Monte Carlo standard errors (ESS >= 200)
    alpha = 1.0 + counts.double()
    mean = alpha / alpha.sum()
    sd = (mean * (1 - mean) / (alpha.sum() + 1)).sqrt()
    draws = fit.posterior["weights"].reshape(-1, 3)
    assert ((draws.mean(0) - mean).abs() < 5 * sd / 200 ** 0.5).all()


def written_after_broadcast(x, w):
    wide = w.expand(100, 3).exp()  # computed on w's three numbers, were it not written below
    wide.mul_(x.unsqueeze(-1))  # in place, into what would then be a broadcast view
    flags = w.expand(100, 3) > 0
    flags.logical_and_(x.unsqueeze(-1) < 2 * w)
    untouched = w.expand(100, 3).tanh()  # nothing writes into this one: computed on w
    return (wide + x.unsqueeze(-1)).sum(-1), flags.sum(-1), (wide * wide).log1p().amax(-1), untouched * x[:, None]


def test_rewrites_leave_tensors_written_in_place_alone():
    x = torch.randn(100, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    w = torch.tensor([[0.1, -0.4, 0.9]], dtype=torch.float64)
    graph = simplify_for_inductor(record(written_after_broadcast, x, w), (x, w))
    for g, e in zip(graph(x, w), written_after_broadcast(x, w)):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    # the rewrites ran (a write into a broadcast view would have made them give up)
    assert [tuple(n.meta["val"].shape) for n in graph.graph.nodes if n.target == aten.tanh.default] == [(1, 3)]
    assert [tuple(n.meta["val"].shape) for n in graph.graph.nodes if n.target == aten.exp.default] == [(100, 3)]
