"""C++ NUTS kernels kept between fits (``ppgen.inference.mcmc.kept``): a second fit of the
same program loads the first one's library (no TorchInductor) and draws the same numbers;
other data build anew; a damaged or mismatched entry is never sampled with."""

import logging
import shutil

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.inference import NUTS
from ppgen.inference.mcmc import kept
from ppgen.inference.mcmc.potential import Potential
from ppgen.inference.program import Program


def schools(J, sigma, y):  # no plate, as in Pyro's example
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    eta = pyro.sample("eta", dist.Normal(torch.zeros(J), 1.0).to_event(1))
    pyro.sample("obs", dist.Normal(mu + tau * eta, sigma).to_event(1), obs=y)


def data(shift=0.0):
    return {"J": 8, "sigma": torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]),
            "y": torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]) + shift}


METHOD = NUTS(num_samples=60, warmup=60, potential="compiled")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PPGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    return tmp_path / "cache" / "nuts"


def _fit(caplog, values, seed=0):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ppgen"):
        fit = ppgen.fit(schools, values, METHOD, seed=seed, progress=False)
    assert fit.path["potential"] == "compiled" and fit.path["transitions"] == "c++", fit.path
    return fit, "kept from an earlier run" in caplog.text


def _key(values):
    return kept.key(Potential(Program.build(schools, values), 1, build=False))


def test_a_second_fit_loads_the_kept_kernel_and_draws_the_same(cache, caplog, monkeypatch):
    first, loaded = _fit(caplog, data())
    assert not loaded and [p.name for p in cache.iterdir()] == [_key(data())]
    # The second fit must not build: building now would fail the test.
    monkeypatch.setattr("ppgen.inference.mcmc.accelerate.compile_native_nuts",
                        lambda *a: pytest.fail("the kept kernel was rebuilt"))
    second, loaded = _fit(caplog, data())
    assert loaded
    for name in ("mu", "tau", "eta"):
        assert torch.equal(first.posterior[name], second.posterior[name]), name


def test_other_data_build_their_own_kernel(cache, caplog):
    _fit(caplog, data())
    _, loaded = _fit(caplog, data(shift=1.0))
    assert not loaded
    assert _key(data()) != _key(data(shift=1.0))
    assert sorted(p.name for p in cache.iterdir()) == sorted([_key(data()), _key(data(shift=1.0))])


def test_a_damaged_entry_is_rebuilt(cache, caplog):
    first, _ = _fit(caplog, data())
    library = next((cache / _key(data())).glob("kernel_*.so"))
    library.write_bytes(b"not a library")
    second, loaded = _fit(caplog, data())
    assert not loaded and "was not loaded" in caplog.text
    assert torch.equal(first.posterior["mu"], second.posterior["mu"])
    assert next((cache / _key(data())).glob("kernel_*.so")) != library  # kept anew
    _, loaded = _fit(caplog, data())
    assert loaded


def test_an_entry_of_other_data_fails_the_checks_and_is_not_used(cache, caplog):
    """A kept kernel built for another data set (as a stale or tampered entry would be;
    small data are compiled into the library itself) disagrees with Pyro's potential at the
    probes: it is refused, not sampled."""
    _fit(caplog, data())
    _fit(caplog, data(shift=5.0))
    mine, other = cache / _key(data()), cache / _key(data(shift=5.0))
    shutil.rmtree(mine)
    shutil.copytree(other, mine)
    with caplog.at_level(logging.INFO, logger="ppgen"):
        _, loaded = _fit(caplog, data())
    assert not loaded
    assert "the kept C++ kernel is not used" in caplog.text
    _, loaded = _fit(caplog, data())  # the refused entry was replaced by a right one
    assert loaded


def schools_edited(J, sigma, y):  # one sign changed: the same sites, shapes and data
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    eta = pyro.sample("eta", dist.Normal(torch.zeros(J), 1.0).to_event(1))
    pyro.sample("obs", dist.Normal(mu - tau * eta, sigma).to_event(1), obs=y)


def test_the_key_follows_the_formula_the_data_and_the_dtype_not_the_random_state(cache):
    program = Program.build(schools, data())
    first = kept.key(Potential(program, 1, build=False))
    torch.manual_seed(123)  # the fingerprint draws from its own fixed seed
    assert kept.key(Potential(program, 1, build=False)) == first
    assert kept.key(Potential(Program.build(schools_edited, data()), 1, build=False)) != first
    assert kept.key(Potential(Program.build(schools, data(shift=1e-3)), 1, build=False)) != first
    program64 = Program.build(schools, {k: v.double() if torch.is_tensor(v) else v for k, v in data().items()})
    assert kept.key(Potential(program64, 1, build=False)) != first


def test_a_warm_fit_records_nothing(cache, caplog, monkeypatch):
    """A kept kernel is found from the program's fingerprint alone: the second fit neither
    records the potential nor compiles."""
    _fit(caplog, data())
    monkeypatch.setattr("ppgen.inference.mcmc.potential.record", lambda *a: pytest.fail("recorded again"))
    _, loaded = _fit(caplog, data())
    assert loaded
