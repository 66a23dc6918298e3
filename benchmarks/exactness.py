"""How exact the exact directions are in float64 (issue 10's two cases), against independent references.

    python benchmarks/exactness.py [--out benchmarks/results/exactness.json] [--seeds 5]

* ``balanced-cond1e6``: balanced 4 → 4 → 4 → 4 weights with per-layer mode values 1, 0.5,
  0.1, 1e-3 (``init_balanced``), cond(Ĵ) = 1e6, Gaussian target, Σ = I. Reference: NGD in exact
  rational arithmetic (``tests/reference.py: ngd_exact``); also the float64 SVD of the dense Ĵ
  (``ngd_svd``) and the extended-precision iterative refinement (``ngd_extended``).
* ``xavier-d8``: Xavier weights 16 → … → 16 (depth 8), Gaussian target. K has eigenvalues down to
  ~1e-15 λ_max and below. References: ``ngd_extended`` and ``ngd_svd``. The full map-space
  residual ``‖Ĵd − ΔS‖/‖ΔS‖`` shows how much of Δ the direction leaves unfitted.

For every case and method it prints the relative error ``‖d − d_ref‖/‖d_ref‖`` and, where
this curvdyn has them (``return_info=True``), the direction's own diagnostics and whether it
warned. With ``--timing`` it also times what refinement and diagnostics cost: one NGD direction
(N = 8, d = 4; spread and balanced weights) with ``REFINE_STEPS = 0`` against the default (2),
and the direction with its diagnostics, calls interleaved, medians. Writes a table to stdout and
JSON to ``--out``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see benchmarks/README.md

import argparse
import sys
import warnings

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import _timing as T
import curvdyn as cd
import reference as R

jax.config.update("jax_enable_x64", True)  # before any array exists (curvdyn's exactness is a float64 claim)

MODES = (1.0, 0.5, 0.1, 1e-3)


def balanced_case(seed: int):
    ws = cd.init_balanced(jax.random.PRNGKey(seed), (4, 4, 4, 4), np.array(MODES))
    target = np.random.default_rng(seed).standard_normal((4, 4))
    return ws, target


def xavier_case(seed: int):
    ws = cd.init_xavier(jax.random.PRNGKey(seed), (16,) * 9, 1.0)
    target = np.random.default_rng(seed).standard_normal((16, 16))
    return ws, target


def map_residual(ws, target, d) -> float:
    """``‖Ĵ d − Δ‖ / ‖Δ‖`` (Σ = I), the full least-squares residual of the direction."""
    a, b = cd.outer_products(ws)
    jd = sum(np.asarray(ai) @ np.asarray(di) @ np.asarray(bi) for ai, bi, di in zip(a, b, d))
    delta = np.asarray(cd.network_map(ws)) - target
    return float(np.linalg.norm(jd - delta) / np.linalg.norm(delta))


def run_direction(rule, ws, task, method):
    """The direction, its diagnostics (None where this curvdyn has none) and the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            d, info = rule.direction(ws, task, method=method, return_info=True)
        except TypeError:  # a curvdyn without diagnostics
            d, info = rule.direction(ws, task, method=method), None
    warned = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    return d, info, warned


def info_row(info) -> dict:
    if info is None:
        return {}
    return {k: np.asarray(v).tolist() for k, v in info._asdict().items()}


