"""Quick variants of the experiments, computed once per test session and sent through the
same file round trip as ``curvdyn reproduce`` (``np.savez``/``np.load`` for the data, JSON for
the configuration), so the tests make claims and figures from reloaded files only."""

from __future__ import annotations

import io
import json

import numpy as np

from curvdyn import experiments

_CACHE: dict = {}


def round_trip(data: dict, config: dict) -> tuple[dict, dict]:
    """``(data, config)`` after an in-memory ``np.savez``/``np.load`` and a JSON round trip."""
    buf = io.BytesIO()
    np.savez(buf, **data)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        loaded = {k: f[k] for k in f.files}
    return loaded, json.loads(json.dumps(config))


def run(name: str):
    """``(module, data, config, loaded_data, loaded_config)`` of the quick variant, computed once."""
    if name not in _CACHE:
        module = experiments.get(name)
        data, config = module.compute(quick=True, seed=0, progress=False)
        _CACHE[name] = (module, data, config) + round_trip(data, config)
    return _CACHE[name]


def forget(names) -> None:
    """Drop cached runs (frees their memory once a test module is done with them)."""
    for name in names:
        _CACHE.pop(name, None)
