"""The posteriordb reader: real posteriors from the shared folder, and every error on fakes."""

import json
import zipfile

import numpy as np
import pytest

from ppgen.datasets import load_posteriordb, posteriordb_names
from ppgen.datasets.posteriordb import gather_draws
from ppgen.errors import DatasetError

SEVEN = ["arK-arK", "eight_schools-eight_schools_noncentered", "gp_pois_regr-gp_pois_regr",
         "hmm_example-hmm_example", "kidiq-kidscore_momiq", "low_dim_gauss_mix-low_dim_gauss_mix", "sblrc-blr"]


@pytest.fixture
def pdb(shared_data):
    return shared_data / "posteriordb"


def test_names(pdb):
    assert posteriordb_names(pdb) == SEVEN


@pytest.mark.parametrize("name", SEVEN)
def test_reference_draws_are_gathered_into_arrays(pdb, name):
    posterior = load_posteriordb(name, pdb)
    assert posterior.name == name
    assert "parameters" in posterior.stan_code
    # Every declared parameter, with as many components as posteriordb says, 10 chains x 1000 draws.
    assert set(posterior.reference) == set(posterior.dimensions)
    for key, draws in posterior.reference.items():
        assert draws.dtype == np.float64 and draws.shape[:2] == (10, 1000)
        assert int(np.prod(draws.shape[2:])) == posterior.dimensions[key]
    # posteriordb's own summary of the same draws, by flat Stan name: checks where each index lands.
    summary_path = (pdb / "reference_posteriors" / "summary_statistics" / "mean_value" / "mean_value"
                    / f"{name}.json")
    summary = json.loads(summary_path.read_text())
    for flat, mean in zip(summary["names"], summary["mean_value"]):
        base, _, index = flat.partition("[")
        draws = posterior.reference[base]
        if index:
            draws = draws[(Ellipsis,) + tuple(int(i) - 1 for i in index.rstrip("]").split(","))]
        assert draws.mean() == pytest.approx(mean, rel=1e-10, abs=1e-12), flat


def test_data_keep_json_types(pdb):
    eight = load_posteriordb("eight_schools-eight_schools_noncentered", pdb)
    assert eight.data["J"] == 8 and isinstance(eight.data["J"], int)
    assert eight.data["y"].dtype == np.int64 and eight.data["y"].tolist() == [28, 8, -3, 7, -1, 1, 18, 12]
    blr = load_posteriordb("sblrc-blr", pdb)
    assert blr.data["X"].shape == (100, 5) and blr.data["X"].dtype == np.float64


def test_model_name_resolves_to_its_posterior(pdb):
    assert load_posteriordb("arK", pdb).name == "arK-arK"
    assert load_posteriordb("eight_schools_noncentered", pdb).data_name == "eight_schools"


def test_gather_draws_multi_index_and_dotted_names():
    chains = [{"a": [1.0, 2.0], "S[1,1]": [0.0, 1.0], "S[2,1]": [2.0, 3.0], "S[1,2]": [4.0, 5.0],
               "S[2,2]": [6.0, 7.0], "v.2": [9.0, 9.5], "v.1": [8.0, 8.5]},
              {"a": [3.0, 4.0], "S[1,1]": [0.5, 1.5], "S[2,1]": [2.5, 3.5], "S[1,2]": [4.5, 5.5],
               "S[2,2]": [6.5, 7.5], "v.2": [-9.0, -9.5], "v.1": [-8.0, -8.5]}]
    out = gather_draws(chains)
    assert out["a"].shape == (2, 2) and out["a"][1, 0] == 3.0
    assert out["S"].shape == (2, 2, 2, 2)
    assert out["S"][0, 1].tolist() == [[1.0, 5.0], [3.0, 7.0]]  # S[row, column], 0-based
    assert out["v"][1, 0].tolist() == [-8.0, -9.0]


