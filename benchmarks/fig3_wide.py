"""The paper's Fig. 3 experiment widened: whole sqrt-NGD simulate runs, matrix-free against eigh.

    python benchmarks/fig3_wide.py [--sizes 32,64] [--eigh-full 32] [--eigh-points 3] [--out ...]

Student–teacher task as in ``curvdyn.experiments.fig3`` (rank-3 teacher of strength SNR × noise
std = 10, P = N exactly whitened samples), depth 4, width N, every layer random with largest
singular value 0.05, sqrt-NGD in continuous time to Fig. 3's end time 12 with Fig. 3's ODE
numerics (Tsit5, rtol 1e-6, atol 1e-9, 101 log-spaced save times from 1e-3).

For each N: the whole run with ``method="krylov"`` (warm starts, stats in the JSON); the eigh path
(``method="mapspace"``) either whole (``--eigh-full``, compared on every recorded time) or — where
a whole run takes hours — at ``--eigh-points`` recorded points of the krylov trajectory (the two
directions compared there), the eigh whole-run time then extrapolated: one eigh direction's
measured time times the number of directions the run evaluates (6 per Tsit5 step, 2 for the
first step size, one per recorded time; the eigendecomposition's cost does not depend on the
weights). Timed runs exclude compilation (warm-up runs with the same shapes first).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see benchmarks/README.md

import argparse
import sys
import time
import warnings

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing as T
import curvdyn as cd
from curvdyn.experiments.common import log_times

jax.config.update("jax_enable_x64", True)

T_END = 12.0
INTEGRATOR = cd.ODE(rtol=1e-6, atol=1e-9, solver="tsit5", max_steps=2_000_000)


def setup(n: int, seed: int = 0):
    k_data, k_init = jax.random.split(jax.random.PRNGKey(seed))
    st = cd.student_teacher(k_data, n, rank=3, snr=10.0, n_train=n, noise_std=1.0)
    return st.train_task, cd.init_random(k_init, (n,) * 5, 0.05)


def run(ws, task, method, save_at):
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        traj = cd.simulate(ws, task, cd.get_rule("sqrt-ngd"), integrator=INTEGRATOR, save_at=save_at, method=method)
    return traj, time.perf_counter() - t0, [str(w.message) for w in caught]


def compare(a, b) -> dict:
    """Largest relative differences over the common save times (weights: per layer, all times)."""
    k = min(len(a.t), len(b.t))
    assert np.allclose(a.t[:k], b.t[:k])
    w = max(float(np.max(np.abs(x[:k] - y[:k])) / np.max(np.abs(y[:k]))) for x, y in zip(a.weights, b.weights))
    m = float(np.max(np.linalg.norm(a.map[:k] - b.map[:k], axis=(1, 2)) / np.linalg.norm(b.map[:k], axis=(1, 2))))
    loss = float(np.max(np.abs(a.loss[:k] - b.loss[:k]) / np.abs(b.loss[:k])))
    return {"weights": w, "map": m, "loss": loss, "save_times": k}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32,64")
    ap.add_argument("--eigh-full", default="32", help="sizes whose eigh run goes to t = 12")
    ap.add_argument("--eigh-points", type=int, default=3, help="recorded points with an eigh direction otherwise")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "fig3_wide.json"))
    args = ap.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    log = T.JsonLog(args.out, {"benchmark": "fig3_wide", "machine": T.machine_info(), "t_end": T_END})
    full_eigh = {int(x) for x in args.eigh_full.split(",") if x}
    save_at = log_times(T_END, 100, 1e-3)
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        task, ws = setup(n)
        row: dict = {"N": n, "P": cd.n_params(ws)}
        # compile both paths on a tiny run (same shapes, rule and save count: the same programs)
        tiny = save_at * (1e-6 / T_END)
        for method in ("krylov", "mapspace") if n in full_eigh else ("krylov",):
            _, c, _ = run(ws, task, method, tiny)
            row[f"{method}_warmup_s"] = c
        kr, tk, warn_k = run(ws, task, "krylov", save_at)
        row.update(
            krylov_s=tk,
            krylov_steps=kr.config["solver_steps"],
            krylov_status=kr.status,
            krylov_stats=kr.config.get("krylov"),
            krylov_warnings=warn_k,
            final_loss=float(kr.loss[-1] + task.loss_offset),
        )
        print(
            f"N={n}: krylov whole run {tk:.1f} s, {row['krylov_steps']} steps, {kr.status}, {row['krylov_stats']}",
            flush=True,
        )
        if n in full_eigh:
            ei, te, _ = run(ws, task, "mapspace", save_at)
            row.update(eigh_s=te, eigh_steps=ei.config["solver_steps"], eigh_measured="whole run", diff=compare(kr, ei))
        else:
            # a whole eigh run takes hours here: eigh directions at a few recorded points of the
            # krylov trajectory (their agreement with krylov's there), and the whole-run time from
            # one eigh direction's time (its cost does not depend on the weights) times the number
            # of directions the run evaluates: Tsit5 with FSAL, 6 new evaluations per step, 2 for
            # the initial step size, one per recorded time (the update norms)
            rule = cd.get_rule("sqrt-ngd")
            picks = np.unique(np.linspace(0, len(kr.t) - 1, args.eigh_points).round().astype(int))
            agree, t_dirs, t_kdirs = [], [], []
            for i in picks:
                w = tuple(x[i] for x in kr.weights)
                jax.block_until_ready(rule.direction(w, task, method="mapspace"))  # compiled once
                t0 = time.perf_counter()
                e = jax.block_until_ready(rule.direction(w, task, method="mapspace"))
                t_dirs.append(time.perf_counter() - t0)
                jax.block_until_ready(rule.direction(w, task, method="krylov"))
                t0 = time.perf_counter()
                k = jax.block_until_ready(rule.direction(w, task, method="krylov"))
                t_kdirs.append(time.perf_counter() - t0)
                agree.append(T.rel_err(k, e))
            t_dir = float(np.median(t_dirs))
            n_dirs = 6 * row["krylov_steps"] + 2 + len(save_at)
            row.update(
                eigh_direction_s=t_dir,
                krylov_cold_direction_s=float(np.median(t_kdirs)),
                eigh_points_t=[float(kr.t[i]) for i in picks],
                direction_rel_diff_at_points=agree,
                eigh_s=t_dir * n_dirs,
                eigh_measured=(
                    f"extrapolated: {t_dir:.2f} s per eigh direction × {n_dirs} directions "
                    f"(6 · {row['krylov_steps']} steps + 2 + {len(save_at)} records)"
                ),
                diff={"weights": float("nan"), "map": float("nan"), "direction_max": max(agree)},
            )
        row["speedup"] = row["eigh_s"] / row["krylov_s"]
        print(
            f"N={n}: eigh {row['eigh_s']:.1f} s ({row['eigh_measured']}); speedup {row['speedup']:.1f}×; "
            f"max rel diff {row['diff']}",
            flush=True,
        )
        log.add(row)
        rows.append(row)
    table = T.markdown_table(
        [
            "N",
            "krylov whole run",
            "steps",
            "eigh whole run",
            "eigh ÷ krylov",
            "max rel. diff (weights / map)",
            "krylov stats",
        ],
        [
            [
                r["N"],
                f"{r['krylov_s']:.1f} s",
                r["krylov_steps"],
                f"{r['eigh_s']:.0f} s ({'measured' if r['eigh_measured'] == 'whole run' else 'extrapolated'})",
                f"{r['speedup']:.0f}×",
                (
                    f"{r['diff']['weights']:.1e} / {r['diff']['map']:.1e}"
                    if np.isfinite(r["diff"]["weights"])
                    else f"directions at {len(r['eigh_points_t'])} points: {r['diff']['direction_max']:.1e}"
                ),
                (
                    f"{r['krylov_stats']['directions']} dir., {r['krylov_stats']['iterations'] / max(1, r['krylov_stats']['directions']):.0f} it./dir., "
                    f"{r['krylov_stats']['fallbacks']} fallbacks, max est. {r['krylov_stats']['max_estimate']:.1e}"
                ),
            ]
            for r in rows
        ],
    )
    log.set("table_markdown", table)
    print("\n" + table)


if __name__ == "__main__":
    main()
