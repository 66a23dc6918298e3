"""The matrix-free path's cutoff certificate along the widened Fig. 3 trajectory.

    python benchmarks/krylov_certificate.py [--n 32] [--every 2] [--svd-max 32] [--out benchmarks/results/krylov_certificate.json]

An Euler sqrt-NGD run (dt = 0.05, 16 steps, ``method="krylov"``) from the ``fig3_wide.py`` start;
at every ``--every``-th step: the cold krylov direction's ``KrylovInfo`` (converged, cutoff certified,
certified lower end of the kept spectrum ``λ_lo / λ_hi``, how many eigenvalues it cut — null set
and deflated eigenvectors —, its error estimate, iterations, the relative difference to the eigh
path's direction) next to the four smallest
eigenvalues of the dense ``K`` (``numpy.linalg.eigvalsh``, relative to ``λ_max``) and how many lie
under the cutoff ``rcond = 1e-13`` (the eigh path cuts those). For ``N ≤ --svd-max`` both
directions are also compared with the float64 SVD of the dense ``Ĵ`` (``tests/reference.py:
ngd_svd``, singular values ``≤ sqrt(rcond) · s_max`` cut): it never forms ``K``, so its error is
``≈ u cond(Ĵ)`` where a path through ``K``'s eigenvectors has ``≈ u cond(K)`` — it tells which of
the two paths is closer to the exact direction.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see benchmarks/README.md

import argparse
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import _timing as T
import curvdyn as cd
import curvdyn.curvature as cv
import reference as R
from fig3_wide import setup

jax.config.update("jax_enable_x64", True)


def svd_reference(task, f):
    """``ws -> direction`` of spectral function ``f`` from the float64 SVD of the dense Ĵ
    (``tests/reference.py: ngd_svd``), cut as the eigh path cuts: singular values of Ĵ
    ``≤ sqrt(rcond) s_max`` are eigenvalues of K ``≤ rcond λ_max``."""
    target = np.asarray(task.target)
    cov = None if task.identity_cov else np.asarray(task.input_cov)
    rtol = float(np.sqrt(f.cutoff(jnp.float64)))
    return lambda ws: R.ngd_svd(ws, target, cov, q=1.0 / f.power, rtol=rtol)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--every", type=int, default=2, help="record every this many Euler steps (of 16)")
    ap.add_argument("--svd-max", type=int, default=32, help="largest N compared with the SVD of the dense Ĵ")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "krylov_certificate.json"))
    args = ap.parse_args(argv)
    log = T.JsonLog(args.out, {"benchmark": "krylov_certificate", "machine": T.machine_info(), "N": args.n})
    task, ws = setup(args.n)
    rule = cd.get_rule("sqrt-ngd")
    f = rule.spectral_function()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        traj = cd.simulate(
            ws, task, rule, integrator=cd.Euler(dt=0.05, steps=16), n_save=16 // args.every + 1, method="krylov"
        )
    log.set("run_krylov_stats", traj.config["krylov"])
    direction = jax.jit(lambda w: cv.krylov_direction(w, task, f))
    eigh = jax.jit(lambda w: cv.mapspace_direction(w, task, f))
    svd = svd_reference(task, f)
    body = []
    for i in range(len(traj.t)):
        w = tuple(jnp.asarray(x[i]) for x in traj.weights)
        got, info = direction(w)
        want = eigh(w)
        diff = np.sqrt(sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(got, want)))
        diff /= np.sqrt(sum(float(jnp.sum(b**2)) for b in want))
        ev = np.linalg.eigvalsh(np.asarray(cv.mapspace_kernel(w, task)))
        rel = ev / ev[-1]
        vs_svd = {}
        if args.n <= args.svd_max:
            ref = svd(w)
            vs_svd = {"krylov_vs_svd": R.rel_err(got, ref), "eigh_vs_svd": R.rel_err(want, ref)}
        row = {
            "t": float(traj.t[i]),
            "loss": float(traj.loss[i]),
            "converged": bool(info.converged),
            "cutoff_certified": bool(info.cutoff_certified),
            "certified_lam_lo_rel": float(info.lam_lo) / float(info.lam_hi),
            "iterations": int(info.iterations),
            "n_cut": int(info.null_dim),
            "error_estimate": float(info.error_estimate),
            "rel_diff_eigh": float(diff),
            "smallest_eigenvalues_rel": rel[:4].tolist(),
            "n_under_cutoff": int(np.sum(rel <= f.cutoff(jnp.float64))),
            **vs_svd,
        }
        log.add(row)
        body.append(
            [
                f"{row['t']:.2f}",
                f"{row['loss']:.3g}",
                row["converged"],
                row["cutoff_certified"],
                f"{row['certified_lam_lo_rel']:.1e}",
                row["n_cut"],
                f"{row['error_estimate']:.1e}",
                f"{row['rel_diff_eigh']:.1e}",
                ", ".join(f"{x:.1e}" for x in rel[:4]),
                row["n_under_cutoff"],
            ]
            + [f"{vs_svd[k]:.1e}" for k in ("krylov_vs_svd", "eigh_vs_svd") if k in vs_svd]
        )
    table = T.markdown_table(
        [
            "t",
            "loss",
            "converged",
            "cutoff certified",
            "certified λ_lo/λ_max (kept)",
            "cut",
            "estimate",
            "vs eigh",
            "4 smallest λ/λ_max (eigvalsh)",
            "# under rcond",
        ]
        + (["krylov vs SVD of Ĵ", "eigh vs SVD of Ĵ"] if args.n <= args.svd_max else []),
        body,
    )
    log.set("table_markdown", table)
    print(f"run: {traj.config['krylov']}\n\n{table}")


if __name__ == "__main__":
    main()
