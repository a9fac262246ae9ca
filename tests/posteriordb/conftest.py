"""Fixtures of the posteriordb suite: the folder, skipped when the shared data are absent."""

import pytest


@pytest.fixture
def posteriordb_root(shared_data):
    return shared_data / "posteriordb"
