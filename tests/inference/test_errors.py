"""Bad input gets a clear ppgen error that names the culprit."""

import os
import re

import numpy as np
import pytest
import torch

import ppgen
from ppgen.inference import MAP, NUTS, SVI
from ppgen.models import ConjugateNormal, GaussianMixture


def test_nan_and_inf_data_are_named():
    model = GaussianMixture(2, 2)
    data = np.ones((10, 2))
    data[3, 1] = np.nan
    with pytest.raises(ppgen.DataError, match=r"NaN.*\(3, 1\)"):
        ppgen.fit(model, data, MAP())
    data[3, 1] = np.inf
    with pytest.raises(ppgen.DataError, match="inf"):
        ppgen.fit(model, data, MAP())


def test_wrong_dimensions():
    with pytest.raises(ppgen.DataError, match="2 features"):
        ppgen.fit(GaussianMixture(2, 2), np.zeros((10, 3)), MAP())
    with pytest.raises(ppgen.DataError, match="1-D"):
        ppgen.fit(ConjugateNormal(), np.zeros((10, 3)), "exact")
    with pytest.raises(ppgen.DataError, match="numeric|strings"):
        ppgen.fit(ConjugateNormal(), ["a", "b"], "exact")


def test_unknown_method_and_bad_settings():
    with pytest.raises(ppgen.MethodError, match="method='gibbs'"):
        ppgen.fit(ConjugateNormal(), [1.0, 2.0], "gibbs")
    with pytest.raises(ppgen.MethodError, match="guide='laplace'"):
        SVI(guide="laplace")
    with pytest.raises(ppgen.MethodError, match="num_samples"):
        NUTS(num_samples=0)
    with pytest.raises(ppgen.MethodError, match="lr"):
        SVI(lr=-1.0)


def test_unknown_dataset_name():
    with pytest.raises(ppgen.DatasetError, match="faithful"):
        ppgen.datasets.load("no-such-set")


def test_corrupt_and_foreign_files(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ppgen.CheckpointError, match="corrupt.pt"):
        ppgen.load(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ppgen.CheckpointError, match="not a ppgen fit"):
        ppgen.load(foreign)
    malicious = tmp_path / "pickle.pt"
    torch.save({"format": "ppgen", "kind": "fit", "obj": os.getcwd}, malicious)
    with pytest.raises(ppgen.CheckpointError):
        ppgen.load(malicious)
    with pytest.raises(ppgen.CheckpointError, match="no such file"):
        ppgen.load(tmp_path / "missing.pt")


def test_failed_fit_leaves_saved_fits_untouched(tmp_path):
    model = ConjugateNormal()
    fit = ppgen.fit(model, [0.5, 1.5, 2.0], "exact")
    path = tmp_path / "fit.pt"
    fit.save(path)
    before = path.read_bytes()
    checkpoint = tmp_path / "ckpt.pt"
    with pytest.raises(ppgen.DataError):
        ppgen.fit(model, [0.5, float("nan")], SVI(checkpoint=str(checkpoint)))
    assert path.read_bytes() == before
    assert not checkpoint.exists()
    assert torch.equal(ppgen.load(path).posterior["mean"], fit.posterior["mean"])


