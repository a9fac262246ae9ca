"""BayesianNetwork: queries against brute force over the joint table and against pgmpy,
batched evidence, posterior sampling, learning, validation and the treewidth limit."""

import gzip
import json
import logging
import math
import time
import warnings

import numpy as np
import pandas as pd
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, infer_discrete

import ppgen
from ppgen.errors import DataError, MethodError, ModelError
from ppgen.inference import MAP, NUTS, SVI, Exact
from ppgen.models.bayesnet import BayesianNetwork

SMALL = ["asia", "cancer", "earthquake", "sachs", "survey"]
PEERS = ["alarm", "child", "insurance"]


# ---------------------------------------------------------------- helpers

def _bif(shared_data, name):
    return shared_data / "bif" / f"{name}.bif.gz"


def _normalized(bn):
    """The same network with every CPT row divided by its sum (BIF files round rows
    to sums like 1 + 1e-7; pruning barren nodes assumes exact sums, brute force does not)."""
    spec = bn.to_dict()
    cpts = {v: t / t.sum(-1, keepdims=True) for v, t in spec["cpts"].items()}
    return BayesianNetwork(spec["states"], spec["parents"], cpts, name=bn.name)


def _joint(bn):
    """The full joint table, one axis per variable in the network's order."""
    letters = {v: chr(ord("a") + i) if i < 26 else chr(ord("A") + i - 26) for i, v in enumerate(bn.variables)}
    operands, terms = [], []
    for v in bn.variables:
        terms.append("".join(letters[a] for a in bn.parents[v] + [v]))
        operands.append(bn.cpts[v].numpy())
    out = "".join(letters[v] for v in bn.variables)
    return np.einsum(",".join(terms) + "->" + out, *operands, optimize=True)


def _slice(bn, joint, evidence):
    """The joint with evidence variables fixed: axes of the other variables remain."""
    index = tuple(bn.states[v].index(evidence[v]) if v in evidence else slice(None) for v in bn.variables)
    return joint[index], [v for v in bn.variables if v not in evidence]


def _brute_marginal(bn, joint, query, evidence):
    table, rest = _slice(bn, joint, evidence)
    keep = [rest.index(q) for q in query]
    summed = table.sum(axis=tuple(i for i in range(len(rest)) if i not in keep))
    order = sorted(range(len(query)), key=lambda i: keep[i])  # summed has axes in `rest` order
    summed = np.transpose(summed, np.argsort(order)) if len(query) > 1 else summed
    return summed / summed.sum()


def _random_evidence(bn, rng, k):
    row = bn.sample(1, generator=torch.Generator().manual_seed(int(rng.integers(2**31))))[0]
    chosen = rng.choice(len(bn.variables), size=k, replace=False)
    return {bn.variables[j]: bn.states[bn.variables[j]][int(row[j])] for j in sorted(chosen)}


def _missing(data, fraction, seed):
    gen = torch.Generator().manual_seed(seed)
    hide = torch.rand(data.shape, generator=gen) < fraction
    return torch.where(hide, torch.full_like(data, -1), data)


def _networks(shared_data):
    yield "asia (in code)", BayesianNetwork.asia()
    if shared_data is not None:
        for name in SMALL:
            yield name, _normalized(BayesianNetwork.from_bif(_bif(shared_data, name)))


# ---------------------------------------------------------------- construction

def test_asia_in_code_equals_the_bif_file(shared_data):
    ours = BayesianNetwork.asia()
    theirs = BayesianNetwork.from_bif(_bif(shared_data, "asia"))
    assert ours.states == theirs.states and ours.parents == theirs.parents
    for v in ours.variables:
        assert torch.equal(ours.cpts[v], theirs.cpts[v])


def test_structure_and_buffers():
    bn = BayesianNetwork.asia()
    assert bn.variables == ["asia", "tub", "smoke", "lung", "bronc", "either", "xray", "dysp"]
    position = {v: i for i, v in enumerate(bn.order)}
    assert all(position[p] < position[v] for v in bn.variables for p in bn.parents[v])
    assert set(bn.global_sites()) == {f"cpt_{v}" for v in bn.variables}
    assert all(t.dtype == torch.float64 for t in bn.point_params().values())
    assert bn.cpt("dysp").loc[("yes", "no"), "yes"] == pytest.approx(0.8)
    config = bn.get_config()
    rebuilt = type(bn)(**json.loads(json.dumps(config)))
    for v in bn.variables:
        assert torch.equal(rebuilt.cpts[v], bn.cpts[v])
    assert "variables=8" in repr(bn)


def test_structure_only_network_learns_from_data():
    ex, data = BayesianNetwork.example(missing=0.1)
    bn = BayesianNetwork(ex.states, ex.parents)
    with pytest.raises(ModelError, match="no point parameters"):
        bn.query("lung")
    bn.initialize(data)
    for v in bn.variables:
        assert torch.allclose(bn.cpts[v].sum(-1), torch.ones(()).double())
        assert bool((bn.cpts[v] > 0).all())


