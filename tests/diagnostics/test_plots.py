"""Plots return matplotlib Figures built from real fits; ``save_figure`` writes PNGs."""

import matplotlib

matplotlib.use("Agg")

import types  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import ppgen  # noqa: E402
from ppgen.diagnostics import arviz_io, plot_loss, plot_ppc, plot_samples, plot_trace, save_figure  # noqa: E402
from ppgen.errors import DataError, ModelError  # noqa: E402
from ppgen.inference import SVI  # noqa: E402
from ppgen.models import ConjugateNormal  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    content = open(path, "rb").read()
    assert content.startswith(PNG_SIGNATURE) and len(content) > 1000


def test_plot_loss_of_svi(normal_svi, tmp_path):
    fig = plot_loss(normal_svi)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "loss (nats)"
    assert ax.get_xscale() == "linear"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), normal_svi.losses)
    _assert_png(save_figure(fig, tmp_path / "loss.png"))


def test_plot_loss_marks_held_out_losses_and_log_scales_long_runs():
    fake = types.SimpleNamespace(losses=list(np.linspace(10.0, 1.0, 5000)),
                                 val_losses=[(1000, 5.0), (2000, 3.0), (3000, 2.5)])
    fig = plot_loss(fake)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    markers = ax.lines[1]
    assert markers.get_marker() == "o"
    np.testing.assert_array_equal(markers.get_xdata(), [1000, 2000, 3000])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["training", "held-out"]


def test_plot_loss_with_validation_split(tmp_path):
    model, data = ConjugateNormal.example()
    fit = ppgen.fit(model, data, SVI(num_steps=60, lr=0.05, validation=0.2, eval_every=20,
                                     num_posterior_samples=10), progress=False)
    fig = plot_loss(fit)
    assert len(fig.axes[0].lines) == 2 and len(fit.val_losses) > 0


def test_plot_loss_into_given_axes(normal_svi):
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_loss(normal_svi, ax=ax) is fig


def test_plot_loss_refuses_mcmc(normal_nuts):
    with pytest.raises(ModelError, match="no training losses"):
        plot_loss(normal_nuts)


def test_plot_trace(normal_nuts, tmp_path):
    fig = plot_trace(normal_nuts)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4  # two sites, density and trace each
    path = save_figure(fig, tmp_path / "sub" / "trace.png")
    _assert_png(path)
    assert not plt.fignum_exists(fig.number)  # closed
    assert len(plot_trace(normal_nuts, var_names=["mean"]).axes) == 2
    plt.close("all")


def test_plot_samples_one_dimensional(normal_nuts, tmp_path):
    samples = normal_nuts.sample(300, seed=0)
    fig = plot_samples(samples, normal_nuts.data)
    ax = fig.axes[0]
    assert len(ax.patches) > 0
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["data", "model samples"]
    _assert_png(save_figure(fig, tmp_path / "hist.png"))


def test_plot_samples_two_dimensional(gmm_nuts):
    samples = gmm_nuts.sample(200, seed=0)
    fig = plot_samples(samples, gmm_nuts.data.numpy())
    ax = fig.axes[0]
    assert len(ax.collections) == 2
    np.testing.assert_allclose(ax.collections[0].get_offsets(), gmm_nuts.data.numpy())


def test_plot_samples_flattens_images_and_checks_dims():
    gen = torch.Generator().manual_seed(0)
    images, data = torch.rand(10, 1, 4, 4, generator=gen), np.random.default_rng(0).random((12, 1, 4, 4))
    fig = plot_samples(images, data, dims=(0, 5))
    np.testing.assert_allclose(fig.axes[0].collections[1].get_offsets()[:, 1], images.reshape(10, -1)[:, 5])
    with pytest.raises(DataError, match="dims"):
        plot_samples(images, data, dims=(0, 16))
    with pytest.raises(DataError, match="features"):
        plot_samples(torch.rand(5, 3), np.zeros((5, 2)))


def test_plot_ppc(normal_nuts, tmp_path):
    fig = plot_ppc(normal_nuts)
    assert isinstance(fig, Figure)
    _assert_png(save_figure(fig, tmp_path / "ppc.png"))
    fig, ax = plt.subplots()
    if arviz_io.arviz_major() < 1:
        assert plot_ppc(normal_nuts, ax=ax) is fig
    else:  # ArviZ 1.x lays out its own figure: a given Axes is refused, clearly (not yet drawn by ppgen)
        with pytest.raises(ValueError, match="ax=None"):
            plot_ppc(normal_nuts, ax=ax)
    plt.close("all")


def test_plot_ppc_plain_program(schools_nuts):
    fig = plot_ppc(schools_nuts)
    assert isinstance(fig, Figure) and len(fig.axes) >= 1
    plt.close("all")