@pytest.mark.parametrize("chains, message", [
    ([], "non-empty JSON list"),
    ([{"a": [1.0]}, {"b": [1.0]}], "chain 1 has parameters"),
    ([{"a": [1.0, 2.0], "b": [1.0]}], "same number of draws"),
    ([{"t[1]": [1.0], "t[3]": [1.0]}], "not every 1-based index"),
    ([{"t": [1.0], "t[1]": [1.0]}], "mixes indices"),
    ([{"t[0]": [1.0]}], "not every 1-based index"),
    ([{"a b": [1.0]}], "cannot read the parameter name 'a b'"),
    ([{"a": ["x"]}], "draws of 'a' are not all numbers"),
])
def test_gather_draws_errors(chains, message):
    with pytest.raises(DatasetError, match=message):
        gather_draws(chains, "draws.json")


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)


@pytest.fixture
def fake(tmp_path):
    """A one-posterior posteriordb folder: 'd-m', model m, data d, reference d-m."""
    for folder in ("posteriors", "data/data", "models/stan", "reference_posteriors/draws/draws"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "posteriors" / "d-m.json").write_text(json.dumps(
        {"name": "d-m", "model_name": "m", "data_name": "d", "reference_posterior_name": "d-m",
         "dimensions": {"b": 2}}))
    _zip(tmp_path / "data/data/d.json.zip", {"d.json": json.dumps({"N": 2, "x": [1.5, 2]})})
    (tmp_path / "models/stan/m.stan").write_text("parameters { vector[2] b; }")
    _zip(tmp_path / "reference_posteriors/draws/draws/d-m.json.zip",
         {"d-m.json": json.dumps([{"b[1]": [0.0], "b[2]": [1.0]}])})
    return tmp_path


def test_fake_posterior_reads(fake):
    posterior = load_posteriordb("d-m", fake)
    assert posterior.data["x"].tolist() == [1.5, 2.0] and posterior.reference["b"].shape == (1, 1, 2)
    assert posterior.stan_code.startswith("parameters")


def test_unknown_name_lists_the_available(fake):
    with pytest.raises(DatasetError, match="unknown posterior 'nope'.*available: d-m"):
        load_posteriordb("nope", fake)


def test_not_a_posteriordb_folder(tmp_path):
    with pytest.raises(DatasetError, match="no posteriors/ directory"):
        load_posteriordb("d-m", tmp_path)


def test_missing_files_are_named(fake):
    (fake / "data/data/d.json.zip").unlink()
    with pytest.raises(DatasetError, match=r"d\.json\.zip: file not found"):
        load_posteriordb("d-m", fake)


def test_missing_stan_file_is_named(fake):
    (fake / "models/stan/m.stan").unlink()
    with pytest.raises(DatasetError, match=r"m\.stan: cannot read"):
        load_posteriordb("d-m", fake)


def test_corrupt_zip_is_named(fake):
    (fake / "reference_posteriors/draws/draws/d-m.json.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DatasetError, match=r"d-m\.json\.zip: not a readable zip"):
        load_posteriordb("d-m", fake)


@pytest.mark.parametrize("members, message", [
    ({"a.json": "{}", "b.json": "{}"}, "expected one .json file inside"),
    ({"d.json": "{not json"}, "not valid JSON inside"),
    ({"d.json": "[1, 2]"}, "expected a JSON object of data"),
    ({"d.json": json.dumps({"x": [[1, 2], [3]]})}, "data 'x' is a ragged list"),
    ({"d.json": json.dumps({"x": ["a", "b"]})}, "data 'x' is not an array of numbers"),
    ({"d.json": json.dumps({"x": {"k": 1}})}, "data 'x' is a dict"),
])
def test_bad_data_files(fake, members, message):
    _zip(fake / "data/data/d.json.zip", members)
    with pytest.raises(DatasetError, match=message):
        load_posteriordb("d-m", fake)


def test_bad_posterior_description(fake):
    (fake / "posteriors" / "d-m.json").write_text("{broken")
    with pytest.raises(DatasetError, match=r"d-m\.json: not valid JSON"):
        load_posteriordb("d-m", fake)
    (fake / "posteriors" / "d-m.json").write_text(json.dumps({"model_name": "m", "data_name": "d",
                                                               "reference_posterior_name": None}))
    with pytest.raises(DatasetError, match="'d-m' has no reference draws"):
        load_posteriordb("d-m", fake)