def test_bif_round_trip_is_lossless(shared_data, tmp_path):
    from ppgen.models.bayesnet.bif import read_bif

    for path in sorted((shared_data / "bif").glob("*.bif.gz")):
        net = read_bif(path)  # what from_bif reads
        bn = BayesianNetwork(net.variables, net.parents, net.cpts, name=net.name, properties=net.properties,
                             network_properties=net.network_properties)
        out = tmp_path / path.name
        bn.to_bif(out)
        assert read_bif(out) == net, path.name
        assert bn.to_bifnetwork() == net
    small = _bif(shared_data, "asia")
    bn = BayesianNetwork.from_bif(small)
    bn.to_bif(tmp_path / "asia.bif")
    assert read_bif(tmp_path / "asia.bif") == read_bif(small)
    again = BayesianNetwork.from_bif(tmp_path / "asia.bif")
    assert json.dumps(again.get_config()) == json.dumps(bn.get_config())


# ---------------------------------------------------------------- validation

def _tiny(**changes):
    spec = {"states": {"A": ["a0", "a1"], "B": ["b0", "b1", "b2"]},
            "parents": {"B": ["A"]},
            "cpts": {"A": [0.3, 0.7], "B": [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]]}}
    spec.update(changes)
    return spec


def test_validation_errors_name_the_culprit():
    with pytest.raises(ModelError, match=r"cycle A -> B -> C -> A|cycle B -> C -> A -> B|cycle C -> A -> B -> C"):
        BayesianNetwork({v: ["0", "1"] for v in "ABC"}, {"B": ["A"], "C": ["B"], "A": ["C"]})
    with pytest.raises(ModelError, match="cycle A -> A"):
        BayesianNetwork({"A": ["0", "1"]}, {"A": ["A"]})
    with pytest.raises(ModelError, match=r"'B' has the unknown parent 'Z'"):
        BayesianNetwork(**_tiny(parents={"B": ["Z"]}))
    with pytest.raises(ModelError, match=r"'B' has the duplicate state 'b1'"):
        BayesianNetwork(**_tiny(states={"A": ["a0", "a1"], "B": ["b0", "b1", "b1"]}))
    bad_row = [[0.2, 0.3, 0.5], [0.1, 0.1, 0.7]]
    with pytest.raises(ModelError, match=r"CPT of 'B': the row \(A=a1\) sums to 0.9"):
        BayesianNetwork(**_tiny(cpts={"A": [0.3, 0.7], "B": bad_row}))
    negative = [[0.2, 0.3, 0.5], [-0.1, 0.3, 0.8]]
    with pytest.raises(ModelError, match=r"CPT of 'B' has a negative entry in the row \(A=a1\)"):
        BayesianNetwork(**_tiny(cpts={"A": [0.3, 0.7], "B": negative}))
    with pytest.raises(ModelError, match=r"CPT of 'A' has a non-finite entry"):
        BayesianNetwork(**_tiny(cpts={"A": [float("nan"), 0.7], "B": bad_row}))
    with pytest.raises(ModelError, match=r"CPT of 'B' has shape \(3, 2\), expected \(2, 3\)"):
        BayesianNetwork(**_tiny(cpts={"A": [0.3, 0.7], "B": np.full((3, 2), 0.5)}))
    with pytest.raises(ModelError, match=r"no CPT for the variables \['B'\]"):
        BayesianNetwork(**_tiny(cpts={"A": [0.3, 0.7]}))
    with pytest.raises(ModelError, match="parents given for the unknown variable 'Q'"):
        BayesianNetwork(**_tiny(parents={"Q": ["A"]}))
    with pytest.raises(ModelError, match="clash"):
        BayesianNetwork({"X": ["0", "1"], "cpt_X": ["0", "1"]})
    with pytest.raises(ModelError, match="prior_concentration"):
        BayesianNetwork(**_tiny(), prior_concentration=0.0)
    # rows within atol pass
    BayesianNetwork(**_tiny(cpts={"A": [0.3, 0.7 + 1e-8], "B": [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]]}))


def test_unknown_names_in_queries_and_data():
    bn = BayesianNetwork.asia()
    with pytest.raises(ModelError, match="unknown variable 'lungs'"):
        bn.query("lungs")
    with pytest.raises(ModelError, match="unknown variable 'xrays'"):
        bn.query("lung", {"xrays": "yes"})
    with pytest.raises(DataError, match=r"unknown state 'maybe' of 'xray'"):
        bn.query("lung", {"xray": "maybe"})
    with pytest.raises(DataError, match=r"unknown state 'maybe' of 'xray'"):
        bn.map_query({"xray": "maybe"})
    with pytest.raises(DataError, match=r"unknown states? 'perhaps' of 'smoke'"):
        bn.log_prob(pd.DataFrame({"smoke": ["yes", "perhaps"]}))
    with pytest.raises(DataError, match="unknown variable 'smoker'"):
        bn.check_data(pd.DataFrame({"smoker": ["yes"]}))
    with pytest.raises(DataError, match=r"state index 2 of 'asia'"):
        bn.check_data(torch.tensor([[2, 0, 0, 0, 0, 0, 0, 0]]))
    with pytest.raises(DataError, match=r"shape \(N, 8\)"):
        bn.check_data(np.zeros((3, 5), dtype=int))
    with pytest.raises(ModelError, match="both queried and given"):
        bn.query("lung", {"lung": "yes"})
    with pytest.raises(ModelError, match="probability zero"):
        bn.query("asia", {"either": "no", "lung": "yes"})


