"""One test over every registered family: the whole protocol, end to end."""

import math

import pytest
import torch

import ppgen
from ppgen import registry
from ppgen.diagnostics import arviz_io
from ppgen.inference import HMC, MAP, NUTS, SVI, Adversarial, ContrastiveDivergence, Exact

TINY = {"svi": SVI(num_steps=20, num_posterior_samples=20),
        "map": MAP(num_steps=20, max_iter=20),
        "nuts": NUTS(num_samples=15, warmup=15, chains=1),
        "hmc": HMC(num_samples=15, warmup=15, chains=1, num_steps=4),
        "exact": Exact(num_samples=20),
        "cd": ContrastiveDivergence(num_epochs=2, batch_size=16),
        "adversarial": Adversarial(num_steps=5, batch_size=8)}

FAMILIES = sorted(registry.families())


def _run_protocol(name, tmp_path, device="cpu"):
    cls = registry.model_class(name)
    model, data = cls.example(seed=0)
    model.to(device)
    data = data.to(device)
    assert cls.log_prob_kind in ("exact", "bound", "none")
    assert set(cls.methods) <= set(TINY)
    fits = {}
    point_estimate = not model.global_sites()  # neural families: the weights are the estimate
    has_density = cls.log_prob_kind != "none"
    for method_name in cls.methods:
        fit = ppgen.fit(model, data, TINY[method_name], seed=0, progress=False)
        assert fit.posterior or point_estimate, method_name
        for value in fit.posterior.values():
            assert value.dim() >= 2
        fits[method_name] = fit
    samples = model.sample(5)
    assert samples.shape[0] == 5 and samples.device.type == torch.device(device).type
    if cls.log_prob_kind != "none":
        logp = model.log_prob(data)
        assert logp.shape == (data.shape[0],) and bool(torch.isfinite(logp).all())
    fit = fits[cls.methods[0]]
    idata = fit.to_arviz()
    groups = arviz_io.group_names(idata)
    assert ("posterior" in groups) != point_estimate
    assert ("log_likelihood" in groups) == has_density
    for group in set(groups) & {"posterior", "observed_data", "posterior_predictive", "log_likelihood"}:
        for name, value in idata[group].data_vars.items():  # dimensions named by concept
            assert not any("_dim_" in d for d in value.dims), (group, name, value.dims)
    assert fit.sample(4).shape[0] == 4
    if has_density:
        assert bool(torch.isfinite(fit.log_prob(data[:3])).all())
    else:
        with pytest.raises(ppgen.ModelError, match="density"):
            model.log_prob(data)
    path = tmp_path / f"{name}.pt"
    fit.save(path)
    loaded = ppgen.load(path)
    assert type(loaded.model) is cls
    for key, value in fit.posterior.items():
        assert torch.equal(loaded.posterior[key].to(value.device), value)
    if has_density:
        torch.manual_seed(0)  # bounds (IWAE) draw samples: the same draws on both sides
        expected = model.log_prob(data).cpu()
        torch.manual_seed(0)
        assert torch.allclose(loaded.model.log_prob(data.cpu()), expected)
    else:
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.model.state_dict()[key], value.cpu())
    return fits


@pytest.mark.parametrize("name", FAMILIES)
def test_protocol(name, tmp_path):
    _run_protocol(name, tmp_path)


@pytest.mark.parametrize("name", FAMILIES)
def test_unsupported_method_is_refused(name):
    cls = registry.model_class(name)
    model, data = cls.example()
    missing = [m for m in TINY if m not in cls.methods]
    for method_name in missing:
        with pytest.raises(ppgen.MethodError, match=cls.__name__):
            ppgen.fit(model, data, TINY[method_name])


@pytest.mark.parametrize("name", FAMILIES)
def test_to_float64_moves_everything(name):
    cls = registry.model_class(name)
    model, data = cls.example()
    model.initialize(data.double() if data.is_floating_point() else data)
    model = model.double()
    assert all(t.dtype == torch.float64 for t in model.buffers() if t.is_floating_point())
    assert all(t.dtype == torch.float64 for t in model.parameters() if t.is_floating_point())
    if cls.log_prob_kind != "none":
        assert model.log_prob(data).dtype == torch.float64
        assert math.isfinite(model.score(data))


@pytest.mark.cuda
@pytest.mark.parametrize("name", FAMILIES)
def test_protocol_on_cuda(name, tmp_path):
    _run_protocol(name, tmp_path, device="cuda")
