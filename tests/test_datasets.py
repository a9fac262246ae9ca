"""Embedded datasets and the CSV reader: shapes, provenance, and errors that name the culprit."""

from importlib import resources

import numpy as np
import pandas as pd
import pytest

import ppgen
from ppgen import datasets
from ppgen.errors import DataError, DatasetError, PpgenError

EXPECTED = {
    "faithful": ((272, 2), ["eruptions", "waiting"]),
    "geyser": ((299, 2), ["waiting", "duration"]),
    "earthquakes": ((107, 2), ["year", "count"]),
}


def test_names():
    assert datasets.names() == ["digits", "earthquakes", "eight_schools", "faithful", "geyser"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_tables(name):
    shape, columns = EXPECTED[name]
    frame = datasets.load(name)
    assert isinstance(frame, pd.DataFrame)
    assert frame.shape == shape
    assert list(frame.columns) == columns  # R's rownames column is dropped
    assert all(pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns)
    assert np.isfinite(frame.to_numpy(dtype=float)).all()
    array = datasets.load(name, as_frame=False)
    assert isinstance(array, np.ndarray) and array.dtype == np.float64 and array.shape == shape
    assert array.flags.writeable
    np.testing.assert_array_equal(array, frame.to_numpy(dtype=float))


def test_known_values():
    faithful = datasets.load("faithful")
    assert faithful.iloc[0].tolist() == [3.6, 79]
    assert faithful["waiting"].between(40, 100).all()
    quakes = datasets.load("earthquakes")
    assert quakes["year"].tolist() == list(range(1900, 2007))
    assert quakes["count"].iloc[0] == 13


def test_load_eight_schools():
    data = datasets.load("eight_schools")
    assert data["J"] == 8
    np.testing.assert_array_equal(data["y"], [28, 8, -3, 7, -1, 1, 18, 12])
    np.testing.assert_array_equal(data["sigma"], [15, 10, 16, 11, 9, 11, 10, 18])


def test_load_is_case_insensitive_and_fresh():
    first = datasets.load("Faithful")
    first.iloc[0, 0] = -1.0
    assert datasets.load("faithful").iloc[0, 0] == 3.6


def test_top_level_access():
    assert ppgen.datasets.load is datasets.load


def test_files_are_package_data():
    folder = resources.files("ppgen.datasets").joinpath("data")
    for filename in ("faithful.csv", "geyser.csv", "earthquakes.csv", "eight_schools.json",
                     "PROVENANCE.md"):
        assert folder.joinpath(filename).is_file(), filename


@pytest.mark.parametrize("name, words", [
    ("faithful", ["Härdle", "Rdatasets"]),
    ("geyser", ["MASS", "Azzalini"]),
    ("earthquakes", ["Zucchini", "hmmlearn"]),
    ("eight_schools", ["Rubin", "Bayesian Data Analysis"]),
])
def test_describe_gives_source_and_licence(name, words):
    text = datasets.describe(name)
    assert text.startswith(name)
    for word in words:
        assert word in text
    assert "icence" in text  # Licence / licence


def test_unknown_name_lists_known_names():
    with pytest.raises(DatasetError) as info:
        datasets.load("old_faithful")
    message = str(info.value)
    assert "old_faithful" in message
    for name in datasets.names():
        assert name in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, PpgenError)
    with pytest.raises(DatasetError, match="faithful"):
        datasets.describe("nope")


def test_embedded_tables_match_shared_copies(shared_data):
    for name in EXPECTED:
        shared = shared_data / "tables" / f"{name}.csv"
        if not shared.is_file():
            pytest.skip(f"{shared} absent")
        embedded = resources.files("ppgen.datasets").joinpath("data", f"{name}.csv")
        assert embedded.read_bytes() == shared.read_bytes(), name


# ------------------------------------------------------------------ read_csv
def test_read_csv_missing_file_names_path(tmp_path):
    path = tmp_path / "nowhere" / "data.csv"
    with pytest.raises(DatasetError) as info:
        datasets.read_csv(path)
    assert str(path) in str(info.value)


def test_read_csv_directory_and_empty_file(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path)):
        datasets.read_csv(tmp_path)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DatasetError, match="empty"):
        datasets.read_csv(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b\n")
    with pytest.raises(DatasetError, match="no rows"):
        datasets.read_csv(header_only)


def test_read_csv_nan_names_column(tmp_path):
    path = tmp_path / "gappy.csv"
    path.write_text("height,weight\n1.0,2.0\n1.5,\n2.0,3.0\n")
    with pytest.raises((DataError, DatasetError)) as info:
        datasets.read_csv(path)
    message = str(info.value)
    assert "'weight'" in message and str(path) in message and "row 2" in message


def test_read_csv_inf_names_column(tmp_path):
    path = tmp_path / "inf.csv"
    path.write_text("a,b\n1,inf\n2,3\n")
    with pytest.raises(DataError, match="'b' has infinite"):
        datasets.read_csv(path)


def test_read_csv_keeps_numeric_columns(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("rownames,x,name,y\n1,0.5,a,1\n2,1.5,b,2\n3,2.5,c,3\n")
    frame = datasets.read_csv(path)
    assert list(frame.columns) == ["x", "y"]
    assert frame.shape == (3, 2)
    assert list(datasets.read_csv(path, columns="y,x").columns) == ["y", "x"]
    assert list(datasets.read_csv(path, columns=["x"]).columns) == ["x"]


def test_read_csv_column_errors(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("x,name\n0.5,a\n1.5,b\n")
    with pytest.raises(DatasetError, match="no column.*'z'.*x, name"):
        datasets.read_csv(path, columns=["x", "z"])
    with pytest.raises(DatasetError, match="'name' are not numeric"):
        datasets.read_csv(path, columns=["name"])
    text_only = tmp_path / "text.csv"
    text_only.write_text("name\na\nb\n")
    with pytest.raises(DatasetError, match="no numeric column"):
        datasets.read_csv(text_only)


def test_read_csv_number_column_with_text_is_an_error(tmp_path):
    path = tmp_path / "typo.csv"
    path.write_text("x,y\n1,2\n2,3O\n3,4\n")  # letter O for a zero
    with pytest.raises(DatasetError, match="'y' mixes numbers and text.*'3O'.*row 2"):
        datasets.read_csv(path)


def test_read_csv_round_trip_into_fit(tmp_path):
    path = tmp_path / "values.csv"
    pd.DataFrame({"v": np.linspace(-1, 1, 20)}).to_csv(path, index=False)
    frame = datasets.read_csv(path)
    fit = ppgen.fit(ppgen.models.ConjugateNormal(), frame, "exact", progress=False)
    assert fit.log_evidence is not None and np.isfinite(fit.log_evidence)
