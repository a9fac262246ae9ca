"""BIF reader and writer: the bnlearn networks parse and agree with pgmpy, round trips are
exact, and malformed text fails with a BIFError that names the line."""

import functools
import gzip
import logging
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppgen.errors import DatasetError
from ppgen.models.bayesnet import BIFError, BIFNetwork, format_bif, parse_bif, read_bif, write_bif

#: network -> (variables, arcs, free parameters), as listed on bnlearn.com/bnrepository.
NETWORKS = {
    "asia": (8, 8, 18), "cancer": (5, 4, 10), "earthquake": (5, 4, 10), "sachs": (11, 17, 178),
    "survey": (6, 6, 21), "alarm": (37, 46, 509), "child": (20, 25, 230), "insurance": (27, 52, 1008),
    "water": (32, 66, 10083), "mildew": (35, 46, 540150), "barley": (48, 84, 114005),
}
PGMPY_CPTS = ["asia", "alarm", "child", "insurance"]


@functools.cache
def _text(folder, name):
    return gzip.decompress((folder / "bif" / f"{name}.bif.gz").read_bytes()).decode()


@functools.cache
def _net(folder, name):
    return parse_bif(_text(folder, name))


def assert_identical(a, b):
    """Same names, orders, states, parents, properties, and bit-for-bit equal float64 tables."""
    assert a == b
    assert a.name == b.name and a.network_properties == b.network_properties
    assert list(a.variables.items()) == list(b.variables.items())
    assert list(a.parents.items()) == list(b.parents.items())
    assert list(a.properties.items()) == list(b.properties.items())
    assert list(a.cpts) == list(b.cpts)
    for v in a.cpts:
        assert a.cpts[v].dtype == b.cpts[v].dtype == np.float64
        assert a.cpts[v].shape == b.cpts[v].shape
        assert np.array_equal(a.cpts[v], b.cpts[v]) and a.cpts[v].tobytes() == b.cpts[v].tobytes()


# ---------------------------------------------------------------- the bnlearn networks