def timing(log, repeats: int) -> None:
    """Side-by-side cost of refinement and of the diagnostics (compiled ahead of time)."""
    import curvdyn.curvature.refine as refine
    from curvdyn.rules import direction_and_info, direction_unchecked

    rng = np.random.default_rng(0)
    spread = []
    for _ in range(4):
        u, v = (np.linalg.qr(rng.standard_normal((8, 8)))[0] for _ in range(2))
        spread.append((u * rng.uniform(0.5, 1.5, 8)) @ v.T)
    balanced = cd.init_balanced(jax.random.PRNGKey(0), (8,) * 5, np.linspace(0.6, 1.4, 8))
    task = cd.Task(rng.standard_normal((8, 8)))
    print(
        f"\n{'weights':<9} {'rule':<6} {'method':<10} {'unrefined':>10} {'refined':>10} {'ratio':>6} {'+ info':>10} {'ratio':>6}"
    )
    for label, ws in (("spread", tuple(spread)), ("balanced", tuple(balanced))):
        for name, method in (("ngd", "mapspace"), ("ngd", "auto"), ("ngd-d", "kronecker"), ("ngd", "dense")):
            rule = cd.get_rule(name)
            resolved = rule.resolve_method(cd.widths_of(ws), True, method)
            saved = refine.REFINE_STEPS
            try:
                refine.REFINE_STEPS = 0
                plain, _ = T.compiled(lambda w, r=rule, m=resolved: direction_unchecked(w, task, r, m), ws)
            finally:
                refine.REFINE_STEPS = saved
            refined, _ = T.compiled(lambda w, r=rule, m=resolved: direction_unchecked(w, task, r, m), ws)
            info, _ = T.compiled(lambda w, r=rule, m=resolved: direction_and_info(w, task, r, m), ws)
            t = T.time_interleaved({"plain": plain, "refined": refined, "info": info}, repeats)
            p_, r_, i_ = (t[k]["median"] for k in ("plain", "refined", "info"))
            print(
                f"{label:<9} {name:<6} {method:<10} {p_ * 1e3:>8.3f}ms {r_ * 1e3:>8.3f}ms {r_ / p_:>5.2f}× {i_ * 1e3:>8.3f}ms {i_ / p_:>5.2f}×"
            )
            log.add(
                {
                    "timing": True,
                    "weights": label,
                    "rule": name,
                    "method": method,
                    "unrefined_s": p_,
                    "refined_s": r_,
                    "with_info_s": i_,
                }
            )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "exactness.json"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--timing", action="store_true", help="also time refinement and diagnostics")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    log = T.JsonLog(args.out, {"benchmark": "exactness", "curvdyn": cd.__version__, "machine": T.machine_info()})
    rule = cd.get_rule("ngd")
    print(f"{'case':<20} {'seed':>4} {'method':<17} {'ref':<9} {'rel. error':>10} {'‖Ĵd−Δ‖/‖Δ‖':>11}  diagnostics")
    for seed in range(args.seeds):
        for case, build, methods in (
            ("balanced-cond1e6", balanced_case, ("dense", "mapspace", "auto")),
            ("xavier-d8", xavier_case, ("mapspace", "auto")),
        ):
            if case == "xavier-d8" and seed >= 3:
                continue
            ws, target = build(seed)
            task = cd.Task(target)
            refs = {"svd": R.ngd_svd(ws, target), "extended": R.ngd_extended(ws, target)}
            if case == "balanced-cond1e6":
                refs = {"exact": R.ngd_exact(ws, target), **refs}
            ref_name = next(iter(refs))
            ref_errs = {k: R.rel_err(v, refs[ref_name]) for k, v in refs.items() if k != ref_name}
            print(
                f"{case:<20} {seed:>4} {'(references)':<17} {ref_name:<9} "
                + ", ".join(f"{k} {v:.2g}" for k, v in ref_errs.items())
            )
            for method in methods:
                d, info, warned = run_direction(rule, ws, task, method)
                err = R.rel_err(d, refs[ref_name])
                resid = map_residual(ws, target, d)
                diag = ""
                if info is not None:
                    diag = (
                        f"cut {int(np.max(info.n_cut))} ({int(np.max(info.n_cut_resolved))} resolved, largest "
                        f"{float(np.max(info.largest_cut)):.2g}), cut effect {float(np.max(info.cut_effect)):.2g}, "
                        f"cond {float(np.max(info.cond)):.2g}, est. error {float(np.max(info.error_estimate)):.2g}"
                        + (", WARNED" if warned else "")
                    )
                print(f"{'':<20} {'':>4} {method:<17} {ref_name:<9} {err:>10.2e} {resid:>11.2e}  {diag}")
                log.add(
                    {
                        "case": case,
                        "seed": seed,
                        "method": method,
                        "reference": ref_name,
                        "rel_error": err,
                        "reference_spread": ref_errs,
                        "map_residual": resid,
                        "info": info_row(info),
                        "warnings": warned,
                    }
                )

    if args.timing:
        timing(log, args.repeats)


if __name__ == "__main__":
    main()