@pytest.mark.parametrize("evidence", [{"tub": "yes", "either": "no"}, {"either": "no", "lung": "yes"},
                                      {"tub": "yes", "lung": "no", "either": "no", "xray": "yes"}])
def test_impossible_evidence_is_refused_by_every_query(evidence):
    """``either`` is the OR of ``tub`` and ``lung``: each evidence has probability zero, and
    MAP (joint and marginal) and posterior sampling refuse it as ``query`` does; in the
    DataFrame forms that row's MAP is missing and sampling refuses the batch."""
    bn = BayesianNetwork.asia()
    with pytest.raises(ModelError, match="probability zero"):
        bn.query("bronc", evidence)
    with pytest.raises(ModelError, match="probability zero"):
        bn.map_query(evidence)
    with pytest.raises(ModelError, match="probability zero"):
        bn.map_query(evidence, variables=["bronc"])
    with pytest.raises(ModelError, match="probability zero"):
        bn.sample(5, evidence=evidence)
    rows = pd.DataFrame([evidence, {"tub": "no"}])
    completed = bn.map_query(rows)
    assert completed.iloc[0].isna().all() and completed.iloc[1].notna().all()
    with pytest.raises(ModelError, match="probability zero"):
        bn.sample(None, evidence=rows)
    assert bn.log_prob(rows)[0] == -math.inf


def test_check_data_forms():
    bn = BayesianNetwork.asia()
    frame = pd.DataFrame({"asia": ["yes", None, "no"], "xray": ["no", "yes", np.nan]})
    codes = bn.check_data(frame)
    assert codes.dtype == torch.long and codes.shape == (3, 8)
    assert codes[:, 0].tolist() == [0, -1, 1] and codes[:, 6].tolist() == [1, 0, -1]
    assert bool((codes[:, [1, 2, 3, 4, 5, 7]] == -1).all())
    assert torch.equal(bn.check_data({"asia": ["yes", None, "no"], "xray": ["no", "yes", None]}), codes)
    array = codes.numpy().astype(float)
    array[array < 0] = np.nan
    assert torch.equal(bn.check_data(array), codes)
    assert torch.equal(bn.check_data(codes.numpy()), codes)
    frame_back = bn.to_frame(codes)
    assert frame_back.loc[0, "asia"] == "yes" and pd.isna(frame_back.loc[1, "asia"])
    assert list(frame_back["asia"].cat.categories) == ["yes", "no"]
    assert torch.equal(bn.check_data(frame_back), codes)


# ---------------------------------------------------------------- exact queries

@pytest.fixture
def small_networks(request):
    try:
        shared = request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        shared = None
    return list(_networks(shared))


def test_queries_equal_brute_force(small_networks):
    rng = np.random.default_rng(0)
    for label, bn in small_networks:
        joint = _joint(bn)
        assert joint.sum() == pytest.approx(1.0, abs=1e-12), label
        for trial in range(8):
            evidence = _random_evidence(bn, rng, k=trial % 4)
            free = [v for v in bn.variables if v not in evidence]
            answer = bn.query(free, evidence)
            for v in free:
                expected = _brute_marginal(bn, joint, [v], evidence)
                np.testing.assert_allclose(answer[v].to_numpy(), expected, rtol=0, atol=1e-12,
                                           err_msg=f"{label} {v} | {evidence}")
                assert list(answer[v].index) == bn.states[v]
            pair = list(rng.choice(free, size=min(2, len(free)), replace=False))
            table = bn.query(pair, evidence, joint=True)
            expected = _brute_marginal(bn, joint, pair, evidence)
            np.testing.assert_allclose(table.to_numpy().reshape(expected.shape), expected, atol=1e-12)
            assert list(table.index.names) == pair or len(pair) == 1
            # joint MAP: the argmax of the sliced joint (compared by probability: ties are allowed)
            sliced, rest = _slice(bn, joint, evidence)
            assignment = bn.map_query(evidence)
            assert sorted(assignment) == sorted(rest)
            value = sliced[tuple(bn.states[v].index(assignment[v]) for v in rest)]
            assert value == pytest.approx(sliced.max(), rel=1e-12, abs=0), label
            # marginal MAP of the pair: the argmax of their marginal
            marginal_map = bn.map_query(evidence, variables=pair)
            picked = expected[tuple(bn.states[v].index(marginal_map[v]) for v in pair)]
            assert picked == pytest.approx(expected.max(), rel=1e-12, abs=0)


