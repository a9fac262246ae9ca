"""Smoke: the ``ppgen`` command end to end, in-process (``main([...])``) with tiny settings."""

import csv
import shutil
import subprocess
import sys

import pytest

import ppgen
from ppgen.cli import main, parse_params
from ppgen.diagnostics import arviz_io
from ppgen.errors import PpgenError


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def summary_rows(path):
    with open(path, newline="") as handle:
        return [row[0] for row in csv.reader(handle)][1:]


def test_models_lists_families_and_methods(capsys):
    code, out, err = run(capsys, "models")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["model", "methods", "log_prob"]
    row = next(line for line in lines if line.startswith("GaussianMixture"))
    assert "svi, map, nuts, hmc, exact" in row and "exact" in row
    for name in ppgen.registry.families():
        assert any(line.startswith(name) for line in lines), name
    assert ":math:" not in out and "``" not in out and "\\mathrm" not in out  # plain text, no markup


def test_datasets_command(capsys):
    code, out, _ = run(capsys, "datasets")
    assert code == 0
    assert all(name in out for name in ppgen.datasets.names())
    code, out, _ = run(capsys, "datasets", "faithful")
    assert code == 0 and "Härdle" in out


def test_parse_params():
    assert parse_params(["n_components=2", "loc_scale=2.5", "covariance=diag", "flag=true"]) == {
        "n_components": 2, "loc_scale": 2.5, "covariance": "diag", "flag": True}
    with pytest.raises(PpgenError, match="key=value"):
        parse_params(["n_components"])


@pytest.mark.filterwarnings("ignore:Singular sample detected")  # ppgen.load traces the prior
def test_fit_map_writes_outputs(capsys, tmp_path):
    out_dir = tmp_path / "gmm"
    code, out, err = run(capsys, "fit", "GaussianMixture", "--data", "faithful", "--method", "map",
                         "--param", "n_components=2", "--out", str(out_dir), "--no-progress")
    assert code == 0, err
    for name in ("posterior.nc", "summary.csv", "fit.pt", "loss.png", "samples.png"):
        assert (out_dir / name).is_file(), name
    assert "GaussianMixture fitted by map" in out
    import arviz as az

    idata = az.from_netcdf(out_dir / "posterior.nc")
    assert {"posterior", "log_likelihood", "observed_data"} <= set(arviz_io.group_names(idata))
    assert idata.posterior["locs"].shape == (1, 1, 2, 2)  # dim came from the data's 2 columns
    assert any(row.startswith("weights") for row in summary_rows(out_dir / "summary.csv"))
    fit = ppgen.load(out_dir / "fit.pt")
    assert type(fit.model).__name__ == "GaussianMixture" and fit.model.n_components == 2


@pytest.mark.parametrize("model, method, options", [("GAN", "adversarial", ["--num-steps=20"]),
                                                     ("GaussianBernoulliRBM", "cd",
                                                      ["--num-epochs=2", "--param", "n_hidden=3"])])
def test_fit_takes_every_method_and_the_data_width(capsys, tmp_path, model, method, options):
    out_dir = tmp_path / method
    code, out, err = run(capsys, "fit", model, "--data", "faithful", "--method", method, *options,
                         "--out", str(out_dir), "--no-progress")
    assert code == 0, err
    assert f"{model} fitted by {method}" in out
    for name in ("posterior.nc", "fit.pt", "loss.png"):
        assert (out_dir / name).is_file(), name
    assert not (out_dir / "summary.csv").exists()  # the weights are a point estimate: no posterior
    fit = ppgen.load(out_dir / "fit.pt")
    assert fit.method.name == method and len(fit.losses) > 0


def test_fit_options_follow_the_method(capsys, tmp_path):
    code, _, err = run(capsys, "fit", "GAN", "--data", "faithful", "--method", "adversarial", "--warmup=5",
                       "--out", str(tmp_path / "x"))
    assert code == 2 and "--warmup do(es) not apply to --method adversarial" in err
    assert "--num-steps" in err and "--batch-size" in err


def test_fit_nuts_on_csv(capsys, tmp_path):
    data = tmp_path / "values.csv"
    data.write_text("id,value,note\n" + "".join(
        f"{i},{v},obs{i}\n" for i, v in enumerate([1.2, 0.4, 2.2, 1.9, 0.7, 1.1, 1.6, 0.9])))
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "fit", "ConjugateNormal", "--data", str(data), "--columns", "value",
                         "--method", "nuts", "--num-samples", "50", "--warmup", "50",
                         "--chains", "1", "--seed", "3", "--out", str(out_dir), "--no-progress")
    assert code == 0, err
    for name in ("posterior.nc", "summary.csv", "fit.pt", "trace.png", "samples.png"):
        assert (out_dir / name).is_file(), name
    assert set(summary_rows(out_dir / "summary.csv")) == {"mean", "variance"}
    fit = ppgen.load(out_dir / "fit.pt")
    assert (fit.num_chains, fit.num_draws) == (1, 50)


