"""The variable-elimination engine on its own: orders, plans, backends, max-product, sampling."""

import math

import numpy as np
import pytest
import torch

from ppgen.errors import ModelError
from ppgen.models.bayesnet.elimination import Plan, categorical
from ppgen.models.bayesnet.ordering import ancestral_closure, min_fill_order


def _random_dag(num, max_parents, seed, max_card=3):
    rng = np.random.default_rng(seed)
    cards = [int(rng.integers(2, max_card + 1)) for _ in range(num)]
    parents = []
    for i in range(num):
        k = int(rng.integers(0, min(max_parents, i) + 1))
        parents.append(tuple(sorted(rng.choice(i, size=k, replace=False).tolist())) if k else ())
    tables = [torch.as_tensor(rng.dirichlet(np.ones(cards[i]), size=tuple(cards[p] for p in parents[i])))
              for i in range(num)]
    return parents, cards, tables


def _joint(parents, tables):
    letters = "abcdefghijklmnopqrstuvwxyz"
    terms = ["".join(letters[a] for a in parents[v] + (v,)) for v in range(len(parents))]
    return np.einsum(",".join(terms) + "->" + letters[:len(parents)], *[t.numpy() for t in tables])


def test_min_fill_on_a_chain_and_a_cycle():
    # a chain a-b-c-d: eliminating from an end never adds an edge
    scopes = [{0, 1}, {1, 2}, {2, 3}]
    order = min_fill_order(scopes, [{0, 1, 2, 3}], [2, 2, 2, 2])
    assert order[0] in (0, 3)
    # a 4-cycle: the first elimination must add exactly one edge, the rest none
    plan_scopes = [{0, 1}, {1, 2}, {2, 3}, {3, 0}]
    order = min_fill_order(plan_scopes, [{0, 1, 2, 3}], [2, 2, 2, 2])
    assert sorted(order) == [0, 1, 2, 3]
    # groups: every variable of the first group goes before any of the second
    order = min_fill_order(scopes, [{1, 2}, {0, 3}], [2, 2, 2, 2])
    assert set(order[:2]) == {1, 2}


def test_ancestral_closure():
    parents = [(), (0,), (1,), (), (2, 3)]
    assert ancestral_closure(parents, [2]) == {0, 1, 2}
    assert ancestral_closure(parents, [4]) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_sum_product_equals_the_joint_table(backend):
    parents, cards, tables = _random_dag(9, 3, seed=0)
    joint = _joint(parents, tables)
    rng = np.random.default_rng(1)
    for _ in range(10):
        query = (int(rng.integers(9)),)
        others = [v for v in range(9) if v not in query]
        hard = tuple(sorted(rng.choice(others, size=3, replace=False).tolist()))
        values = torch.tensor([[int(rng.integers(cards[h])) for h in hard]])
        for normalized in (False, True):
            plan = Plan(parents, cards, query=query, hard=hard, normalized=normalized)
            out = plan.run(tables, values, [], backend=backend)
            table = (out["table"][0] * out["log_scale"][0].exp()).numpy()
            index = [slice(None)] * 9
            for h, x in zip(hard, values[0].tolist()):
                index[h] = x
            sliced = joint[tuple(index)]
            keep = [v for v in range(9) if v not in hard]
            expected = sliced.sum(axis=tuple(i for i, v in enumerate(keep) if v not in query))
            if normalized:
                np.testing.assert_allclose(table / table.sum(), expected / expected.sum(), atol=1e-13)
            else:
                np.testing.assert_allclose(table, expected, atol=1e-13)


def test_soft_evidence_rows_equal_hard_evidence():
    parents, cards, tables = _random_dag(8, 2, seed=3)
    rng = np.random.default_rng(4)
    rows = 40
    codes = np.stack([rng.integers(-1, cards[v], size=rows) for v in range(8)], 1)
    soft = tuple(range(1, 8))
    indicators = []
    for v in soft:
        onehot = np.eye(cards[v])[np.maximum(codes[:, v], 0)]
        onehot[codes[:, v] < 0] = 1.0
        indicators.append(torch.as_tensor(onehot))
    batched = Plan(parents, cards, query=(0,), soft=soft).run(tables, None, indicators)
    batched = batched["table"] * batched["log_scale"].exp().unsqueeze(-1)
    for r in range(rows):
        hard = tuple(v for v in soft if codes[r, v] >= 0)
        single = Plan(parents, cards, query=(0,), hard=hard).run(
            tables, torch.tensor([[codes[r, v] for v in hard]]), [])
        single = single["table"][0] * single["log_scale"][0].exp()
        assert torch.allclose(batched[r], single, atol=1e-14, rtol=1e-10)


def test_max_product_traceback_is_the_joint_argmax():
    parents, cards, tables = _random_dag(7, 3, seed=5)
    joint = _joint(parents, tables)
    plan = Plan(parents, cards, max_vars=range(7), prune=False)
    out = plan.run(tables)
    assignment = plan.trace_back(out, {}, 1)
    best = tuple(int(assignment[v][0]) for v in range(7))
    assert joint[best] == pytest.approx(joint.max(), rel=1e-12)
    assert float(out["table"][0] * out["log_scale"][0].exp()) == pytest.approx(joint.max(), rel=1e-12)


def test_backward_sampling_is_exact():
    parents, cards, tables = _random_dag(6, 2, seed=6)
    joint = _joint(parents, tables)
    hard = (5,)
    plan = Plan(parents, cards, hard=hard)
    out = plan.run(tables, torch.tensor([[1]]), [], keep_buckets=True)
    n = 40000
    gen = torch.Generator().manual_seed(0)
    assignment = {5: torch.ones(n, dtype=torch.long)}
    plan.sample_back(out, assignment, n, lambda k: torch.rand((k, 1), generator=gen, dtype=torch.float64))
    posterior = joint[..., 1]
    for v in plan.order:
        exact = posterior.sum(axis=tuple(a for a in range(5) if a != v))
        exact = exact / exact.sum()
        counts = np.bincount(assignment[v].numpy(), minlength=cards[v])
        sd = np.sqrt(n * exact * (1 - exact)) + 1e-12
        assert np.all(np.abs(counts - n * exact) <= 5 * sd), v


def test_categorical_skips_zero_weights():
    weights = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 5.0]], dtype=torch.float64)
    for u in (0.0, 0.3, 0.999999):
        draws = categorical(weights, torch.full((3, 1), u, dtype=torch.float64))
        assert draws.tolist() == [1, 0, 2]


def test_plan_sizes_and_the_limit():
    # a grid 6 x 6 with edges right and down: treewidth 6
    side = 6
    parents = []
    for r in range(side):
        for c in range(side):
            parents.append(tuple(([(r - 1) * side + c] if r else []) + ([r * side + c - 1] if c else [])))
    cards = [2] * (side * side)
    plan = Plan(parents, cards, query=(side * side - 1,))
    assert plan.width >= side and plan.max_size == 2 ** (plan.width + 1)
    assert plan.max_size <= 2 ** (side + 3)  # the moral graph adds diagonals: width side + 1, or a little more
    plan.check(2 ** 27, [f"v{i}" for i in range(36)])
    with pytest.raises(ModelError, match=r"max_factor_size=16.*treewidth"):
        plan.check(16, [f"v{i}" for i in range(36)])
    assert plan.chunk_rows(10 * plan.max_size, 1000) == 10
    assert plan.chunk_rows(1, 1000) == 1
    assert math.prod(cards[a] for a in plan.steps[0].union) == plan.steps[0].size