def test_log_prob_equals_brute_force():
    bn, data = BayesianNetwork.example(missing=0.1)
    joint = _joint(bn)
    logp = bn.log_prob(data)
    for r in range(40):
        evidence = {v: bn.states[v][c] for v, c in zip(bn.variables, data[r].tolist()) if c >= 0}
        table, _ = _slice(bn, joint, evidence)
        assert float(logp[r]) == pytest.approx(math.log(table.sum()), abs=1e-12)
    empty = bn.log_prob(torch.full((2, 8), -1))
    assert torch.allclose(empty, torch.zeros(2, dtype=torch.float64), atol=1e-15)
    impossible = bn.log_prob(pd.DataFrame({"either": ["no"], "tub": ["yes"]}))
    assert float(impossible[0]) == -math.inf


def test_pyro_enumeration_agrees_with_elimination(float64):
    """Pyro's TraceEnum_ELBO / infer_discrete on the model program give the same
    log evidence and MAP completions as the elimination engine."""
    bn, data = BayesianNetwork.example(missing=0.1)
    data = data[:60]
    params = bn.point_params()
    model = poutine.condition(bn.model, data=params)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trace = poutine.trace(model).get_trace(data)
        prior = sum(float(trace.nodes[k]["fn"].log_prob(trace.nodes[k]["value"]).sum()) for k in params)
        evidence = -TraceEnum_ELBO(max_plate_nesting=1).loss(model, lambda *a, **k: None, data) - prior
        assert evidence == pytest.approx(float(bn.log_prob(data).sum()), abs=1e-9)
        trace = poutine.trace(infer_discrete(model, first_available_dim=-2, temperature=0)).get_trace(data)
    completed = trace.nodes["_RETURN"]["value"]
    ours = bn.check_data(bn.map_query(bn.to_frame(data)))
    assert torch.allclose(bn.log_prob(completed), bn.log_prob(ours), atol=1e-12)
    assert bool(((data < 0) | (ours == data)).all())