def test_fit_exact_fixes_continuous_sites_at_map(capsys, tmp_path):
    code, out, err = run(capsys, "fit", "GaussianMixture", "--data", "geyser", "--method", "exact",
                         "--param", "n_components=2", "--param", "covariance=diag",
                         "--num-samples", "20", "--out", str(tmp_path), "--no-progress")
    assert code == 0, err
    assert "MAP estimate first" in out and "log evidence" in out
    assert (tmp_path / "posterior.nc").is_file()


@pytest.mark.parametrize("argv, words", [
    (["--data", "old_faithful"], ["unknown dataset 'old_faithful'", "faithful", "geyser"]),
    (["--data", "missing/nowhere.csv"], ["missing/nowhere.csv", "no such file"]),
    (["--data", "faithful", "--columns", "eruptions,height"], ["'height'", "eruptions, waiting"]),
    (["--data", "eight_schools"], ["not a table"]),
])
def test_data_errors_exit_2_with_one_line(capsys, tmp_path, argv, words):
    code, out, err = run(capsys, "fit", "GaussianMixture", "--method", "map", "--param",
                         "n_components=2", "--out", str(tmp_path / "x"), "--no-progress", *argv)
    assert code == 2
    assert err.endswith("\n") and len(err.strip().splitlines()) == 1, err
    assert err.startswith("ppgen fit: error: ")
    assert "Traceback" not in err
    for word in words:
        assert word in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv, words", [
    (["Nope", "--method", "map"], ["unknown model 'Nope'", "GaussianMixture"]),
    (["GaussianMixture", "--method", "map"], ["--param n_components="]),
    (["GaussianMixture", "--method", "map", "--param", "n_component=2"], ["n_component", "n_components"]),
    (["PPCA", "--method", "exact", "--param", "latent_dim=1"], ["does not support Exact"]),
    (["ConjugateNormal", "--method", "map"], ["1-D", "--columns"]),
    (["ConjugateNormal", "--method", "svi", "--warmup", "5"], ["--warmup", "svi"]),
    (["ConjugateNormal", "--method", "nuts", "--chains", "0", "--columns", "waiting"], ["chains"]),
])
def test_model_and_method_errors_exit_2(capsys, tmp_path, argv, words):
    model, *rest = argv
    code, _, err = run(capsys, "fit", model, "--data", "faithful", "--out", str(tmp_path / "x"),
                       "--no-progress", *rest)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err


def test_usage_errors_return_codes(capsys):
    assert main([]) == 2
    assert main(["fit", "GaussianMixture", "--data", "faithful", "--method", "bogus",
                 "--out", "x"]) == 2
    assert main(["--version"]) == 0
    capsys.readouterr()


