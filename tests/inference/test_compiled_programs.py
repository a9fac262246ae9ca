"""Programs whose compiled potential once fell off the fast path: a Dirichlet under a
Multinomial (Inductor's inner compile miscompiled its in-place writes; a boolean ``cumsum``
kept the C++ transitions away) and an LKJ Cholesky factor (indexing through a constant
boolean mask put a ``nonzero`` in the graph). Recorded graphs fold work on the data alone
and index by positions; the leaf is made functional before Inductor's inner compile."""

import logging

import pytest
import torch

import ppgen
from ppgen.inference import NUTS
from ppgen.inference.recording import record
from tests.programs.corpus import PROGRAMS, data


@pytest.mark.parametrize("name,transitions", [("dirichlet_multinomial", "c++"), ("lkj_cholesky", "reference")])
def test_compiled_the_lean_way(name, transitions, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PPGEN_CACHE_DIR", str(tmp_path))
    values = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in data(name).items()}
    with caplog.at_level(logging.DEBUG, logger="ppgen"):
        fit = ppgen.fit(PROGRAMS[name][0], values, NUTS(num_samples=30, warmup=30, chains=1, potential="compiled"),
                        seed=0, progress=False)
    assert fit.path["potential"] == "compiled" and fit.path["transitions"] == transitions, fit.path
    assert "the usual way" not in caplog.text  # the lean kernel compiled and agreed with its graph
    assert "rewrites skipped" not in caplog.text


def test_work_on_the_data_alone_is_folded():
    data_mask = torch.tensor([True, False, True, True])
    scale = torch.tensor([1.0, 2.0, 3.0, 4.0])

    def fn(u):
        picked = (u * scale.exp())[data_mask]  # exp of data, a constant mask
        return picked.sum()

    graph = record(fn, torch.arange(4.0))
    targets = [str(n.target) for n in graph.graph.nodes if n.op == "call_function"]
    assert not any("exp" in t for t in targets), targets  # done once, at recording
    bool_indices = [n for n in graph.graph.nodes if n.op == "get_attr"
                    and getattr(graph, n.target).dtype == torch.bool]
    assert not bool_indices  # the mask became positions
    u = torch.randn(4)
    assert torch.equal(graph(u), fn(u))