@pytest.mark.peer
@pytest.mark.parametrize("name", PEERS)
def test_queries_equal_pgmpy(shared_data, name):
    pytest.importorskip("pgmpy")
    from pgmpy.inference import VariableElimination
    from pgmpy.readwrite import BIFReader

    logging.getLogger("pgmpy").setLevel(logging.ERROR)
    path = _bif(shared_data, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = VariableElimination(BIFReader(string=gzip.open(path).read().decode()).get_model())
    bn = BayesianNetwork.from_bif(path)
    rng = np.random.default_rng(1)
    for trial in range(6):
        evidence = _random_evidence(bn, rng, k=[0, 1, 3, 6, 2, 8][trial])
        free = [v for v in bn.variables if v not in evidence]
        query = list(rng.choice(free, size=4, replace=False))
        ours = bn.query(query, evidence)
        theirs = peer.query(query, evidence=evidence, joint=False, show_progress=False)
        for v in query:
            factor = theirs[v]
            expected = pd.Series(factor.values, index=factor.state_names[v])[bn.states[v]].to_numpy()
            np.testing.assert_allclose(ours[v].to_numpy(), expected, rtol=0, atol=1e-9,
                                       err_msg=f"{name}: {v} | {evidence}")
        pair = query[:2]
        ours_joint = bn.query(pair, evidence, joint=True)
        factor = peer.query(pair, evidence=evidence, joint=True, show_progress=False)
        for states, p in ours_joint.items():
            assert factor.get_value(**dict(zip(pair, states))) == pytest.approx(p, abs=1e-9)


# ---------------------------------------------------------------- batches of evidence rows

def test_batched_rows_equal_single_queries(shared_data):
    bn = _normalized(BayesianNetwork.from_bif(_bif(shared_data, "alarm")))
    data = _missing(bn.sample(500, generator=torch.Generator().manual_seed(3)), 0.4, seed=4)
    query = ["HYPOVOLEMIA", "LVFAILURE"]
    for v in query:
        data[:, bn.variables.index(v)] = torch.where(torch.arange(500) % 5 == 0, data[:, bn.variables.index(v)], -1)
    frame = bn.to_frame(data)
    frame.index = [f"row{i}" for i in range(500)]
    batched = bn.query(query, frame)
    joint = bn.query(query, frame, joint=True)
    logp = bn.log_prob(frame)
    completed = bn.map_query(frame)
    marginal_map = bn.map_query(frame, variables=query)
    assert list(batched["HYPOVOLEMIA"].index[:2]) == ["row0", "row1"]
    for r in range(0, 500, 19):
        evidence = {k: v for k, v in frame.iloc[r].items() if pd.notna(v)}
        observed = [v for v in query if v in evidence]
        if observed:  # a queried variable observed in the row: a point mass
            for v in observed:
                assert batched[v].iloc[r][evidence[v]] == 1.0
            continue
        single = bn.query(query, evidence)
        for v in query:
            np.testing.assert_allclose(batched[v].iloc[r].to_numpy(), single[v].to_numpy(), atol=1e-12)
        single_joint = bn.query(query, evidence, joint=True)
        np.testing.assert_allclose(joint.iloc[r].to_numpy(), single_joint.to_numpy(), atol=1e-12)
        assert float(logp[r]) == pytest.approx(float(bn.log_prob(pd.DataFrame([evidence]))[0]), abs=1e-10)
        single_map = bn.map_query(evidence)
        row = {**evidence, **single_map}
        assert float(bn.log_prob(pd.DataFrame([dict(completed.iloc[r])]))[0]) == pytest.approx(
            float(bn.log_prob(pd.DataFrame([row]))[0]), abs=1e-10)
        assert dict(marginal_map.iloc[r]) == bn.map_query(evidence, variables=query) or \
            max(single_joint) - single_joint[tuple(marginal_map.iloc[r])] < 1e-12


def test_chunked_rows_give_the_same_answers(shared_data):
    bn = BayesianNetwork.from_bif(_bif(shared_data, "child"))
    data = _missing(bn.sample(300, generator=torch.Generator().manual_seed(5)), 0.5, seed=6)
    whole = bn.log_prob(data)
    marginal = bn.query_tensor(["Disease"], data)
    bn.max_factor_size = 5000  # forces chunks of a few rows
    assert torch.allclose(bn.log_prob(data), whole, atol=1e-12, rtol=0)
    assert torch.allclose(bn.query_tensor(["Disease"], data), marginal, atol=1e-12, rtol=0)


def test_rows_grouped_by_missing_pattern_equal_one_shared_plan(shared_data, monkeypatch):
    import ppgen.models.bayesnet.network as module

    bn = _normalized(BayesianNetwork.from_bif(_bif(shared_data, "child")))
    full = bn.sample(300, generator=torch.Generator().manual_seed(9))
    hide = torch.zeros_like(full, dtype=torch.bool)
    pattern = torch.randint(4, (300,), generator=torch.Generator().manual_seed(10))
    for k, columns in enumerate([[0, 3], [5], [1, 2, 7, 11], []]):
        hide[(pattern == k).nonzero()[:, None], torch.tensor(columns, dtype=torch.long)] = bool(columns)
    data = torch.where(hide, torch.full_like(full, -1), full)
    frame = bn.to_frame(data)
    shared = {"logp": bn.log_prob(data), "q": bn.query_tensor(["Disease", "Age"], data),
              "map": bn.map_query(frame), "mmap": bn.map_query(frame, variables=["Disease"])}
    monkeypatch.setattr(module, "_GROUP_ABOVE", 0)
    monkeypatch.setattr(module, "_PATTERN_COST", 1)
    assert torch.allclose(bn.log_prob(data), shared["logp"], atol=1e-10, rtol=0)
    assert torch.allclose(bn.query_tensor(["Disease", "Age"], data), shared["q"], atol=1e-12, rtol=0)
    completed = bn.map_query(frame)
    assert torch.allclose(bn.log_prob(completed), bn.log_prob(shared["map"]), atol=1e-10, rtol=0)
    assert (bn.map_query(frame, variables=["Disease"]) == shared["mmap"]).all().all()
    imputed = bn.sample(None, evidence=data, generator=torch.Generator().manual_seed(0))
    assert bool(((data < 0) | (imputed == data)).all()) and bool((imputed >= 0).all())


def test_networks_with_many_states_answer_rows_by_pattern(shared_data):
    bn = BayesianNetwork.from_bif(_bif(shared_data, "barley"))
    data = _missing(bn.sample(30, generator=torch.Generator().manual_seed(11)), 0.3, seed=12)
    start = time.perf_counter()
    batched = bn.log_prob(data)
    assert time.perf_counter() - start < 10
    frame = bn.to_frame(data)
    for r in range(0, 30, 6):
        evidence = {k: v for k, v in frame.iloc[r].items() if pd.notna(v)}
        single = bn.log_prob(pd.DataFrame([evidence]))
        assert float(batched[r]) == pytest.approx(float(single[0]), abs=1e-9)


# ---------------------------------------------------------------- sampling

def _within_sds(counts, n, p, k=5.0):
    sd = np.sqrt(n * p * (1 - p)) + 1e-12
    return np.all(np.abs(counts - n * p) <= k * sd + 1e-9)


def test_forward_sampling_frequencies():
    bn = BayesianNetwork.asia()
    n = 20000
    draws = bn.sample(n, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (n, 8) and draws.dtype == torch.long
    exact = bn.query(bn.variables)
    for j, v in enumerate(bn.variables):
        counts = np.bincount(draws[:, j].numpy(), minlength=2)
        assert _within_sds(counts, n, exact[v].to_numpy()), v


def test_posterior_sampling_matches_exact_marginals():
    bn = BayesianNetwork.asia()
    evidence = {"xray": "yes", "dysp": "yes", "asia": "no"}
    n = 20000
    draws = bn.sample(n, evidence=evidence, generator=torch.Generator().manual_seed(1))
    frame = bn.to_frame(draws)
    assert (frame["xray"] == "yes").all() and (frame["asia"] == "no").all()
    free = [v for v in bn.variables if v not in evidence]
    exact = bn.query(free, evidence)
    for v in free:
        counts = frame[v].value_counts().reindex(bn.states[v], fill_value=0).to_numpy()
        assert _within_sds(counts, n, exact[v].to_numpy()), v
    pair = bn.query(["lung", "tub"], evidence, joint=True)
    counts = frame.groupby(["lung", "tub"]).size().reindex(pair.index, fill_value=0).to_numpy()
    assert _within_sds(counts, n, pair.to_numpy())
    # one draw per evidence row: rows with the same evidence give the same frequencies
    rows = pd.DataFrame([evidence] * 8000)
    imputed = bn.to_frame(bn.sample(None, evidence=rows, generator=torch.Generator().manual_seed(2)))
    counts = imputed["lung"].value_counts().reindex(["yes", "no"], fill_value=0).to_numpy()
    assert _within_sds(counts, 8000, exact["lung"].to_numpy())


def test_posterior_sampling_on_a_bif_network(shared_data):
    bn = BayesianNetwork.from_bif(_bif(shared_data, "child"))
    evidence = {"LowerBodyO2": "<5", "CO2Report": ">=7.5", "XrayReport": "Oligaemic"}
    n = 20000
    frame = bn.to_frame(bn.sample(n, evidence=evidence, generator=torch.Generator().manual_seed(3)))
    exact = bn.query(["Disease", "Age", "Grunting"], evidence)
    for v, table in exact.items():
        counts = frame[v].value_counts().reindex(bn.states[v], fill_value=0).to_numpy()
        assert _within_sds(counts, n, table.to_numpy()), v


# ---------------------------------------------------------------- learning

def _sequential_log_evidence(bn, data, alpha):
    """log p(D) by the chain rule over rows: each row's probability under the
    posterior predictive given the rows before it (independent of the closed form)."""
    counts = {v: np.zeros(bn.cpt_shape(v)) for v in bn.variables}
    total = 0.0
    for row in data.tolist():
        for j, v in enumerate(bn.variables):
            config = tuple(row[bn.variables.index(p)] for p in bn.parents[v])
            n = counts[v][config]
            total += math.log((n[row[j]] + alpha) / (n.sum() + alpha * len(n)))
            counts[v][config + (row[j],)] += 1
    return total, counts


def test_exact_gives_the_dirichlet_posterior():
    truth = BayesianNetwork.asia()
    data = truth.sample(150, generator=torch.Generator().manual_seed(7))
    bn = BayesianNetwork(truth.states, truth.parents, prior_concentration=0.5)
    fit = ppgen.fit(bn, data, Exact(num_samples=50), progress=False)
    log_evidence, counts = _sequential_log_evidence(bn, data, 0.5)
    assert fit.log_evidence == pytest.approx(log_evidence, abs=1e-9)
    for v in bn.variables:
        posterior = fit.marginals[f"cpt_{v}"]
        np.testing.assert_allclose(posterior.concentration.numpy(), counts[v] + 0.5, atol=1e-12)
        assert fit.posterior[f"cpt_{v}"].shape == (1, 50) + bn.cpt_shape(v)
    with pytest.raises(MethodError, match="missing values"):
        ppgen.fit(bn, _missing(data, 0.1, seed=0), Exact(), progress=False)


def _two_node():
    states = {"A": ["a0", "a1", "a2"], "B": ["b0", "b1"]}
    cpts = {"A": [0.2, 0.5, 0.3], "B": [[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]]}
    return BayesianNetwork(states, {"B": ["A"]}, cpts)


def test_nuts_agrees_with_the_exact_posterior():
    truth = _two_node()
    data = truth.sample(60, generator=torch.Generator().manual_seed(8))
    exact = ppgen.fit(BayesianNetwork(truth.states, truth.parents), data, Exact(), progress=False)
    bn = BayesianNetwork(truth.states, truth.parents)
    fit = ppgen.fit(bn, data, NUTS(num_samples=200, warmup=200, chains=1), seed=0, progress=False)
    import arviz as az

    idata = fit.to_arviz()
    assert {"cpt_A", "cpt_B"} <= set(idata.posterior.data_vars)
    ess = az.ess(idata, method="mean")
    for site in ("cpt_A", "cpt_B"):
        draws = fit.posterior[site][0]
        mcse = draws.std(0) / torch.as_tensor(ess[site].values).sqrt()
        z = (draws.mean(0) - exact.marginals[site].mean).abs() / mcse
        assert float(z.max()) < 4, site


def test_em_map_with_missing_values_improves_the_likelihood():
    truth, data = BayesianNetwork.example(missing=0.1)
    bn = BayesianNetwork(truth.states, truth.parents)
    bn.initialize(data)
    start = float(bn.log_prob(data).sum())
    fit = ppgen.fit(bn, data, MAP(), progress=False)
    losses = torch.tensor(fit.losses)
    assert bool((losses[1:] <= losses[:-1] + 1e-9).all())  # EM never goes down hill
    end = float(bn.log_prob(data).sum())
    assert end > start
    # at the EM fixed point one more E and M step changes (almost) nothing
    counts = bn.expected_counts(data)
    for v in bn.variables:
        step = counts[v] / counts[v].sum(-1, keepdim=True)  # alpha = 1: the M-step normalises
        assert torch.allclose(step, bn.cpts[v], atol=1e-3), v
    assert "cpt_lung" in fit.to_arviz().posterior


def test_gradient_map_and_svi_with_missing_values_run_and_improve():
    truth, data = BayesianNetwork.example(missing=0.1)
    data = data[:100]
    for method in (MAP(num_steps=100, solver="gradient", lr=0.05),
                   SVI(num_steps=100, lr=0.05, num_posterior_samples=10)):
        bn = BayesianNetwork(truth.states, truth.parents)
        bn.initialize(data)
        uniform = BayesianNetwork(truth.states, truth.parents,
                                  {v: np.full(truth.cpt_shape(v), 1 / 2) for v in truth.variables})
        fit = ppgen.fit(bn, data, method, progress=False)
        assert np.mean(fit.losses[-10:]) < np.mean(fit.losses[:10])
        assert float(bn.log_prob(data).sum()) > float(uniform.log_prob(data).sum())
        idata = fit.to_arviz()
        assert {f"cpt_{v}" for v in bn.variables} <= set(idata.posterior.data_vars)
        assert idata.log_likelihood["obs"].shape[-1] == data.shape[0]


def test_log_likelihood_over_draws():
    bn, data = BayesianNetwork.example(missing=0.1)
    draws = {f"cpt_{v}": torch.distributions.Dirichlet(torch.ones(bn.cpt_shape(v), dtype=torch.float64))
             .sample((3,)) for v in bn.variables}
    values = bn.log_likelihood(data, draws)
    assert values.shape == (3, data.shape[0])
    for s in range(3):
        other = BayesianNetwork(bn.states, bn.parents, {v: draws[f"cpt_{v}"][s] for v in bn.variables})
        assert torch.allclose(values[s], other.log_prob(data), atol=1e-12)


def test_save_and_load_round_trip(tmp_path, monkeypatch):
    from ppgen import registry

    monkeypatch.setitem(registry._FAMILIES, "BayesianNetwork", BayesianNetwork)
    bn, data = BayesianNetwork.example(missing=0.1)
    fit = ppgen.fit(bn, data, MAP(), progress=False)
    path = fit.save(tmp_path / "bn.pt")
    loaded = ppgen.load(path)
    assert type(loaded.model) is BayesianNetwork
    assert torch.allclose(loaded.model.log_prob(data), bn.log_prob(data))


# ---------------------------------------------------------------- scale

def _random_network(num, max_parents, seed, cards=(2, 3)):
    rng = np.random.default_rng(seed)
    names = [f"X{i}" for i in range(num)]
    states = {v: [f"s{k}" for k in range(int(rng.choice(cards)))] for v in names}
    parents, cpts = {}, {}
    for i, v in enumerate(names):
        window = names[max(0, i - 12):i]
        k = int(rng.integers(0, min(max_parents, len(window)) + 1))
        parents[v] = list(rng.choice(window, size=k, replace=False)) if k else []
        shape = tuple(len(states[p]) for p in parents[v]) + (len(states[v]),)
        cpts[v] = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    return BayesianNetwork(states, parents, cpts)


def test_a_large_sparse_network_is_fast_and_bounded():
    bn = _random_network(300, 2, seed=0)
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    evidence = _random_evidence(bn, rng, k=30)
    free = [v for v in bn.variables if v not in evidence]
    answer = bn.query(free[-3:], evidence)
    plan_sizes = [p.max_size for p in bn._plans.values()]
    for table in answer.values():
        assert table.sum() == pytest.approx(1.0, abs=1e-12)
    data = _missing(bn.sample(200, generator=torch.Generator().manual_seed(0)), 0.3, seed=1)
    logp = bn.log_prob(data)
    assert bool(torch.isfinite(logp).all())
    assert time.perf_counter() - start < 30
    assert max(plan_sizes) < 2 ** 20
    # the elimination agrees with sampling-free consistency: sum over a variable's states
    v = free[-1]
    total = sum(math.exp(float(bn.log_prob(pd.DataFrame([{**evidence, v: s}]))[0])) for s in bn.states[v])
    assert total == pytest.approx(math.exp(float(bn.log_prob(pd.DataFrame([evidence]))[0])), rel=1e-9)


def test_treewidth_beyond_the_limit_is_a_clear_error():
    side = 32  # a grid with edges right and down: treewidth about 32, tables of 2**33 entries
    names = [f"g{r}_{c}" for r in range(side) for c in range(side)]
    parents = {}
    for r in range(side):
        for c in range(side):
            parents[f"g{r}_{c}"] = ([f"g{r - 1}_{c}"] if r else []) + ([f"g{r}_{c - 1}"] if c else [])
    cpts = {v: np.full(tuple([2] * (len(parents[v]) + 1)), 0.5) for v in names}
    bn = BayesianNetwork({v: ["0", "1"] for v in names}, parents, cpts)
    with pytest.raises(ModelError, match="treewidth") as info:
        bn.query(f"g{side - 1}_{side - 1}", {"g0_0": "1"})
    assert "max_factor_size" in str(info.value)
    with pytest.raises(ModelError, match="treewidth"):
        bn.log_prob(pd.DataFrame({f"g{side - 1}_{side - 1}": ["1"], "g5_5": [None]}))
    # a corner query needs only its ancestors: small
    assert bn.query("g1_1", {"g0_0": "1"})["g1_1"].sum() == pytest.approx(1.0)


@pytest.mark.cuda
def test_queries_sampling_and_learning_on_cuda():
    bn, data = BayesianNetwork.example(missing=0.1)
    cpu = {"query": bn.query_tensor(["lung", "tub"], {"xray": "yes"}), "log_prob": bn.log_prob(data),
           "batched": bn.query_tensor(["lung"], data)}
    bn.to("cuda")
    assert all(t.device.type == "cuda" for t in bn.point_params().values())
    assert torch.allclose(bn.query_tensor(["lung", "tub"], {"xray": "yes"}).cpu(), cpu["query"], atol=1e-12)
    assert torch.allclose(bn.log_prob(data).cpu(), cpu["log_prob"], atol=1e-10)
    assert torch.allclose(bn.query_tensor(["lung"], data).cpu(), cpu["batched"], atol=1e-12)
    draws = bn.sample(100, evidence={"xray": "yes"})
    assert draws.device.type == "cuda" and bool((draws[:, bn.variables.index("xray")] == 0).all())
    assert bn.map_query({"xray": "yes"})["either"] == "yes"
    fit = ppgen.fit(bn, bn.sample(50).cpu(), Exact(num_samples=5), device="cuda", progress=False)
    assert math.isfinite(fit.log_evidence)


def test_numbers_match_state_names_before_positions():
    """States named by numbers: a number is the state of that name, never a position."""
    import io

    bn = BayesianNetwork(states={"A": ["1", "0"], "B": ["yes", "no"]}, parents={"A": [], "B": ["A"]},
                         cpts={"A": torch.tensor([0.3, 0.7]), "B": torch.tensor([[0.9, 0.1], [0.2, 0.8]])})
    assert float(bn.query("B", {"A": 1})["B"]["yes"]) == pytest.approx(0.9)  # state "1", the first
    assert float(bn.query("B", {"A": 0})["B"]["yes"]) == pytest.approx(0.2)
    assert float(bn.query("B", {"A": 0.0})["B"]["yes"]) == pytest.approx(0.2)
    assert bn.map_query({"A": 1}) == {"B": "yes"}
    table = pd.read_csv(io.StringIO("A,B\n1,yes\n0,no\n1,no\n0,no\n"))  # integer column A
    assert bn.check_data(table)[:, 0].tolist() == [0, 1, 0, 1]
    with pytest.raises(DataError, match="unknown state 2 of 'A'.*named by numbers"):
        bn.query("B", {"A": 2})
    with pytest.raises(DataError, match="value 2 that name no state"):
        bn.check_data(pd.DataFrame({"A": [1, 2]}))
    # learning from the CSV counts each row under its named state
    learned = BayesianNetwork(states=bn.states, parents=bn.parents, prior_concentration=1e-9)
    ppgen.fit(learned, table, MAP(), seed=0, progress=False)
    assert learned.cpts["A"].tolist() == pytest.approx([0.5, 0.5], abs=1e-6)
    assert learned.cpts["B"][0].tolist() == pytest.approx([0.5, 0.5], abs=1e-6)  # A = "1": yes, no
    assert learned.cpts["B"][1].tolist() == pytest.approx([0.0, 1.0], abs=1e-6)  # A = "0": no, no
    # variables without numeric names keep reading whole numbers as positions
    assert bn.check_data(pd.DataFrame({"B": [1, 0]}))[:, 1].tolist() == [1, 0]


@pytest.mark.parametrize("states, words", [({"a\x00b": ["x", "y"]}, "printable"), ({"a": ["x", "y\x00"]}, "printable"),
                                           ({"a": ["x", ""]}, "non-empty")])
def test_control_characters_in_names_are_refused(states, words):
    with pytest.raises(ModelError, match=words):
        BayesianNetwork(states=states, parents={v: [] for v in states})
