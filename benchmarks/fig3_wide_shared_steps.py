"""The widened Fig. 3 trajectory, matrix-free against eigh on one shared step sequence.

    python benchmarks/fig3_wide_shared_steps.py [--n 32] [--steps 0:] [--from-t T] [--svd] [--out ...]

``benchmarks/fig3_wide.py`` compares two adaptive runs: each path chooses its own steps, so the
trajectories differ by the ODE's error control (rtol 1e-6) as well as by the directions. Here
the steps are taken once, from an adaptive krylov run (Tsit5, rtol 1e-6, atol 1e-9, as Fig. 3),
and then both paths integrate with Tsit5 on exactly those steps (``diffrax.StepTo``): what is
left between the two trajectories is what the directions put there. ``--steps a:b`` integrates
only steps ``a..b`` of the sequence, from the adaptive krylov run's state at step ``a`` (the eigh
path costs ~16 s a direction at N = 64, 6 directions a step); ``--from-t T`` moves that window
to start at the first step at or after time T.

Both fields are :func:`curvdyn.rules.direction_unchecked`, cold (no warm start): ``krylov``
with its certificate and fallback, and ``mapspace`` (one dense ``eigh`` of K per direction).
With ``--svd`` a third trajectory on the same steps takes its directions from the float64 SVD of
the dense Ĵ (``tests/reference.py: ngd_svd``, singular values ``≤ sqrt(rcond) · s_max`` cut, as
in ``krylov_certificate.py``): it never forms K, so it tells which of the two is off where they
differ. Reported per step: the largest relative difference of the weights (per layer, relative
to the layer's largest entry) and of the map.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see benchmarks/README.md

import argparse
import sys
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing as T
import curvdyn as cd
from curvdyn.rules import direction_unchecked
from fig3_wide import INTEGRATOR, T_END, setup
from krylov_certificate import svd_reference

jax.config.update("jax_enable_x64", True)

RULE = cd.get_rule("sqrt-ngd")


def _svd_direction(ws, task):
    """The SVD-of-Ĵ direction (``krylov_certificate.svd_reference``) on the host, ``jax.pure_callback``."""
    svd = svd_reference(task, RULE.spectral_function())

    def host(*w):
        return tuple(np.asarray(x) for x in svd(w))

    return jax.pure_callback(host, tuple(jax.ShapeDtypeStruct(w.shape, w.dtype) for w in ws), *ws)


def _field(task, method):
    if method == "svd":
        return diffrax.ODETerm(lambda t, y, args: tuple(-v for v in _svd_direction(y, task)))
    return diffrax.ODETerm(lambda t, y, args: tuple(-v for v in direction_unchecked(y, task, RULE, method)))


def adaptive_steps(ws, task, max_steps: int = 4096):
    """The adaptive krylov run's step times and its state at each, ``(ts (k+1,), ys)``."""

    @jax.jit
    def solve(y0):
        sol = diffrax.diffeqsolve(
            _field(task, "krylov"),
            diffrax.Tsit5(),
            t0=0.0,
            t1=T_END,
            dt0=None,
            y0=y0,
            saveat=diffrax.SaveAt(t0=True, steps=True),
            stepsize_controller=diffrax.PIDController(rtol=INTEGRATOR.rtol, atol=INTEGRATOR.atol),
            max_steps=max_steps,
        )
        return sol.ts, sol.ys

    ts, ys = solve(ws)
    keep = np.isfinite(np.asarray(ts))
    return np.asarray(ts)[keep], tuple(np.asarray(y)[keep] for y in ys)


def on_steps(y0, task, method, ts):
    """Tsit5 on exactly the step times ``ts`` with ``method``'s field; the state at each of them."""

    @jax.jit
    def solve(y0, ts):
        sol = diffrax.diffeqsolve(
            _field(task, method),
            diffrax.Tsit5(),
            t0=ts[0],
            t1=ts[-1],
            dt0=None,
            y0=y0,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.StepTo(ts=ts),
            max_steps=len(ts),
        )
        return sol.ys

    return tuple(np.asarray(y) for y in solve(y0, jnp.asarray(ts)))


