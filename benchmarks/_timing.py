"""Shared timing helpers for the benchmarks (not part of the library).

Conventions: every timed call ends with ``jax.block_until_ready``; compilation is done
ahead of time (``jit(...).lower(...).compile()``) and reported separately, so no timed call
compiles; ratios come from calls interleaved in one loop (``time_interleaved``), medians over
repeats, because the machines these run on are shared and noisy.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import numpy as np

from curvdyn import io


def compiled(fn: Callable, *args, static: dict | None = None):
    """AOT-compile ``jit(fn)`` for ``args``; return ``(callable, compile_seconds)``.

    ``static`` holds keyword arguments baked into the compiled function.
    """
    static = static or {}
    t0 = time.perf_counter()
    exe = jax.jit(lambda *a: fn(*a, **static)).lower(*args).compile()
    return (lambda: exe(*args)), time.perf_counter() - t0


def run_once(call: Callable) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    return time.perf_counter() - t0


def time_interleaved(calls: dict[str, Callable], repeats: int, *, budget_s: float | None = None) -> dict:
    """Median wall time of each zero-argument call, the calls interleaved in each repeat.

    Stops early (after at least one full round) once ``budget_s`` seconds have passed.
    Returns ``{name: {"median": s, "min": s, "n": k}}``.
    """
    times: dict[str, list[float]] = {k: [] for k in calls}
    start = time.perf_counter()
    for r in range(repeats):
        for name, call in calls.items():
            times[name].append(run_once(call))
        if budget_s is not None and time.perf_counter() - start > budget_s and r >= 0:
            break
    return {k: {"median": statistics.median(v), "min": min(v), "n": len(v)} for k, v in times.items()}


def rel_err(x, ref) -> float:
    """``‖x − ref‖ / ‖ref‖`` over all layers (float64 on the host)."""
    a = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in x])
    b = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in ref])
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def machine_info() -> dict:
    dev = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(getattr(dev, "device_kind", dev)),
        "cpu_count": os.cpu_count(),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
    }


def fmt_s(x) -> str:
    """Seconds, compactly."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.2f} ms"
    return f"{x * 1e6:.0f} µs"


def fmt_e(x) -> str:
    return "—" if x is None else f"{x:.1e}"


class JsonLog:
    """A JSON document rewritten (atomically, :mod:`curvdyn.io`) after every update: a crash,
    timeout or kill keeps what ran, as a complete file. It opens with the run record."""

    def __init__(self, path: str, header: dict):
        self.path = path
        self.doc = {"run": io.run_record(seeds=[], resolution=None), **header}
        self.doc.setdefault("rows", [])
        self.flush()

    def add(self, row: dict) -> None:
        self.doc["rows"].append(row)
        self.flush()

    def set(self, key: str, value) -> None:
        self.doc[key] = value
        self.flush()

    def flush(self) -> None:
        io.write_text(self.path, json.dumps(self.doc, indent=1, default=_jsonable) + "\n")


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