@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_parses(shared_data, name):
    net = read_bif(shared_data / "bif" / f"{name}.bif.gz")
    n_vars, n_arcs, n_params = NETWORKS[name]
    assert isinstance(net, BIFNetwork) and net.name == "unknown"
    assert len(net.variables) == n_vars
    assert sum(len(p) for p in net.parents.values()) == n_arcs
    assert sum(c.size // c.shape[-1] * (c.shape[-1] - 1) for c in net.cpts.values()) == n_params
    assert list(net.parents) == list(net.cpts) == list(net.variables)
    for v, cpt in net.cpts.items():
        assert cpt.dtype == np.float64
        assert cpt.shape == tuple(len(net.variables[p]) for p in net.parents[v]) + (len(net.variables[v]),)
        assert np.all(cpt >= 0) and np.allclose(cpt.sum(-1), 1.0, rtol=0, atol=1e-6), v
    assert net == _net(shared_data, name)


def test_known_values(shared_data):
    asia = _net(shared_data, "asia")
    assert asia.variables["either"] == ["yes", "no"] and asia.parents["either"] == ["lung", "tub"]
    np.testing.assert_array_equal(asia.cpts["asia"], [0.01, 0.99])
    # (yes, yes) 1.0, 0.0; (no, yes) 1.0, 0.0; (yes, no) 1.0, 0.0; (no, no) 0.0, 1.0
    np.testing.assert_array_equal(asia.cpts["either"], [[[1, 0], [1, 0]], [[1, 0], [0, 1]]])
    np.testing.assert_array_equal(asia.cpts["dysp"][1, 0], [0.7, 0.3])  # (bronc=no, either=yes)
    child = _net(shared_data, "child")
    assert "Asy/Patch" in child.variables["ChestXray"]
    assert child.variables["Age"] == ["0-3_days", "4-10_days", "11-30_days"]
    assert ["<5", "5-12", "12+"] in child.variables.values()


def _pgmpy_reader(text):
    pgmpy_bif = pytest.importorskip("pgmpy.readwrite.BIF")
    logging.getLogger("pgmpy").setLevel(logging.ERROR)
    return pgmpy_bif.BIFReader(string=text)


def _pgmpy_cpt(cpd, net, v):
    """pgmpy's TabularCPD as our layout: parents in the order of ``net``, child states last.

    ``get_values()`` is (child card, prod(evidence cards)) with the evidence in the order of
    ``cpd.variables[1:]``, the last one varying fastest (``get_evidence()`` gives it reversed).
    """
    values = cpd.get_values().reshape(cpd.cardinality)
    order = list(cpd.variables)
    assert sorted(order[1:]) == sorted(net.parents[v]) and order[0] == v
    values = values.transpose([order.index(p) for p in net.parents[v]] + [0])
    for axis, var in enumerate(net.parents[v] + [v]):
        values = np.take(values, [cpd.state_names[var].index(s) for s in net.variables[var]], axis=axis)
    return values


@pytest.mark.peer
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_counts_match_pgmpy(shared_data, name):
    reader = _pgmpy_reader(_text(shared_data, name))
    net = _net(shared_data, name)
    assert reader.variable_names == list(net.variables)
    assert reader.variable_states == net.variables
    assert {v: list(p) for v, p in reader.variable_parents.items()} == net.parents


@pytest.mark.peer
@pytest.mark.parametrize("name", PGMPY_CPTS)
def test_cpts_match_pgmpy(shared_data, name):
    model = _pgmpy_reader(_text(shared_data, name)).get_model()
    net = _net(shared_data, name)
    for v in net.variables:
        np.testing.assert_allclose(net.cpts[v], _pgmpy_cpt(model.get_cpds(v), net, v), rtol=0, atol=1e-12)


TABLE_WITH_PARENTS = """network t { }
variable A { type discrete [ 2 ] { a0, a1 }; }
variable B { type discrete [ 3 ] { b0, b1, b2 }; }
variable C { type discrete [ 2 ] { c0, c1 }; }
probability ( A ) { table 0.3, 0.7; }
probability ( B ) { table 0.2, 0.3, 0.5; }
probability ( C | A, B ) { table 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4; }
"""


def test_table_with_parents_is_child_major():
    """``table`` values for a node with parents: the child's state slowest, the last parent fastest."""
    cpt = parse_bif(TABLE_WITH_PARENTS).cpts["C"]
    assert cpt.shape == (2, 3, 2)
    np.testing.assert_array_equal(cpt[..., 0], [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    np.testing.assert_array_equal(cpt[..., 1], [[0.9, 0.8, 0.7], [0.6, 0.5, 0.4]])


@pytest.mark.peer
def test_table_convention_and_writer_match_pgmpy():
    net = parse_bif(TABLE_WITH_PARENTS)
    for text in (TABLE_WITH_PARENTS, format_bif(net)):  # pgmpy also reads our per-row output
        model = _pgmpy_reader(text).get_model()
        for v in net.variables:
            np.testing.assert_array_equal(net.cpts[v], _pgmpy_cpt(model.get_cpds(v), net, v))


@pytest.mark.peer
def test_reads_pgmpy_writer_output(shared_data):
    pgmpy_bif = pytest.importorskip("pgmpy.readwrite.BIF")
    for name in ("asia", "alarm"):
        model = _pgmpy_reader(_text(shared_data, name)).get_model()
        ours, ref = parse_bif(str(pgmpy_bif.BIFWriter(model))), _net(shared_data, name)
        assert ours.variables == ref.variables and ours.parents == ref.parents  # pgmpy sorts the nodes
        for v in ref.cpts:
            np.testing.assert_array_equal(ours.cpts[v], ref.cpts[v])


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_round_trip_text(shared_data, name):
    net = _net(shared_data, name)
    text = format_bif(net)
    assert_identical(parse_bif(text), net)
    assert format_bif(parse_bif(text)) == text


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_round_trip_files(shared_data, name, tmp_path):
    net = _net(shared_data, name)
    for filename in (f"{name}.bif", f"{name}.bif.gz"):
        path = tmp_path / filename
        write_bif(net, path)
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == filename.endswith(".gz")
        assert_identical(read_bif(path), net)
        assert_identical(read_bif(str(path)), net)
    write_bif(net, tmp_path / f"{name}.bif")  # replaces the existing file
    assert sorted(os.listdir(tmp_path)) == [f"{name}.bif", f"{name}.bif.gz"]  # no temporary file left


def test_round_trip_is_bit_exact_for_arbitrary_floats():
    rng = np.random.default_rng(0)
    raw = rng.random((3, 2, 4)) ** 8
    cpt = raw / raw.sum(-1, keepdims=True)
    cpt[0, 0] = [5e-324, 1e-300, 0.1 + 0.2, 1 - 5e-324 - 1e-300 - 0.3]
    net = BIFNetwork("x", {"a": ["0", "1", "2"], "b": ["lo", "hi"], "c": list("pqrs")},
                     {"a": [], "b": [], "c": ["a", "b"]},
                     {"a": np.array([0.1, 0.2, 0.7]), "b": np.array([1 / 3, 2 / 3]), "c": cpt},
                     {"a": [], "b": ["note = 1"], "c": []}, ["software = ppgen"])
    assert_identical(parse_bif(format_bif(net)), net)


JAVABAYES = """// Bayesian Network in the Interchange Format
/* a comment over
   two lines with ; { } */
network "Dog-Problem" { //5 variables
    property "credal-set constant-density-bounded 1.1" ;
}
variable  "light-on" { //2 values
    type discrete[2] {  "true"  "false" };
    property "position = (218, 195)" ;
}
variable  "bowel-problem" { type discrete[2] { "true" "false" }; }
variable  "dog-out" { type discrete[2] { "true" "false" }; }
variable  "family-out" { type discrete[2] { "true" "false" }; }
probability (  "light-on"  "family-out" ) { //2 variable(s) and 4 values
    table 0.6 0.05 0.4 0.95 ;
}
probability (  "bowel-problem" ) { table 0.01 0.99 ; }
probability (  "dog-out"  "bowel-problem"  "family-out" ) {
    table 0.99 0.97 0.9 0.3 0.01 0.03 0.1 0.7 ;
}
probability ( "family-out" ) { table 1.5E-1 8.5e-1 ; }
"""


def test_javabayes_variant():
    """Quoted names, no commas, headers without '|', comments, properties, exponents."""
    net = parse_bif(JAVABAYES)
    assert net.name == "Dog-Problem"
    assert net.network_properties == ['"credal-set constant-density-bounded 1.1"']
    assert net.properties["light-on"] == ['"position = (218, 195)"'] and net.properties["dog-out"] == []
    assert net.parents == {"light-on": ["family-out"], "bowel-problem": [],
                           "dog-out": ["bowel-problem", "family-out"], "family-out": []}
    np.testing.assert_array_equal(net.cpts["light-on"], [[0.6, 0.4], [0.05, 0.95]])
    np.testing.assert_array_equal(net.cpts["dog-out"][0, 1], [0.97, 0.03])  # bowel true, family false
    np.testing.assert_array_equal(net.cpts["family-out"], [0.15, 0.85])
    assert_identical(parse_bif(format_bif(net)), net)


def test_default_rows_odd_names_and_properties():
    text = """network "my net" {
  property version 1.0;
  property note = "a;b";
}
variable "a b" { type discrete [ 3 ] { 0-50, "x y", >=7.5 }; property p = (1, 2); }
variable c.d-e {
  property first;
  type discrete [ 2 ] { Asy/Patch, "q\\"r" };
}
probability ( "a b" ) { table 1e-1, 2.5E-1, .65; }
probability ( c.d-e | "a b" ) {
  default 0.5, 0.5;
  ("x y") 1.0e0, 0;
  property from the probability block;
}
"""
    net = parse_bif(text)
    assert net.name == "my net" and net.network_properties == ["version 1.0", 'note = "a;b"']
    assert net.variables == {"a b": ["0-50", "x y", ">=7.5"], "c.d-e": ["Asy/Patch", 'q"r']}
    assert net.properties == {"a b": ["p = (1, 2)"], "c.d-e": ["first", "from the probability block"]}
    np.testing.assert_array_equal(net.cpts["a b"], [0.1, 0.25, 0.65])
    np.testing.assert_array_equal(net.cpts["c.d-e"], [[0.5, 0.5], [1.0, 0.0], [0.5, 0.5]])
    assert_identical(parse_bif(format_bif(net)), net)


# ---------------------------------------------------------------- malformed input

HEAD = """network n {
}
variable a {
  type discrete [ 2 ] { x, y };
}
variable b {
  type discrete [ 2 ] { u, v };
}
probability ( a ) {
  table 0.5, 0.5;
}
"""  # 11 lines: a block appended below starts on line 12

MALFORMED = {
    "missing semicolon": (HEAD + "probability ( b | a ) {\n  (x) 0.1, 0.9;\n  (y) 0.2, 0.8\n}\n",
                          15, "expected ';' after the values of the row (y) of 'b', got '}'"),
    "undeclared variable": (HEAD + "probability ( c ) {\n  table 1;\n}\n", 12, "undeclared variable 'c'"),
    "undeclared parent": (HEAD + "probability ( b | c ) {\n  (x) 0.1, 0.9;\n}\n", 12, "parent 'c' of 'b'"),
    "unknown state": (HEAD + "probability ( b | a ) {\n  (x) 0.1, 0.9;\n  (z) 0.2, 0.8;\n}\n",
                      14, "unknown state 'z' of parent 'a'"),
    "missing configuration": (HEAD + "probability ( b | a ) {\n  (x) 0.1, 0.9;\n}\n", 12, "no row for (a=y)"),
    "row too long": (HEAD + "probability ( b | a ) {\n  (x) 0.1, 0.9;\n  (y) 0.2, 0.7, 0.1;\n}\n",
                     14, "row (y) of 'b' has 3 values, expected 2"),
    "row arity": (HEAD + "probability ( b | a ) {\n  (x, y) 0.1, 0.9;\n}\n", 13, "names 2 parent states"),
    "duplicate row": (HEAD + "probability ( b | a ) {\n  (x) 0.1, 0.9;\n  (x) 0.1, 0.9;\n}\n", 14, "(x) of 'b'"),
    "table length": (HEAD + "probability ( b | a ) {\n  table 0.1, 0.9, 0.3;\n}\n", 13, "has 3 values, expected 4"),
    "state count": (HEAD.replace("[ 2 ] { u", "[ 3 ] { u"), 7, "declares [ 3 ] states but lists 2"),
    "duplicate variable": (HEAD + "variable a {\n  type discrete [ 1 ] { x };\n}\n", 12, "duplicate variable 'a'"),
    "duplicate state": (HEAD.replace("{ u, v }", "{ u, u }"), 7, "duplicate state 'u' in variable 'b'"),
    "no probability block": (HEAD, 6, "'b' has no probability block"),
    "second block": (HEAD + "probability ( a ) {\n  table 0.5, 0.5;\n}\n", 12, "second probability block"),
    "nan": (HEAD + "probability ( b ) {\n  table nan, 1;\n}\n", 13, "non-finite value 'nan'"),
    "overflow": (HEAD + "probability ( b ) {\n  table 1e999, 0;\n}\n", 13, "non-finite value '1e999'"),
    "word among numbers": (HEAD + "probability ( b ) {\n  table 0.5 half;\n}\n", 13, "got 'half'"),
    "trailing comma": (HEAD + "probability ( b ) {\n  table 0.5, 0.5, ;\n}\n", 13, "expected a number after ','"),
    "trailing parent comma": (HEAD + "probability ( b | a, ) {\n}\n", 12, "after ',', got ')'"),
    "end of input": (HEAD + "probability ( b | a ) {\n  (x) 0.1,", 13, "got end of input"),
    "open comment": (HEAD + "\n/* never closed", 13, "unterminated /* comment"),
    "open quote": (HEAD + 'variable "c {\n', 12, "unterminated quoted name"),
    "no network": ("variable a {\n}\n", 1, "expected 'network'"),
    "second network": (HEAD + "network m {\n}\n", 12, "second 'network'"),
    "continuous": ("network n {\n}\nvariable a {\n  type continuous;\n}\n", 4, "expected 'discrete'"),
    "bad count": ("network n {\n}\nvariable a {\n  type discrete [ two ] { x, y };\n}\n", 4, "number of states"),
    "missing type": ("network n {\n}\nvariable a {\n  property p;\n}\n", 3, "has no 'type discrete"),
    "junk at top level": (HEAD + "\n\nprobabilty ( b ) {\n}\n", 14, "expected 'variable' or 'probability'"),
    "junk in block": (HEAD + "probability ( b ) {\n  values 0.5, 0.5;\n}\n", 13, "expected 'table', 'default'"),
    "property without ;": ("network n {\n  property p\n}\n", 2, "expected ';' after the network property"),
    "self parent": (HEAD + "probability ( b | b ) {\n}\n", 12, "'b' lists 'b' as a parent of itself"),
    "empty parents": (HEAD + "probability ( b | ) {\n}\n", 12, "expected parent names after '|'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_names_the_line(case):
    text, line, fragment = MALFORMED[case]
    with pytest.raises(BIFError) as info:
        parse_bif(text)
    message = str(info.value)
    assert message.startswith(f"line {line}: "), message
    assert fragment in message, message


def test_error_types():
    assert issubclass(BIFError, DatasetError) and issubclass(BIFError, ValueError)
    with pytest.raises(TypeError):
        parse_bif(b"network n { }")


def test_read_errors_name_the_path(tmp_path):
    cases = {"missing.bif": None, "folder.bif": "dir", "latin1.bif": "network caf\xe9 { }".encode("latin-1"),
             "broken.bif.gz": b"\x1f\x8b" + b"not gzip data" * 3,
             "truncated.bif.gz": gzip.compress(b"network n { }" * 50)[:30],
             "bad.bif": HEAD.encode()}
    for filename, content in cases.items():
        path = tmp_path / filename
        if content == "dir":
            path.mkdir()
        elif content is not None:
            path.write_bytes(content)
        with pytest.raises(BIFError, match=re.escape(str(path))):
            read_bif(path)
    with pytest.raises(BIFError, match=r"bad\.bif: line 6: "):
        read_bif(tmp_path / "bad.bif")


def test_format_rejects_inconsistent_networks(tmp_path):
    def net(**change):
        fields = dict(name="n", variables={"a": ["x", "y"], "b": ["u", "v"]}, parents={"a": [], "b": ["a"]},
                      cpts={"a": np.array([0.5, 0.5]), "b": np.eye(2)}, properties={"a": [], "b": []})
        return BIFNetwork(**{**fields, **change})

    assert_identical(parse_bif(format_bif(net())), net())
    bad = [net(cpts={"a": np.array([0.5, 0.5]), "b": np.ones(2)}),
           net(cpts={"a": np.array([np.nan, 1.0]), "b": np.eye(2)}),
           net(cpts={"a": np.array([0.5, 0.5])}),
           net(parents={"a": [], "b": ["c"]}),
           net(parents={"a": ["a"], "b": []}),
           net(variables={"a": ["x", "x"], "b": ["u", "v"]}),
           net(properties={"a": ["one; two"], "b": []}),
           net(properties={"a": [" padded"], "b": []}),
           net(properties={"c": []})]
    for network in bad:
        with pytest.raises(BIFError):
            format_bif(network)
    with pytest.raises(BIFError):
        write_bif(bad[0], tmp_path / "bad.bif")
    assert not os.listdir(tmp_path)
    with pytest.raises(BIFError, match="cannot be written"):
        write_bif(net(), tmp_path / "no such folder" / "x.bif")


# ---------------------------------------------------------------- fuzzing

PUNCTUATION = "{}();,|[]"


@st.composite
def mangled(draw, texts):
    text = draw(st.sampled_from(texts))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "insert", "letters", "duplicate line", "truncate"]))
        i = draw(st.integers(0, len(text)))
        if op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 40)):]
        elif op == "insert":
            text = text[:i] + draw(st.text(PUNCTUATION + ' "/*\n', min_size=1, max_size=4)) + text[i:]
        elif op == "letters":
            text = text[:i] + draw(st.text("abxyz019.e-+", min_size=1, max_size=4)) + text[i:]
        elif op == "duplicate line":
            lines = text.splitlines(keepends=True) or [""]
            k = draw(st.integers(0, len(lines) - 1))
            text = "".join(lines[:k + 1] + lines[k:])
        else:
            text = text[:i]
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mangled_text_parses_or_raises_bif_error(shared_data, data):
    text = data.draw(mangled([_text(shared_data, "asia"), _text(shared_data, "cancer")]))
    try:
        net = parse_bif(text)
    except BIFError as exc:
        assert re.match(r"line \d+: ", str(exc)), str(exc)
        return
    assert isinstance(net, BIFNetwork)
    assert_identical(parse_bif(format_bif(net)), net)


def test_a_decompression_bomb_is_refused_without_filling_memory(tmp_path):
    """A gzip file of a few kB that unpacks to 64 MB, read with a 1 MB cap: refused with the
    path and the cap named, the text never held whole (the peak allocation stays near the cap)."""
    import tracemalloc

    from ppgen.models.bayesnet.bif import BIFError, read_bif

    path = tmp_path / "bomb.bif.gz"
    with gzip.open(path, "wb") as handle:
        block = b"network n { }\n" + b" " * (2**20 - 14)
        for _ in range(64):
            handle.write(block)
    assert path.stat().st_size < 2**17
    tracemalloc.start()
    try:
        with pytest.raises(BIFError, match=r"bomb\.bif\.gz: more than 1,048,576 bytes of BIF text once decompressed"):
            read_bif(path, max_bytes=2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20
    # under the cap the same reader reads the file
    small = tmp_path / "small.bif.gz"
    small.write_bytes(gzip.compress(b"network n { }\nvariable a { type discrete [ 2 ] { x, y }; }\n"
                                  b"probability ( a ) { table 0.3, 0.7; }\n"))
    assert read_bif(small, max_bytes=2**20).variables == {"a": ["x", "y"]}
