"""Bad input gets a clear ppgen error that names the culprit."""

import os

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
