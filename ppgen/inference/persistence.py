"""Fits read back from files: :func:`load`, the inverse of :meth:`Fit.save`."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import torch

from .. import registry
from ..errors import CheckpointError, MethodError, ModelError
from ..model import GenerativeModel
from .checkpoint import safe_load
from .methods import GUIDES, METHODS
from .program import Program
from .result import Fit


def _rebuild_method(name, config):
    if name not in METHODS:
        raise CheckpointError(f"unknown inference method {name!r}")
    cls = METHODS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    kept = {k: v for k, v in config.items() if k in fields and k != "params"}
    if "guide" in kept and kept["guide"] not in GUIDES:
        del kept["guide"]  # a callable guide is stored by name only
    if not isinstance(kept.get("validation"), (float, type(None))):
        del kept["validation"]
    return cls(**kept)


def load(path: str | os.PathLike, model: Any = None) -> Fit:
    """Restore a fit written by :meth:`Fit.save`.

    ``model`` is needed for fits of plain Pyro programs (a function cannot be
    stored safely); for ``GenerativeModel`` fits the model is rebuilt from its
    registered class and configuration, or, when ``model`` is an instance of the
    saved class with the saved configuration (a GAN built on your own networks,
    which a file cannot rebuild), the saved state is loaded into it.
    """
    payload = safe_load(path, "fit")
    _check_payload(path, payload)
    try:
        meta = json.loads(payload["meta"])
        if not isinstance(meta, dict):
            raise TypeError("the metadata is not a dict")
        missing = [key for key in META_KEYS if key not in meta]
        if missing:
            raise KeyError(", ".join(missing))
        method = _rebuild_method(meta["method"], meta["method_config"])
    except (KeyError, TypeError, ValueError, MethodError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: damaged ppgen fit metadata ({type(exc).__name__}: {exc})") from None
    if meta["model_class"] is not None:
        generative = _saved_model(path, meta, model)
        state = payload["model_state"]
        for key, value in state.items():
            if key.startswith("point."):
                generative.point.set(key[len("point."):], value)
        try:
            generative.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: the saved weights do not fit the model: {str(exc)[:300]}") from None
        names = meta.get("feature_names_in")  # a DataFrame's columns: ArviZ's feature coordinates
        generative.feature_names_in_ = [str(n) for n in names] if isinstance(names, list) else None
        program = Program(model=generative.model, kwargs=dict(payload["data"]), generative=generative)
        program.analyse(at=generative.point.as_dict())
    else:
        if model is None or not callable(model):
            raise CheckpointError(f"{path}: holds a fit of the plain Pyro program "
                                  f"{meta['program']!r}; pass it as load(path, model=...)")
        kwargs = {**meta["data_extra"], **payload["data"]}
        program = Program.build(model, kwargs)
    extras = dict(meta.get("extras") or {})
    for key, value in (("val_losses", meta["val_losses"]), ("log_evidence", meta["log_evidence"]),
                       ("marginals", payload["marginals"]), ("map_assignment", payload["map_assignment"])):
        if value is not None and value != [] and value != {}:
            extras[key] = value
    return Fit(program=program, method=method, posterior=payload["posterior"], params=payload["params"],
               losses=meta["losses"], sample_stats=payload["sample_stats"], timings=meta["timings"],
               seed=meta["seed"], extras=extras)


#: What a fit file holds besides its header: its name, and the type of each part (the
#: tensor maps hold tensors by name).
PARTS = {"meta": str, "model_state": dict, "posterior": dict, "params": dict, "sample_stats": dict,
         "marginals": dict, "map_assignment": dict, "data": dict}
#: The metadata every fit file has.
META_KEYS = ("method", "method_config", "model_class", "model_config", "program", "losses", "val_losses",
             "timings", "log_evidence", "seed", "data_extra")


def _check_payload(path, payload):
    """Refuse a fit file whose parts are missing or of the wrong kind, naming the part."""
    for key, kind in PARTS.items():
        if key not in payload:
            raise CheckpointError(f"{path}: damaged ppgen fit: it has no {key!r}")
        part = payload[key]
        if not isinstance(part, kind):
            raise CheckpointError(f"{path}: damaged ppgen fit: {key!r} is a {type(part).__name__}, "
                                  f"not a {kind.__name__}")
        if kind is dict:
            bad = [name for name, value in part.items() if not (isinstance(name, str) and torch.is_tensor(value))]
            if bad:
                raise CheckpointError(f"{path}: damaged ppgen fit: {key!r} holds {bad[0]!r}, which is not "
                                      "a named tensor")


def _saved_model(path, meta, model):
    """The model to restore into: ``model`` when it is a GenerativeModel instance
    (checked against the saved class and configuration), else a new one built from
    the saved configuration."""
    name, config = meta["model_class"], meta["model_config"]
    if isinstance(model, GenerativeModel):
        if type(model).__name__ != name:
            raise CheckpointError(f"{path}: holds a fit of {name}, not of the given {type(model).__name__}")
        given = json.loads(json.dumps(model.get_config()))
        differ = sorted(k for k in set(given) | set(config) if given.get(k) != config.get(k))
        if differ:
            raise CheckpointError(f"{path}: the given {name} differs from the saved one in "
                                  + ", ".join(f"{k} ({given.get(k)!r}, saved {config.get(k)!r})" for k in differ))
        return model
    try:
        cls = registry.model_class(name)
        if not isinstance(config, dict):
            raise TypeError(f"the configuration is a {type(config).__name__}, not a dict")
        return cls(**config)
    except (ModelError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the saved {name!r} from its configuration ({exc}); "
                              "pass the model as load(path, model=...)") from None
