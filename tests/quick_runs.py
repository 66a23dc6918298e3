"""The quick variants of the experiments, made once per test session by the command line itself
(``curvdyn reproduce --quick --check``: worker processes, the data and configuration files, claims,
figures and report), and read back from those files, so the tests make claims and figures from
saved files only. The experiment tests and ``test_reproduce`` share the one run: computing the
quick experiments a second time in the test process cost as much again (~2-4 min on 2 cores)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np

from curvdyn import experiments, reproduce
from curvdyn.experiments.base import Config
from curvdyn.io import json_text, write_json

_RUN: dict = {}


def reproduce_once(out: Path) -> dict:
    """Run ``curvdyn reproduce --quick --check --seed 0`` into ``out`` once per session (the
    conftest's ``quick_reproduce`` fixture calls this); later calls return the first run's
    ``{"out", "code", "wall"}``."""
    if not _RUN:
        from curvdyn.cli import main

        start = time.perf_counter()
        code = main(["reproduce", "--quick", "--check", "--seed", "0", "--no-progress", "--out", str(out)])
        _RUN.update(out=Path(out), code=code, wall=time.perf_counter() - start)
    return _RUN


def reproduce_shared(out: Path) -> dict:
    """:func:`reproduce_once` shared by the processes of one pytest-xdist session: the first process
    to take an exclusive lock beside ``out`` makes the run and writes its exit code and wall time to
    ``out/../reproduce-quick.json``; the others block on the lock, then read that file."""
    import fcntl

    if _RUN:
        return _RUN
    out.parent.mkdir(parents=True, exist_ok=True)
    result = out.parent / "reproduce-quick.json"
    with open(out.parent / "reproduce-quick.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if result.exists():
            done = json.loads(result.read_text())
            _RUN.update(out=Path(out), code=done["code"], wall=done["wall"])
        else:
            out.mkdir()
            reproduce_once(out)
            write_json(result, {"code": _RUN["code"], "wall": _RUN["wall"]})  # whole or not at all
    return _RUN


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
    """``(module, data, config, loaded_data, loaded_config)`` of the quick variant (``module.QUICK``)
    from the session's reproduce run: ``data``/``config`` as its files hold them, ``loaded_*`` after
    one more file round trip (what a re-plot of a copied result reads)."""
    if not _RUN:
        raise RuntimeError("no quick reproduce run yet: use the `quick_reproduce` fixture (tests/conftest.py)")
    module = experiments.get(name)
    exp_dir = _RUN["out"] / name
    data = reproduce.load_data(exp_dir / reproduce.DATA_FILE)
    config = reproduce.load_config(module, reproduce.read_json(exp_dir / reproduce.CONFIG_FILE))
    assert config.settings == module.QUICK, f"{name}: the session's run is not the quick variant"
    return (module, data, config) + round_trip(data, config)


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
    and equal to the claims the run itself wrote (``claims.json``). Returns them."""
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
    saved = reproduce.read_json(_RUN["out"] / name / reproduce.CLAIMS_FILE)["claims"]
    assert saved == json.loads(json_text([c.as_dict() for c in claims]))
    return claims