def test_checkpoint_from_another_run_is_refused(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    ppgen.fit(ConjugateNormal(), [0.5, 1.5], SVI(num_steps=5, checkpoint=path), progress=False)
    with pytest.raises(ppgen.CheckpointError, match="different run"):
        ppgen.fit(GaussianMixture(2, 1), [[0.5], [1.5], [3.0]], SVI(num_steps=5, checkpoint=path),
                  progress=False)


# ---------------------------------------------------------------- the hostile probe's cases

def _fit(**kwargs):
    return ppgen.fit(ConjugateNormal(), torch.randn(10), SVI(num_steps=3), progress=False, **kwargs)


def _normal(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)


@pytest.mark.parametrize("data, words", [
    (torch.ones(40, 2), None),  # every point the same: any start will do, the fit is finite
    (torch.cat([_normal(40, 1), torch.ones(40, 1)], 1), None),  # a constant column
    (_normal(3, 2), r"n_components=5 is more than the 3 data points"),
    (_normal(40, 2) * 1e18, r"values up to .* overflow float32 in their sums of squares"),
    # huge values in float64: the default prior (loc_scale=100) is off by 16 orders of
    # magnitude; the fit is finite, or refused where a covariance is not positive definite
    (_normal(40, 2, dtype=torch.float64) * 1e18, "finite or not positive definite"),
])
def test_gaussian_mixture_start_on_awkward_data(data, words):
    model = GaussianMixture(5 if words and "n_components" in words else 3, 2)
    try:
        fit = ppgen.fit(model, data, MAP(), progress=False, dtype=data.dtype)
    except ppgen.PpgenError as exc:
        assert words is not None, exc
        expected = "not positive definite .* against the prior" if words.startswith("finite or") else words
        assert re.search(expected, str(exc)), exc
        return
    assert words is None or words.startswith("finite or"), "no error"
    assert all(bool(torch.isfinite(v).all()) for v in fit.params.values())
    assert bool(torch.isfinite(model.log_prob(data)).all())


def test_svi_nan_names_the_site():
    """Data of 1e30 overflow the squared error in float32: the loss is NaN at the first step,
    and the error names the site whose log density is not finite."""
    import pyro
    import pyro.distributions as dist

    def model(x):
        w = pyro.sample("w", dist.Normal(0.0, 10.0))
        with pyro.plate("rows", len(x)):
            pyro.sample("x", dist.Normal(w, 1.0), obs=x)

    with pytest.raises(ppgen.MethodError, match=r"loss became nan at step 0 \(not finite at model site 'x'"):
        ppgen.fit(model, {"x": torch.full((5,), 1e30)}, SVI(num_steps=5), progress=False)


@pytest.mark.parametrize("build, words", [
    (lambda: ppgen.inference.HMC(step_size=-0.1), r"HMC\(step_size=-0.1\) must be a positive finite"),
    (lambda: ppgen.inference.HMC(step_size=float("nan")), r"step_size=nan"),
    (lambda: ppgen.inference.HMC(num_steps=0), r"num_steps"),
    (lambda: _fit(seed=-1), r"seed must be an integer in \[0, 2\*\*63\)"),
    (lambda: _fit(threads=0), r"threads must be a positive integer"),
    (lambda: _fit(device="cuda:0") if not torch.cuda.is_available() else _fit(device="cuda:999"), r"device="),
    (lambda: _fit(device="warp-drive"), r"device='warp-drive' is not a torch device"),
    (lambda: ppgen.fit(ConjugateNormal(), np.array([1.0, 1e300]), SVI(num_steps=2), progress=False),
     r"1e\+300 at index \(1,\) overflows float32"),
])
def test_bad_settings_get_ppgen_errors(build, words):
    with pytest.raises(ppgen.PpgenError, match=words):
        build()


def test_batch_size_larger_than_the_data():
    with pytest.raises(ppgen.PpgenError, match="batch_size"):
        ppgen.fit(GaussianMixture(2, 2), torch.randn(10, 2), SVI(num_steps=2, batch_size=20), progress=False)


def test_saving_and_loading_folders(tmp_path):
    fit = _fit()
    with pytest.raises(ppgen.CheckpointError, match="is a folder; give a file path"):
        fit.save(tmp_path)
    with pytest.raises(ppgen.CheckpointError, match="is a folder, not a ppgen fit file"):
        ppgen.load(tmp_path)
    with pytest.raises(ppgen.CheckpointError, match="is a folder"):
        ppgen.fit(ConjugateNormal(), torch.randn(10), SVI(num_steps=3, checkpoint=str(tmp_path)), progress=False)
    with pytest.raises(ppgen.CheckpointError, match="is a folder"):
        ppgen.fit(ConjugateNormal(), torch.randn(10), SVI(num_steps=3, checkpoint="."), progress=False)


def test_random_bytes_are_never_loaded(tmp_path):
    path = tmp_path / "f.pt"
    rng = np.random.default_rng(0)
    for size in [0, 1, 10, 100, 1000, 5000] * 10:
        path.write_bytes(rng.bytes(size))
        with pytest.raises(ppgen.CheckpointError):
            ppgen.load(path)


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.pop("posterior"), r"has no 'posterior'"),
    (lambda p: p.__setitem__("posterior", [1, 2]), r"'posterior' is a list, not a dict"),
    (lambda p: p["posterior"].__setitem__("mu", "text"), r"'posterior' holds 'mu'"),
    (lambda p: p.__setitem__("meta", p["meta"].replace('"model_config": {', '"model_config": {"bogus": 1, ')),
     r"cannot rebuild the saved 'ConjugateNormal'"),
    (lambda p: p.__setitem__("meta", "[1, 2]"), r"damaged ppgen fit metadata"),
    (lambda p: p.__setitem__("meta", p["meta"].replace('"losses"', '"lost"')), r"damaged ppgen fit metadata"),
])
def test_crafted_fit_files_are_refused_naming_the_part(tmp_path, damage, words):
    path = tmp_path / "fit.pt"
    _fit().save(path)
    payload = torch.load(path, weights_only=True)
    damage(payload)
    torch.save(payload, path)
    with pytest.raises(ppgen.CheckpointError, match=words):
        ppgen.load(path)
