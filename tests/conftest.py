"""Shared fixtures: seeds, float64, the shared data folder, the cuda marker."""

import os
import pathlib

import pyro
import pytest
import torch

from ppgen.diagnostics.summary import without_numba

SHARED_DATA = pathlib.Path(os.environ.get(
    "PPGEN_SHARED_DATA", pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    # One torch thread, as fit() uses: the tests' tensors are small, and with two threads a
    # busy machine made one AIS test 100x slower (benchmarks/RESULTS.md, "threads").
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _arviz_without_numba():
    # ArviZ 0.23's numba path of az.mcse(method="sd") breaks under NumPy >= 2.4; numba
    # arrives with peer libraries (PyMC), so the tests use ArviZ's NumPy path throughout.
    with without_numba():
        yield


@pytest.fixture
def float64():
    """Run the test in float64 (exactness tests), restoring the default after."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.fixture
def shared_data():
    """The shared real datasets, or a skip saying they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA} (set PPGEN_SHARED_DATA)")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
