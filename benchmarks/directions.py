"""Dense full H₊ versus the map-space identity: one sqrt-NGD direction, d = 4, N = 8, 16, 32.

    python benchmarks/directions.py [--out benchmarks/results/directions.json] [--repeats 5]

For each square network ``N → N → N → N → N`` (Haar-random layers with singular values
uniform in [0.5, 1.5], a Gaussian target, Σ = I; ``--weights gaussian`` for Xavier-normal
layers, whose K is ill-conditioned: cond(K) ≈ 2e5 at N = 8, 2e7 at N = 16) it times one exact sqrt-NGD direction by ``method="dense"`` (the explicit
``P × P`` matrix ``H₊``, P = 4N², the paper's method) and by ``method="mapspace"`` (the
``N² × N²`` kernel K) and ``method="auto"``, calls interleaved in one loop, medians over
repeats, compile time excluded (ahead-of-time compiled, reported separately), and prints their
agreement ``‖d_map − d_dense‖ / ‖d_dense‖``. Writes a table to stdout and JSON to ``--out``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see benchmarks/README.md

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing as T
import curvdyn as cd
import curvdyn.curvature as cv
from curvdyn.rules import direction_unchecked

jax.config.update("jax_enable_x64", True)  # curvdyn's exact paths in float64 (importing curvdyn does not)


def setup(n: int, depth: int = 4, seed: int = 0, weights: str = "spread"):
    widths = (n,) * (depth + 1)
    rng = np.random.default_rng(seed)
    if weights == "gaussian":
        ws = cd.init_xavier(jax.random.PRNGKey(seed), widths, 1.0)
    else:
        ws = []
        for _ in range(depth):
            u = np.linalg.qr(rng.standard_normal((n, n)))[0]
            v = np.linalg.qr(rng.standard_normal((n, n)))[0]
            ws.append(jnp.asarray((u * rng.uniform(0.5, 1.5, n)) @ v.T))
        ws = tuple(ws)
    target = rng.standard_normal((n, n))
    return ws, cd.Task(target)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "directions.json"))
    ap.add_argument("--sizes", default="8,16,32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--weights", choices=("spread", "gaussian"), default="spread")
    args = ap.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    log = T.JsonLog(
        args.out,
        {
            "benchmark": "directions",
            "machine": T.machine_info(),
            "rule": "sqrt-ngd",
            "depth": 4,
            "weights": args.weights,
        },
    )
    rule = cd.get_rule("sqrt-ngd")
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        ws, task = setup(n, weights=args.weights)
        p = cd.n_params(ws)
        cond = cv.condition_number(ws, task)
        calls, compile_s, outs = {}, {}, {}
        for method in ("dense", "mapspace", "auto"):
            resolved = rule.resolve_method(cd.widths_of(ws), task.identity_cov, method)
            call, c = T.compiled(direction_unchecked, ws, task, static=dict(rule=rule, method=resolved))
            calls[method], compile_s[method] = call, c
            outs[method] = jax.block_until_ready(call())
        # The dense call at N = 32 takes tens of seconds on a small CPU: fewer repeats there.
        repeats = args.repeats if p <= 1024 else max(2, args.repeats // 2)
        t = T.time_interleaved(calls, repeats)
        err = T.rel_err(outs["mapspace"], outs["dense"])
        err_auto = T.rel_err(outs["auto"], outs["dense"])
        row = {
            "N": n,
            "P": p,
            "K_dim": n * n,
            "K_cond": cond,
            "dense_s": t["dense"]["median"],
            "mapspace_s": t["mapspace"]["median"],
            "auto_s": t["auto"]["median"],
            "speedup_mapspace": t["dense"]["median"] / t["mapspace"]["median"],
            "speedup_auto": t["dense"]["median"] / t["auto"]["median"],
            "rel_err_mapspace": err,
            "rel_err_auto": err_auto,
            "auto_path": rule.method_at(ws, task),
            "repeats": t["dense"]["n"],
            "compile_s": compile_s,
        }
        log.add(row)
        rows.append(row)
        print(
            f"N={n}: P={p} dense {T.fmt_s(row['dense_s'])}, map-space {T.fmt_s(row['mapspace_s'])}, "
            f"auto {T.fmt_s(row['auto_s'])} ({row['speedup_auto']:.0f}x), rel err {err:.1e}",
            flush=True,
        )
    table = T.markdown_table(
        [
            "N",
            "P",
            "K",
            "cond(K)",
            "dense H₊",
            "map-space",
            "auto (path)",
            "dense / auto",
            "rel. err (map-space)",
            "rel. err (auto)",
        ],
        [
            [
                r["N"],
                r["P"],
                f"{r['K_dim']}²",
                f"{r['K_cond']:.0e}",
                T.fmt_s(r["dense_s"]),
                T.fmt_s(r["mapspace_s"]),
                f"{T.fmt_s(r['auto_s'])} ({r['auto_path']})",
                f"{r['speedup_auto']:.0f}×",
                T.fmt_e(r["rel_err_mapspace"]),
                T.fmt_e(r["rel_err_auto"]),
            ]
            for r in rows
        ],
    )
    print()
    print(table)
    log.set("table_markdown", table)


if __name__ == "__main__":
    main()
