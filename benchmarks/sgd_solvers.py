"""Fig. 3's stiff SGD run: Tsit5 against Runge–Kutta–Chebyshev (:mod:`curvdyn.rkc`), time and accuracy.

    python benchmarks/sgd_solvers.py [--seeds 0,2] [--rkc-rtols 1e-7,1e-8,1e-9]

SGD's gradient flow from Fig. 3's 0.05-scale weights to t_end = 1e4 is stiff (the learned modes
relax at rate λ_max ≈ 134, the noise modes at ~1e-4), so Tsit5 is held by stability to steps of
~0.02 whatever its tolerance. Each seed runs (after a compiling call of every configuration):
the reference, Tsit5 at rtol 1e-11 (atol 1e-14); Tsit5 at rtol 1e-6 (atol 1e-9: Fig. 3's
numerics before RKC, and still those of its √NGD runs); RKC at each ``--rkc-rtols`` (atol =
rtol·1e-3), each compiled first on a run to t = 1 with the same shapes. Reported: solver steps, wall time, and the error against the reference at Fig. 3's
400 save times: ``max_t ‖W(t) − W_ref(t)‖_F / ‖W_ref(t_end)‖_F`` and the largest relative error
of the exact test loss.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see benchmarks/README.md

import argparse
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,2")
    ap.add_argument("--rkc-rtols", default="1e-7,1e-8,1e-9")
    ap.add_argument("--t-end", type=float, default=fig3.DEFAULT.t_end.sgd)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "sgd_solvers.json"))
    args = ap.parse_args(argv)
    s = fig3.DEFAULT
    log = T.JsonLog(args.out, {"benchmark": "sgd_solvers", "machine": T.machine_info(), "t_end": args.t_end})
    configs = [("tsit5", 1e-11, 1e-14), ("tsit5", 1e-6, 1e-9)]
    configs += [("rkc", float(r), float(r) * 1e-3) for r in args.rkc_rtols.split(",")]
    rows = []
    for seed in [int(x) for x in args.seeds.split(",")]:
        st, ws0 = fig3.draw(s, seed)
        task, teacher = st.train_task, np.asarray(st.teacher)
        noise_floor = float(st.test_task.loss_offset)
        ts = log_times(args.t_end, s.n_save, s.t_min)

        def test_loss(maps):
            return 0.5 * np.sum((maps - teacher) ** 2, axis=(-2, -1)) + noise_floor

        maps, info = {}, {}
        for solver, rtol, atol in configs:
            ode = cd.ODE(rtol=rtol, atol=atol, solver=solver, max_steps=4_000_000)
            # compile on a short run with the same shapes (the program takes the times as data)
            T.run_once(lambda ode=ode: cd.simulate(ws0, task, "sgd", 1.0, integrator=ode, save_at=ts / ts[-1]).map)
            t0 = time.perf_counter()
            traj = cd.simulate(ws0, task, "sgd", args.t_end, integrator=ode, save_at=ts)
            m = np.asarray(traj.map)
            info[(solver, rtol)] = (time.perf_counter() - t0, int(traj.config["solver_steps"]))
            maps[(solver, rtol)] = m
            print(
                f"seed {seed} {solver} rtol {rtol:g}: {info[(solver, rtol)][1]} steps, {info[(solver, rtol)][0]:.1f} s",
                flush=True,
            )
        ref = maps[configs[0][:2]]
        scale = np.linalg.norm(ref[-1])
        base = info[("tsit5", 1e-6)][0]
        for key in [c[:2] for c in configs[1:]]:
            err = float(np.max(np.linalg.norm(maps[key] - ref, axis=(1, 2))) / scale)
            loss_err = float(np.max(np.abs(test_loss(maps[key]) - test_loss(ref)) / test_loss(ref)))
            wall, steps = info[key]
            row = {"seed": seed, "solver": key[0], "rtol": key[1], "steps": steps, "wall_s": wall}
            row |= {"tsit5_1e-6_over": base / wall, "map_err": err, "test_loss_err": loss_err}
            log.add(row)
            rows.append(
                [
                    seed,
                    key[0],
                    f"{key[1]:g}",
                    steps,
                    T.fmt_s(wall),
                    f"{base / wall:.2f}×",
                    T.fmt_e(err),
                    T.fmt_e(loss_err),
                ]
            )
    print(
        T.markdown_table(
            ["seed", "solver", "rtol", "steps", "wall", "Tsit5 1e-6 ÷", "max map error", "max test-loss error"], rows
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