def differences(a, b) -> dict:
    """Per step: the largest relative weight difference over the layers, and the map's."""
    w = np.max([np.max(np.abs(x - y), axis=(1, 2)) / np.max(np.abs(y), axis=(1, 2)) for x, y in zip(a, b)], axis=0)
    ma, mb = (np.asarray(cd.network_map(ws)) for ws in (a, b))
    m = np.linalg.norm(ma - mb, axis=(1, 2)) / np.linalg.norm(mb, axis=(1, 2))
    return {"weights": w, "map": m}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", default="0:", help="a:b, the steps of the adaptive sequence to integrate")
    ap.add_argument(
        "--from-t", type=float, default=None, help="start at the first step at or after this time (b - a steps)"
    )
    ap.add_argument("--svd", action="store_true", help="a third trajectory from the SVD of the dense Ĵ")
    ap.add_argument(
        "--no-eigh", action="store_true", help="skip the eigh trajectory (with --svd: krylov against the SVD only)"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"fig3_wide_shared_steps_n{args.n}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    log = T.JsonLog(out, {"benchmark": "fig3_wide_shared_steps", "machine": T.machine_info(), "N": args.n})
    task, ws = setup(args.n)

    t0 = time.perf_counter()
    ts, ys = adaptive_steps(ws, task)
    log.set("adaptive", {"steps": len(ts) - 1, "wall_s": time.perf_counter() - t0, "t_end": float(ts[-1])})
    a, b = (int(x) if x else None for x in args.steps.split(":"))
    a = a or 0
    if args.from_t is not None:  # the same number of steps, from the first step time >= from_t
        first = int(np.searchsorted(ts, args.from_t))
        b, a = (None if b is None else first + (b - a)), first
    b = len(ts) - 1 if b is None else min(b, len(ts) - 1)
    grid = ts[a : b + 1]
    y0 = tuple(jnp.asarray(y[a]) for y in ys)
    print(
        f"N={args.n}: {len(ts) - 1} adaptive steps to t = {ts[-1]:g}; integrating steps {a}..{b} (t = {grid[0]:.4g} .. {grid[-1]:.4g})"
    )

    runs, walls = {}, {}
    methods = ("krylov",) + (() if args.no_eigh else ("mapspace",)) + (("svd",) if args.svd else ())
    for method in methods:
        t0 = time.perf_counter()
        runs[method] = on_steps(y0, task, method, grid)
        walls[method] = time.perf_counter() - t0
        print(f"  {method}: {walls[method]:.1f} s (compilation included)", flush=True)
    own = differences(runs["krylov"], tuple(y[a : b + 1] for y in ys))  # the same field, adaptive vs StepTo
    row = {
        "steps": [a, b],
        "t": grid.tolist(),
        "wall_s": walls,
        "krylov_stepto_vs_adaptive_max": {k: float(np.max(v)) for k, v in own.items()},
    }
    if "mapspace" in runs:
        d = differences(runs["krylov"], runs["mapspace"])
        row["krylov_vs_eigh"] = {k: v.tolist() for k, v in d.items()}
        row["max_krylov_vs_eigh"] = {k: float(np.max(v)) for k, v in d.items()}
        print(
            f"  krylov vs eigh on the shared steps: weights {row['max_krylov_vs_eigh']['weights']:.2e}, "
            f"map {row['max_krylov_vs_eigh']['map']:.2e} (largest over {b - a} steps)"
        )
    print(f"  StepTo vs adaptive krylov (same field): {row['krylov_stepto_vs_adaptive_max']['weights']:.1e}")
    if args.svd:
        for method in (m for m in ("krylov", "mapspace") if m in runs):
            dv = differences(runs[method], runs["svd"])
            row[f"{method}_vs_svd"] = {k: v.tolist() for k, v in dv.items()}
            row[f"max_{method}_vs_svd"] = {k: float(np.max(v)) for k, v in dv.items()}
    log.set("shared_steps", row)
    for method in (m for m in ("krylov", "mapspace") if args.svd and m in runs):
        m = row[f"max_{method}_vs_svd"]
        print(f"  {method} vs the SVD of Ĵ: weights {m['weights']:.2e}, map {m['map']:.2e}")


if __name__ == "__main__":
    main()
