"""The GAN family: the generator as a Pyro program, packing, the ready networks,
no density, save/load with ready and custom networks, clear errors."""

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Predictive
from torch import nn

import ppgen
from ppgen.inference import Adversarial
from ppgen.models import GAN
from ppgen.nn.gan_networks import ConvDiscriminator, ConvGenerator, Maxout, MLPDiscriminator, MLPGenerator

TINY = dict(data_dim=2, generator_hidden=(8, 8), discriminator_hidden=(8,), maxout_pieces=2)


def _ring(n=64, seed=0):
    return ppgen.datasets.ring(n, generator=torch.Generator().manual_seed(seed))


class MyGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, z):
        return self.net(z)


class MyDiscriminator(nn.Module):
    def __init__(self, pack=1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * pack, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x)


# ---------------------------------------------------------------- the Pyro program
def test_conditioned_program_returns_the_generator_of_its_z():
    gan = GAN(**TINY, latent_dim=3)
    gan.initialize(None, torch.Generator().manual_seed(1))
    z = torch.randn(5, 3)
    trace = poutine.trace(pyro.condition(gan.model, data={"z": z})).get_trace(n=5)
    gan.eval()  # the program runs G in evaluation mode (batch norm at running statistics)
    assert torch.equal(trace.nodes["x"]["value"], gan.generate(z))
    assert torch.equal(trace.nodes["z"]["value"], z)
    assert trace.nodes["z"]["fn"].event_shape == (3,) and trace.nodes["x"]["infer"]["_deterministic"]


def test_program_changes_no_state_and_ignores_data_values():
    gan, data = GAN.example()
    before = {k: v.clone() for k, v in gan.state_dict().items()}
    pyro.set_rng_seed(3)
    x1 = gan.model(data)
    pyro.set_rng_seed(3)
    x2 = gan.model(data + 100.0)  # data are not observed: only their number of rows counts
    assert x1.shape == data.shape and torch.equal(x1, x2)
    assert all(torch.equal(v, gan.state_dict()[k]) for k, v in before.items())  # running stats untouched
    assert gan.model(data, subsample_size=8).shape == (8, 2)


def test_predictive_draws_z_and_x_equal_to_g_of_z():
    gan = GAN(**TINY)
    gan.initialize(None, torch.Generator().manual_seed(0))
    draws = Predictive(gan.model, num_samples=4)(n=6)
    assert draws["z"].shape == (4, 6, 2) and draws["x"].shape == (4, 6, 2)
    gan.eval()
    assert torch.allclose(draws["x"], gan.generate(draws["z"]))  # leading dims are flattened and restored


def test_sample_is_the_program_without_a_trace():
    gan, _ = GAN.example()
    gan.initialize(None, torch.Generator().manual_seed(0))
    a = gan.sample(10, generator=torch.Generator().manual_seed(5))
    z = torch.randn(10, 2, generator=torch.Generator().manual_seed(5))
    x = poutine.trace(pyro.condition(gan.model, data={"z": z})).get_trace(n=10).nodes["x"]["value"]
    assert a.shape == (10, 2) and torch.equal(a, x) and gan.generator.training  # mode restored
    with pytest.raises(ppgen.DataError, match="n must be"):
        gan.sample(0)


def test_log_prob_says_there_is_no_density():
    gan, data = GAN.example()
    for call in (lambda: gan.log_prob(data), lambda: gan.log_likelihood(data, {}), lambda: gan.score(data)):
        with pytest.raises(ppgen.ModelError, match="density"):
            call()
    assert GAN.log_prob_kind == "none" and GAN.methods == ("adversarial",) and gan.global_sites() == ()


# ---------------------------------------------------------------- packing and networks
def test_packing_joins_consecutive_samples():
    gan = GAN(**TINY, pack=3)
    x = torch.arange(12.0).reshape(6, 2)
    packed = gan.packed(x)
    assert packed.shape == (2, 6) and torch.equal(packed[1], torch.tensor([6.0, 7, 8, 9, 10, 11]))
    assert gan.discriminator.net[0].linear.in_features == 6  # D's input is pack * data_dim
    assert gan.discriminate(x).shape == (2,)
    with pytest.raises(ppgen.DataError, match="pack=3"):
        gan.packed(x[:5])
    images = GAN("conv", "conv", image_shape=(1, 5, 5), channels=(4, 8), pack=2, latent_dim=3)
    pics = torch.rand(4, 1, 5, 5)
    assert images.packed(pics).shape == (2, 2, 5, 5)  # images pack along the channels
    assert torch.equal(images.packed(pics)[1, 1], pics[3, 0])
    assert images.discriminate(pics).shape == (2,)


@pytest.mark.parametrize("shape", [(1, 7, 7), (3, 8, 6)])
def test_conv_pair_keeps_image_shapes(shape):
    gen, dis = ConvGenerator(4, shape, channels=(4, 8)), ConvDiscriminator(shape, channels=(4, 8), pack=2)
    out = gen(torch.randn(5, 4))
    assert out.shape == (5,) + shape and bool(((out > 0) & (out < 1)).all())  # sigmoid pixels
    assert dis(torch.rand(3, 2 * shape[0], *shape[1:])).shape == (3,)


