"""fig3's SGD runs over several seeds: separate runs against one batched program (``vmap`` and
``lax.map``, :mod:`curvdyn.batch`), side by side.

    python benchmarks/fig3_seeds.py [--seeds-per-batch 2,8] [--t-end 500] [--n-save 2,400] [--repeats 1]

SGD's adaptive ODE run is ~90 % of fig3's time per seed (about 480 000 stability-limited Tsit5
steps to its t_end = 1e4, each costing little more than the loop's own work). It runs here with
fig3's defaults as they were when this was measured (task, initial weights of seeds 0..B−1,
Tsit5 rtol 1e-6 atol 1e-9: ``fig3.DEFAULT.ode``; fig3's SGD run itself now uses the
Runge–Kutta–Chebyshev solver, ``fig3.DEFAULT.sgd_ode``, see ``sgd_solvers.py``) to
``--t-end`` (the same step size as to 1e4: the ratios carry over), recording ``--n-save``
log-spaced times (fig3 records 400). Every configuration is compiled first (a warm-up call), then
the three strategies alternate ``--repeats`` times; the table gives the medians, the ratios
against separate runs, and the largest relative difference of a member's losses from its
separate run (``map`` is bitwise the separate runs; ``vmap`` members keep their own step control
but not the separate runs' round-off, so their adaptive steps drift apart).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see benchmarks/README.md

import argparse
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing as T
import curvdyn as cd
from curvdyn.experiments import fig3
from curvdyn.experiments.common import log_times

jax.config.update("jax_enable_x64", True)


def fig3_start(seed: int):
    """fig3's training task and initial weights for ``seed`` (:func:`curvdyn.experiments.fig3.draw`)."""
    st, ws0 = fig3.draw(fig3.DEFAULT, seed)
    return st.train_task, ws0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds-per-batch", default="2,8")
    ap.add_argument("--t-end", type=float, default=500.0)
    ap.add_argument("--n-save", default="2,400")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "fig3_seeds.json"))
    args = ap.parse_args(argv)
    log = T.JsonLog(args.out, {"benchmark": "fig3_seeds", "machine": T.machine_info(), "t_end": args.t_end})
    ode = fig3.DEFAULT.ode
    rows = []
    for n_save in [int(n) for n in args.n_save.split(",")]:
        kw = dict(eta=1.0, integrator=ode, save_at=log_times(args.t_end, n_save, fig3.DEFAULT.t_min))
        for b in [int(x) for x in args.seeds_per_batch.split(",")]:
            starts = [fig3_start(seed) for seed in range(b)]
            tasks = [task for task, _ in starts]
            stacked = jax.tree_util.tree_map(lambda *w: jax.numpy.stack(w), *[ws for _, ws in starts])
            calls = {
                "separate": lambda: [cd.simulate(ws, task, "sgd", args.t_end, **kw) for task, ws in starts],
                "vmap": lambda: cd.simulate(stacked, tasks, "sgd", args.t_end, batch="vmap", **kw),
                "map": lambda: cd.simulate(stacked, tasks, "sgd", args.t_end, batch="map", **kw),
            }
            first = {name: T.run_once(lambda c=call: jax.tree_util.tree_leaves(c())) for name, call in calls.items()}
            times: dict[str, list[float]] = {name: [] for name in calls}
            got = {}
            for _ in range(args.repeats):
                for name, call in calls.items():
                    t0 = time.perf_counter()
                    got[name] = call()
                    times[name].append(time.perf_counter() - t0)
            sep = got["separate"]
            diff = {
                name: max(
                    float(np.max(np.abs(got[name].member(i).loss - sep[i].loss) / np.abs(sep[i].loss)))
                    for i in range(b)
                )
                for name in ("vmap", "map")
            }
            med = {k: statistics.median(v) for k, v in times.items()}
            row = {
                "n_save": n_save,
                "seeds": b,
                "median_s": med,
                "separate_over": {k: med["separate"] / med[k] for k in ("vmap", "map")},
                "first_call_s": first,
                "solver_steps": [int(r.config["solver_steps"]) for r in sep],
                "max_rel_diff_loss": diff,
            }
            log.add(row)
            rows.append(
                [n_save, b, T.fmt_s(med["separate"]), T.fmt_s(med["vmap"]), T.fmt_s(med["map"])]
                + [f"{row['separate_over'][k]:.2f}×" for k in ("vmap", "map")]
                + [f"{diff['vmap']:.1e}", f"{diff['map']:.1e}"]
            )
            print(f"n_save {n_save}, B = {b}: " + ", ".join(f"{k} {v:.1f} s" for k, v in med.items()), flush=True)
    print(
        T.markdown_table(
            [
                "saves",
                "seeds",
                "separate",
                "vmap",
                "map",
                "separate ÷ vmap",
                "separate ÷ map",
                "vmap max rel. diff",
                "map max rel. diff",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
