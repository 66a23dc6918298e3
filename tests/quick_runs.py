"""Quick variants of the experiments, computed once per test session and sent through the
same file round trip as ``curvdyn reproduce`` (``np.savez``/``np.load`` for the data, JSON for
the configuration), so the tests make claims and figures from reloaded files only."""

from __future__ import annotations

import io
import json

import numpy as np

from curvdyn import experiments
from curvdyn.experiments.base import Config
from curvdyn.io import json_text

_CACHE: dict = {}


def round_trip(data: dict, config: Config) -> tuple[dict, Config]:
    """``(data, config)`` after an in-memory ``np.savez``/``np.load`` and a JSON round trip of
    ``config.as_json()`` (strict JSON, as ``config.json`` is written), rebuilt as a typed Config."""
    buf = io.BytesIO()
    np.savez(buf, **data)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        loaded = {k: f[k] for k in f.files}
    text = json_text(config.as_json())
    return loaded, Config.from_json(type(config.settings), json.loads(text))


def run(name: str):
    """``(module, data, config, loaded_data, loaded_config)`` of the quick variant (``module.QUICK``),
    computed once; the configs are :class:`curvdyn.experiments.base.Config`."""
    if name not in _CACHE:
        module = experiments.get(name)
        data, outcome = module.compute(module.QUICK, seed=0, progress=False)
        config = Config(module.QUICK, outcome)
        _CACHE[name] = (module, data, config) + round_trip(data, config)
    return _CACHE[name]


def forget(names) -> None:
    """Drop cached runs (frees their memory once a test module is done with them)."""
    for name in names:
        _CACHE.pop(name, None)


def check_plain_data(data: dict, config: Config, loaded: dict, loaded_config: Config) -> None:
    """The data are non-empty plain (non-object) arrays under string keys, unchanged by the file round
    trip, and the configuration is JSON: the typed settings come back equal (and hashable), the
    outcome as JSON."""
    assert data and all(isinstance(k, str) and k and not k.startswith("__") for k in data)
    for key, value in data.items():
        arr = np.asarray(value)
        assert arr.dtype != object, key
        np.testing.assert_array_equal(loaded[key], arr)
    assert loaded_config.settings == config.settings and hash(loaded_config.settings) == hash(config.settings)
    assert json.loads(json_text(loaded_config.as_json())) == json.loads(json_text(config.as_json()))


def check_claims(name: str, allowed_failures=None) -> list:
    """The claims made from the reloaded files: unique keys, complete text, finite numbers, JSON,
    nothing blocking (only documented deviations may fail; with ``allowed_failures``, only those),
    and equal to the claims from the in-memory data. Returns them."""
    from curvdyn.experiments.base import Claim

    module, data, config, loaded, loaded_config = run(name)
    claims = module.claims(loaded, loaded_config)
    assert claims and all(isinstance(c, Claim) for c in claims)
    keys = [c.key for c in claims]
    assert len(keys) == len(set(keys)), "claim keys must be unique"
    for c in claims:
        assert c.statement and c.threshold and c.detail, c.key
        assert np.isfinite(c.measured), c.key
        json.dumps(c.as_dict())
    blocking = [(c.key, c.measured, c.threshold, c.detail) for c in claims if c.blocking]
    assert not blocking, blocking
    failed = {c.key for c in claims if not c.passed}
    assert allowed_failures is None or failed <= set(allowed_failures), [
        (c.key, c.measured, c.threshold) for c in claims if not c.passed
    ]
    direct = module.claims(data, config)
    assert [c.as_dict() for c in direct] == [c.as_dict() for c in claims]
    return claims
