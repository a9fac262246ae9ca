"""Compiled code only from the user's private cache (``ppgen.inference.mcmc.compile_cache``):
folders created ``0700``, another user's or an open folder refused, and a fit that meets
one compiles nothing, warns, and still samples."""

import logging
import os
import stat

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.inference import NUTS
from ppgen.inference.mcmc import compile_cache
from ppgen.inference.mcmc.fallback import Unsafe, attempt


def normal_mean(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_default_cache_is_created_private_under_ppgen_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PPGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    folder = compile_cache.use_private_cache()
    assert folder == tmp_path / "cache" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder)
    for path in (folder, folder.parent):
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o700


def test_inductors_own_default_is_not_taken_for_the_users_choice(tmp_path, monkeypatch):
    """Importing TorchInductor writes its shared ``<tmp>/torchinductor_<user>`` into
    TORCHINDUCTOR_CACHE_DIR; ppgen still caches in its private folder, while a folder the
    user did choose is kept."""
    import torch._inductor.runtime.cache_dir_utils as inductor_dirs

    monkeypatch.setenv("PPGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", inductor_dirs.default_cache_dir())
    assert compile_cache.inductor_default() == compile_cache.Path(inductor_dirs.default_cache_dir())
    assert compile_cache.use_private_cache() == tmp_path / "cache" / "inductor"
    assert inductor_dirs.cache_dir() == str(tmp_path / "cache" / "inductor")
    mine = tmp_path / "mine"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(mine))
    assert compile_cache.use_private_cache() == mine


def test_cache_root_follows_xdg_without_ppgen_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("PPGEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.cache_root() == tmp_path / "ppgen"


def test_another_users_folder_is_refused(tmp_path, monkeypatch):
    """The reproduction of the report: a cache folder created first by someone else (here:
    the folder's owner is not the uid ppgen runs as) is never used."""
    shared = tmp_path / "torchinductor_victim"
    shared.mkdir(mode=0o755)
    monkeypatch.setattr(compile_cache.os, "getuid", lambda: os.lstat(shared).st_uid + 1)
    with pytest.raises(Unsafe, match="belongs to another user"):
        compile_cache.private_directory(shared)


def test_open_folders_and_links_are_refused(tmp_path):
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    os.chmod(open_folder, 0o777)
    with pytest.raises(Unsafe, match="writable by other users"):
        compile_cache.private_directory(open_folder)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    with pytest.raises(Unsafe, match="not a directory"):
        compile_cache.private_directory(link)
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(Unsafe, match="cannot create|not a directory"):
        compile_cache.private_directory(afile)


def test_unsafe_and_failed_builds_are_warnings_refusals_info(caplog):
    def unsafe():
        raise Unsafe("a folder of someone else's")

    def broken():
        raise OSError("compiler crashed")

    def not_applicable():
        raise compile_cache.Unsafe.__mro__[1]("needs several chains")  # Refused

    with caplog.at_level(logging.INFO, logger="ppgen"):
        for build in (unsafe, broken, not_applicable):
            kernel, why = attempt(build, "accelerator not used ({})")
            assert kernel is None and why
    levels = [record.levelno for record in caplog.records]
    assert levels == [logging.WARNING, logging.WARNING, logging.INFO]
    assert "compiler crashed" in caplog.records[1].getMessage()


def test_fit_with_an_unsafe_cache_compiles_nothing_and_still_samples(tmp_path, monkeypatch, caplog):
    """A run long enough to compile, over a cache that is not the user's: ppgen warns naming the
    folder, loads no compiled code, and samples on the uncompiled potential."""
    shared = tmp_path / "torchinductor_shared"
    shared.mkdir(mode=0o700)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(shared))
    monkeypatch.setattr(compile_cache.os, "getuid", lambda: os.lstat(shared).st_uid + 1)
    y = torch.tensor([0.5, 1.5, 1.0, 0.2])
    with caplog.at_level(logging.INFO, logger="ppgen"):
        fit = ppgen.fit(normal_mean, {"y": y}, NUTS(num_samples=500, warmup=500, potential="auto"), seed=0,
                        progress=False)
    assert list(shared.iterdir()) == []  # nothing written to, or read from, the refused folder
    assert fit.posterior["mu"].shape == (2, 500)
    chosen = [r.getMessage() for r in caplog.records if r.getMessage().startswith("NUTS potential: ")]
    assert chosen and chosen[-1].startswith("NUTS potential: jit")  # 1000 transitions would have compiled
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(shared) in message and "another user" in message for message in warned), warned


def test_a_compiled_fit_uses_no_shared_precompiled_header(tmp_path, monkeypatch):
    """TorchInductor keeps precompiled headers under its shared ``<tmp>/torchinductor_<user>``
    whatever TORCHINDUCTOR_CACHE_DIR says; ppgen's compiles (the leaf and the C++
    transitions, from an empty private cache) precompile theirs in the private cache."""
    import functools

    import torch._inductor.codecache as codecache

    monkeypatch.setenv("PPGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    original, folders = codecache._precompile_header.__wrapped__, []

    def precompile(*args, **kwargs):
        folders.append(codecache._HEADER_DIR)
        return original(*args, **kwargs)

    monkeypatch.setattr(codecache, "_precompile_header", functools.cache(precompile))
    y = torch.tensor([0.5, 1.5, 1.0, 0.2, 0.9])
    fit = ppgen.fit(normal_mean, {"y": y}, NUTS(num_samples=30, warmup=30, potential="compiled"), seed=0,
                    progress=False)
    assert fit.path["potential"] == "compiled" and fit.path["transitions"] == "c++", fit.path
    assert any((tmp_path / "cache" / "inductor").iterdir()) and any((tmp_path / "cache" / "nuts").iterdir())
    assert folders and set(folders) == {str(tmp_path / "cache" / "inductor" / "precompiled_headers")}
    assert codecache._HEADER_DIR == codecache.os.path.join(codecache.default_cache_dir(), "precompiled_headers")