def test_conv_gan_trains_on_images_with_the_gradient_penalty():
    gan = GAN("conv", "conv", image_shape=(1, 8, 8), channels=(4, 8), latent_dim=4, pack=2)
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    fit = ppgen.fit(gan, images, Adversarial(num_steps=3, batch_size=4, loss="wasserstein"), progress=False)
    assert len(fit.losses) == 3 and all(torch.isfinite(torch.tensor(fit.losses)))
    samples = gan.sample(5)
    assert samples.shape == (5, 1, 8, 8) and bool(((samples > 0) & (samples < 1)).all())


def test_ready_mlp_pair_is_pacgans_architecture():
    gen, dis = MLPGenerator(2, 2), MLPDiscriminator(4)  # the defaults; D packs two 2-D samples
    linears = [m for m in gen if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2, 400)] + [(400, 400)] * 3 + [(400, 2)]
    assert [m.bias is None for m in linears] == [True] * 4 + [False]  # batch norm replaces the biases
    assert sum(isinstance(m, nn.BatchNorm1d) for m in gen) == 4
    maxouts = [m for m in dis.modules() if isinstance(m, Maxout)]
    assert [(m.linear.in_features, m.out_features, m.pieces) for m in maxouts] == \
        [(4, 200, 5), (200, 200, 5), (200, 200, 5)]
    unit = Maxout(2, 1, pieces=3)
    x = torch.randn(4, 2)
    assert torch.equal(unit(x)[:, 0], unit.linear(x).max(-1).values)


def test_initialize_redraws_ready_weights_from_the_seed_only():
    torch.manual_seed(1)
    a = GAN(**TINY)
    torch.manual_seed(2)
    b = GAN(**TINY)
    for gan in (a, b):
        gan.initialize(None, torch.Generator().manual_seed(7))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    weight = a.generator[0].weight.detach()
    assert abs(float(weight.std()) - 0.02) < 0.01  # N(0, 0.02^2), 16 values: sd of the sd ~0.004
    custom = GAN(MyGenerator(), MyDiscriminator(), data_dim=2, latent_dim=3)
    before = {k: v.clone() for k, v in custom.state_dict().items() if k != "initialized"}
    custom.initialize(None, torch.Generator().manual_seed(7))
    assert all(torch.equal(v, custom.state_dict()[k]) for k, v in before.items())  # yours are kept


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, match", [
    (dict(generator="rnn", data_dim=2), "generator='rnn'"),
    (dict(discriminator=3, data_dim=2), "discriminator=3"),
    (dict(), "exactly one of data_dim"),
    (dict(data_dim=2, image_shape=(1, 4, 4)), "exactly one of data_dim"),
    (dict(data_dim=0), "data_dim"),
    (dict(image_shape=(4, 4)), "image_shape"),
    (dict(data_dim=2, pack=0), "pack"),
    (dict(data_dim=2, latent_dim=-1), "latent_dim"),
    (dict(data_dim=2, generator_hidden=()), "generator_hidden"),
    (dict(data_dim=2, maxout_pieces=0), "maxout_pieces"),
    (dict(data_dim=2, init_std=0), "init_std"),
    (dict(generator="conv", data_dim=2), "image_shape"),
    (dict(data_dim=2, output="relu"), "output"),
    (dict(data_dim=2, activation="swish"), "activation"),
    (dict(generator={"custom": "MyGenerator"}, data_dim=2), "model=GAN"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ppgen.ModelError, match=match):
        GAN(**kwargs)


def test_bad_data_are_named():
    gan = GAN(**TINY)
    with pytest.raises(ppgen.DataError, match=r"expected shape \(N, 2\)"):
        ppgen.fit(gan, torch.zeros(10, 3), Adversarial(num_steps=1), progress=False)


# ---------------------------------------------------------------- save and load
def test_save_load_ready_networks(tmp_path):
    gan, data = GAN.example()
    fit = ppgen.fit(gan, data, Adversarial(num_steps=4, batch_size=8), seed=0, progress=False)
    fit.save(tmp_path / "gan.pt")
    loaded = ppgen.load(tmp_path / "gan.pt")
    assert isinstance(loaded.model, GAN) and loaded.model.get_config() == gan.get_config()
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in gan.state_dict().items())
    assert loaded.losses == fit.losses and loaded.extras == fit.extras
    assert len(fit.extras["discriminator_losses"]) == 4
    assert loaded.method == fit.method and loaded.method.betas == (0.5, 0.999)
    same = dict(generator=torch.Generator().manual_seed(3))
    assert torch.equal(loaded.model.sample(5, **same), gan.sample(5, generator=torch.Generator().manual_seed(3)))


def test_save_load_custom_networks_needs_the_model(tmp_path):
    torch.manual_seed(0)
    gan = GAN(MyGenerator(), MyDiscriminator(pack=2), data_dim=2, latent_dim=3, pack=2)
    fit = ppgen.fit(gan, _ring(), Adversarial(num_steps=3, batch_size=8), seed=0, progress=False)
    assert gan.get_config()["generator"] == {"custom": "MyGenerator"}
    path = tmp_path / "custom.pt"
    fit.save(path)
    with pytest.raises(ppgen.CheckpointError, match=r"model=GAN\(my_generator"):
        ppgen.load(path)
    fresh = GAN(MyGenerator(), MyDiscriminator(pack=2), data_dim=2, latent_dim=3, pack=2)
    loaded = ppgen.load(path, model=fresh)
    assert loaded.model is fresh
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in gan.state_dict().items())
    other = GAN(MyGenerator(), MyDiscriminator(pack=3), data_dim=2, latent_dim=3, pack=3)
    with pytest.raises(ppgen.CheckpointError, match="pack"):
        ppgen.load(path, model=other)