def test_demo_quick(capsys, tmp_path):
    out_dir = tmp_path / "report"
    code, out, err = run(capsys, "demo", "--quick", "--out", str(out_dir), "--no-progress")
    assert code == 0, err
    report = (out_dir / "report.md").read_text()
    assert report.startswith("# ppgen demo report")
    families = ppgen.registry.families()
    for name in families:
        assert f"## {name}" in report, name
    assert "Comparison (PSIS-LOO" in report and "| elpd |" in report
    pngs = sorted(p.name for p in (out_dir / "plots").glob("*.png"))
    assert pngs and "GaussianMixture_nuts_samples.png" in pngs
    with open(out_dir / "tables" / "fits.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["family"] for row in rows} == set(families)
    assert all(row["status"] == "ok" for row in rows)
    assert (out_dir / "tables" / "ConjugateNormal_compare.csv").is_file()
    assert "report:" in out


def test_console_script_runs_models():
    exe = shutil.which("ppgen")
    if exe is None:
        pytest.skip("the `ppgen` console script is not installed (pip install -e .)")
    result = subprocess.run([exe, "models"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "GaussianMixture" in result.stdout


def test_module_entry_point_runs_models():
    result = subprocess.run([sys.executable, "-m", "ppgen.cli", "models"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ConjugateNormal" in result.stdout


@pytest.mark.parametrize("blocked", ["file", "fit.pt folder"])
def test_fit_checks_out_before_fitting(capsys, tmp_path, monkeypatch, blocked):
    """A bad --out is found before any training, not after it."""
    out_dir = tmp_path / "out"
    if blocked == "file":
        out_dir.write_text("")
    else:
        (out_dir / "fit.pt").mkdir(parents=True)
    monkeypatch.setattr(ppgen, "fit", lambda *a, **k: pytest.fail("fitted before checking --out"))
    code, _, err = run(capsys, "fit", "RealNVP", "--data", "faithful", "--method", "svi", "--num-steps", "2",
                       "--out", str(out_dir), "--no-progress")
    assert code == 2
    assert "--out" in err and ("not a folder" in err or "fit.pt" in err), err


def test_fit_is_saved_before_anything_that_may_fail(capsys, tmp_path, monkeypatch):
    """Summarising fails (here: the ArviZ conversion): the trained fit is on disk all the same."""
    from ppgen.inference.result import Fit

    def broken(self, *args, **kwargs):
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(Fit, "to_arviz", broken)
    out_dir = tmp_path / "nvp"
    code, out, err = run(capsys, "fit", "RealNVP", "--data", "faithful", "--method", "svi", "--num-steps", "2",
                         "--out", str(out_dir), "--no-progress")
    assert code == 0, err
    assert "conversion failed" in out and "fit.pt" in out
    assert ppgen.load(out_dir / "fit.pt").losses


def test_sequence_family_reads_rows_as_time_steps(capsys, tmp_path):
    """earthquakes is [year, count]: one sequence of 107 counts, year read as the time index
    (said in the output), fitted to the two-regime rates hmmlearn finds (15.4 and 26.0)."""
    code, out, err = run(capsys, "fit", "PoissonHMM", "--data", "earthquakes",
                         "--method", "map", "--param", "n_states=2", "--out", str(tmp_path / "eq"), "--no-progress")
    assert code == 0, err
    assert "one sequence of 107 time steps" in out and "observed: count" in out
    assert "'year' read as the time index" in out
    fit = ppgen.load(tmp_path / "eq" / "fit.pt")
    rates = sorted(fit.program.generative.point_params()["rates"].tolist())
    assert rates == pytest.approx([15.4, 26.0], abs=0.2)


def test_sequence_family_errors_and_groups(capsys, tmp_path):
    code, _, err = run(capsys, "fit", "PoissonHMM", "--data", "earthquakes", "--columns", "year,count",
                       "--method", "map", "--param", "n_states=2", "--out", str(tmp_path / "a"), "--no-progress")
    assert code == 2 and "one value per time step" in err and "--columns" in err
    code, _, err = run(capsys, "fit", "GaussianMixture", "--data", "faithful", "--sequence-column", "waiting",
                       "--method", "map", "--out", str(tmp_path / "b"), "--no-progress")
    assert code == 2 and "--sequence-column" in err
    table = tmp_path / "runs.csv"
    table.write_text("run,t,value\n" + "".join(f"{r},{t},{(t * 7 + r) % 5}\n" for r in range(3) for t in range(30)))
    code, out, err = run(capsys, "fit", "PoissonHMM", "--data", str(table), "--sequence-column", "run",
                         "--method", "map", "--param", "n_states=2", "--out", str(tmp_path / "c"), "--no-progress")
    assert code == 0, err
    assert "3 sequences, one per value of 'run'" in out and "'t' read as the time index" in out


def test_summary_of_a_fit_without_draws_says_so():
    from ppgen.inference import SVI
    from ppgen.models import RealNVP

    model, data = RealNVP.example(seed=0)
    fit = ppgen.fit(model, data, SVI(num_steps=2), progress=False)
    with pytest.raises(ppgen.MethodError, match="RealNVP fitted by svi has no posterior draws to summarise"):
        fit.summary()


def test_misspelled_names_get_a_suggestion(capsys):
    code, _, err = run(capsys, "fit", "GausianMixture", "--data", "faithful", "--method", "map", "--out", "x")
    assert code == 2 and "did you mean 'GaussianMixture'?" in err
    code, _, err = run(capsys, "fit", "GaussianMixture", "--data", "faithfull", "--method", "map", "--out", "x")
    assert code == 2 and "did you mean 'faithful'?" in err
    code, _, err = run(capsys, "fit", "GaussianMixture", "--data", "faithful", "--param", "n_component=2",
                       "--method", "map", "--out", "x")
    assert code == 2 and "did you mean 'n_components'?" in err
    with pytest.raises(ppgen.ModelError, match="unknown model 'zzz'; registered"):  # nothing close: no guess
        ppgen.registry.model_class("zzz")
