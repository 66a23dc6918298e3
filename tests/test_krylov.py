"""The matrix-free ``krylov`` path against independent references, its error estimate, its cutoff
certificate and fallback, warm starts, and its place in ``simulate`` and ``auto``.

References: the dense ``H₊`` of ``tests/reference.py`` (autodiff Jacobian, numpy ``eigh``) and,
where float64 ``eigh`` is not accurate enough to check a 1e-10 tolerance, an extended-precision
solve written here (numpy ``longdouble`` iterative refinement of ``(K + s) Λ = ΔS``, products
formed in ``longdouble``; it uses the map-space identity, which ``tests/test_scale.py`` checks
against the dense ``H₊`` to round-off).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import curvdyn as cd
import curvdyn.curvature as cv
import reference as R
from curvdyn.curvature.rational import evaluate, rational_table
from curvdyn.rules import _krylov_jit, direction_warm, warm_state

TOL = 1e-9  # agreement with the dense reference (its own float64 error is ~1e-12 on these cases)


def _gauss(widths, seed, scale=None):
    rng = np.random.default_rng(seed)
    ws = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        w = rng.standard_normal((n_out, n_in)) / np.sqrt(max(n_in, n_out))
        if scale is not None:
            w = w * scale / np.linalg.norm(w, 2)
        ws.append(w)
    return tuple(ws)


def _cov(n, seed):
    m = np.random.default_rng(seed).standard_normal((n, n))
    return m @ m.T / n + 0.3 * np.eye(n)


def _zero_mode():
    """d = 4, an exact zero singular value in layer 2: P_1 and Q_4 are singular, K is not
    (so the Kronecker-sum bound is 0 where K is not, and the Schur certificate must act)."""
    ws = list(_gauss((5,) * 5, 20))
    u, s, vt = np.linalg.svd(ws[1])
    s[-1] = 0.0
    ws[1] = (u * s) @ vt
    return tuple(ws)


#: id -> (weights, Σ or None, target seed)
CASES = {
    "random-d3": (_gauss((4, 6, 5, 3), 1), None),
    "cov-d4": (_gauss((5, 6, 6, 6, 5), 2), _cov(5, 3)),
    "bottleneck-d4": (_gauss((5, 6, 2, 6, 5), 4), None),  # K has a 9-dim null space
    "ill-small-d4": (_gauss((6, 8, 7, 8, 6), 9, scale=0.05), None),  # cond(K) ≈ 3e4
    "rect-d3": (_gauss((3, 7, 6, 5), 10), None),
    "d2-cov": (_gauss((5, 6, 4), 11), _cov(5, 12)),
    "d1-cov": (_gauss((4, 3), 13), _cov(4, 14)),
    "zero-mode-d4": (_zero_mode(), None),
}


def case(cid):
    ws, cov = CASES[cid]
    n_out, n_in = ws[-1].shape[0], ws[0].shape[1]
    target = np.random.default_rng(len(cid)).standard_normal((n_out, n_in))
    return ws, target, cov, cd.Task(target, cov)


def krylov(ws, task, rule, tol=cv.DEFAULT_KRYLOV_TOL, maxiter=cv.DEFAULT_KRYLOV_MAXITER):
    """The krylov direction and its ``KrylovInfo`` from the compiled program ``Rule.direction``
    runs (``rules._krylov_jit``, cached per rule, options and shapes: the tests that call both
    compile it once)."""
    out, _, info = _krylov_jit(tuple(map(jnp.asarray, ws)), task, rule, float(tol), int(maxiter))
    return out, info


RULES = {
    "ngd": dict(name="ngd"),
    "sqrt-ngd": dict(name="sqrt-ngd"),
    "q1.5": dict(name="frac-ngd", q=1.5),
    "q3": dict(name="frac-ngd", q=3.0),
    "damped": dict(name="damped-ngd", eps=0.1),
    "lm-ngd": dict(name="ngd", lm_damping=1e-3),
    "lm-sqrt": dict(name="sqrt-ngd", lm_damping=1e-3),
}
#: rules whose direction is one solve (α = 1): checked against the extended-precision solve too
Q1 = ("ngd", "damped", "lm-ngd")


def _rule(key):
    params = dict(RULES[key])
    name = params.pop("name")
    return name, params, cd.get_rule(name, **params)


COMBOS = [
    ("random-d3", "ngd"),
    ("random-d3", "sqrt-ngd"),
    ("random-d3", "q1.5"),
    ("random-d3", "q3"),
    ("random-d3", "damped"),
    ("random-d3", "lm-ngd"),
    ("random-d3", "lm-sqrt"),
    ("cov-d4", "sqrt-ngd"),
    ("bottleneck-d4", "ngd"),
    ("ill-small-d4", "sqrt-ngd"),
    ("d2-cov", "ngd"),
]


def _check_certificate(ws, task, info, rcond=R.RCOND):
    """The certified interval and cut against ``eigvalsh`` of the dense ``K``: where the cutoff is
    certified, the path cuts exactly the eigenvalues the eigh path cuts (``≤ rcond · λ_max``),
    ``lam_lo`` is at most the smallest kept eigenvalue and ``lam_hi`` at least the largest."""
    ev = np.linalg.eigvalsh(np.asarray(cv.mapspace_kernel(tuple(map(jnp.asarray, ws)), task)))
    assert bool(info.cutoff_certified)
    n_cut = int(info.null_dim)
    assert n_cut == int(np.sum(ev <= rcond * ev[-1])), (n_cut, ev[:4] / ev[-1])
    assert float(info.lam_lo) <= ev[n_cut] * (1.0 + 1e-9)
    assert float(info.lam_hi) >= ev[-1] * (1.0 - 1e-12)
    return ev


@pytest.mark.parametrize("cid, key", COMBOS)
def test_matches_the_dense_reference_and_the_estimate_bounds_the_error(cid, key):
    """Agreement with the dense H₊ to 1e-9; for the one-solve rules the estimate bounds the error
    against extended precision (and is not loose: ≤ 100× it); for fractional powers on the
    well-conditioned case, against the dense reference (accurate to ~1e-14 there)."""
    ws, target, cov, task = case(cid)
    name, params, rule = _rule(key)
    out, info = krylov(ws, task, rule)
    assert bool(info.converged) and bool(info.certified), info
    est = float(info.error_estimate)
    assert 0 < est <= 1e-10
    if rule.spectral_function().shift == 0:
        _check_certificate(ws, task, info)
    want = R.Reference(ws, target, cov).direction(name, **params)
    assert R.rel_err(out, want) <= TOL
    if key in Q1:
        f = rule.spectral_function()
        err = R.rel_err(out, R.ngd_extended(ws, target, cov, shift=f.shift, gain=f.gain))
        assert err <= est <= 100 * max(err, 1e-13), (err, est)
    elif cid == "random-d3":
        assert R.rel_err(out, want) <= est
    if cid == "bottleneck-d4":
        assert int(info.null_dim) == 9  # the exact null space of K, cut as on the eigh path
        # Rule.direction's DirectionInfo for the path: its estimate, the cut count, no warning
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            got, dinfo = rule.direction(ws, task, method="krylov", return_info=True)
        assert R.rel_err(got, out) == 0.0
        assert R.rel_err(rule.direction(ws, task, method="krylov", diagnose=False), out) == 0.0
        assert int(dinfo.n_cut) == 9 and float(dinfo.error_estimate) == est
        assert float(dinfo.cond) >= 1.0 and float(dinfo.cut_effect) == 0.0
        with pytest.raises(ValueError, match=r"krylov_tol: option.*'krylov'"):
            rule.direction(ws, task, method="mapspace", krylov_tol=1e-8)
    if cid == "cov-d4":
        assert R.rel_err(out, rule.direction(ws, task, method="mapspace")) <= TOL


def test_estimate_holds_at_tight_tolerance_where_round_off_dominates():
    """tol = 1e-13 on an ill-conditioned K (cond ≈ 3e4): the round-off floor is what limits the
    answer, and the estimate (with its floor term) still bounds the error."""
    ws, target, cov, task = case("ill-small-d4")
    out, info = krylov(ws, task, cd.get_rule("ngd"), tol=1e-13)
    err = R.rel_err(out, R.ngd_extended(ws, target, cov))
    assert bool(info.converged)
    assert err <= float(info.error_estimate) <= 1e-11


def _schur_case(n, ell, small, seed, pad=0):
    """A PSD ``K`` (n × n) whose ``small`` lowest eigenvalues (0 and 1e-9 … 2e-6, or a log-spaced
    run) have eigenvectors concentrated on the first ``ell`` coordinates ``L`` (as the Schur step
    picks them): the inputs of ``schur_lower_bounds`` — ``K_LL``, the exact ``K_LR K_RR⁻¹ K_RL``
    (plus 1e-15, as the solver's error allowance), ``θ = 0.9 λ_min(K_RR)``, ``pad`` unused slots —
    and ``eigvalsh(K)``."""
    rng = np.random.default_rng(seed)
    ev = np.exp(rng.uniform(np.log(1e-3), 0.0, n))
    ev[:small] = [0.0, 1e-9, 3e-8, 2e-6][:small] if small <= 4 else np.logspace(-10, -6, small)
    low, _ = np.linalg.qr(np.vstack([rng.standard_normal((ell, small)), 1e-3 * rng.standard_normal((n - ell, small))]))
    basis, _ = np.linalg.qr(np.hstack([low, rng.standard_normal((n, n - small))]))
    k = (basis * ev) @ basis.T
    k = 0.5 * (k + k.T)
    k_ll, k_lr, k_rr = k[:ell, :ell], k[:ell, ell:], k[ell:, ell:]
    theta = 0.9 * np.linalg.eigvalsh(k_rr)[0]
    g = k_lr @ np.linalg.solve(k_rr, k_lr.T)
    g = 0.5 * (g + g.T) + 1e-15 * np.eye(ell)
    if pad:  # unused slots: a diagonal above θ, no coupling (as _spectrum pads them)
        z = np.zeros((ell, pad))
        k_ll = np.block([[k_ll, z], [z.T, 2.0 * theta * np.eye(pad)]])
        g = np.block([[g, z], [z.T, 1e-15 * np.eye(pad)]])
    return k_ll, g, theta, np.linalg.eigvalsh(k)


@pytest.mark.parametrize(
    "n, ell, small, seed, pad",
    [(40, 8, 3, 0, 0), (40, 8, 4, 1, 0), (60, 16, 6, 2, 0), (30, 6, 2, 3, 4), (40, 8, 0, 4, 0), (120, 32, 8, 5, 0)],
)
def test_schur_bounds_lie_below_the_eigenvalues(n, ell, small, seed, pad):
    """The ℓ × ℓ Schur certificate: every bound is at most the true eigenvalue (eigvalsh of the
    dense K; rank-deficient cases with an exact zero, padded slots), monotone, and tight where the
    eigenvalue sits well under θ (within 10 %: the grid's resolution; so a certificate that
    returned zeros would fail)."""
    from curvdyn.curvature.precond import schur_lower_bounds

    k_ll, g, theta, ev = _schur_case(n, ell, small, seed, pad)
    got = np.asarray(schur_lower_bounds(*map(jnp.asarray, (k_ll, g, theta, 0.0, 1e-12))))[:ell]
    assert np.all(got <= ev[:ell] * (1.0 + 1e-9) + 1e-15), (got, ev[:ell])
    assert np.all(np.diff(got) >= 0.0)
    well_under = (ev[:ell] < 1e-2 * theta) & (ev[:ell] > 1e-12)
    assert np.all(got[well_under] >= 0.9 * ev[:ell][well_under]), (got, ev[:ell])
    assert np.all(got[ev[:ell] >= 1e-2 * theta] >= 0.0)


def test_zero_mode_needs_the_schur_certificate():
    """With an exact interior zero mode the Kronecker-sum bound is 0 on one coordinate while K is
    nonsingular: the Schur certificate lifts the lower bound above the cutoff; the answer is
    within its estimate of extended precision and agrees with the (refined) eigh path."""
    ws, target, cov, task = case("zero-mode-d4")
    rule = cd.get_rule("ngd")
    out, info = krylov(ws, task, rule)
    assert bool(info.cutoff_certified)
    assert float(info.lam_lo) > rule.rcond * float(info.lam_hi)
    truth = R.ngd_extended(ws, target, cov)
    err = R.rel_err(out, truth)
    assert err <= float(info.error_estimate) <= 1e-10
    eigh = rule.direction(ws, task, method="mapspace")
    assert R.rel_err(out, eigh) <= float(info.error_estimate) + R.rel_err(eigh, truth)


def test_block_norm_bound_lies_between_lambda_max_and_the_sum_of_the_layer_terms():
    """``λ_max(K) ≤ ρ(N) ≤ Σ_i ‖A_i‖² ‖B̂_i‖²``, ``N_ij = ‖A_iᵀA_j‖ ‖B̂_jB̂_iᵀ‖``, against ``eigvalsh``
    of the dense ``K`` on every case (bottleneck, Σ ≠ I, d = 1 … 4); the right-hand side (the
    crude Weyl bound, computed here from numpy norms) is where ``N ≤ ssᵀ``, ``s_i = sqrt(N_ii)``,
    puts it. The path uses the smaller of it and the Kronecker-sum Weyl bound as ``λ_hi``."""
    from curvdyn.curvature import precond as pc
    from curvdyn.network import outer_products

    bound = jax.jit(pc.block_norm_bound)
    for cid in CASES:
        ws, _, cov, task = case(cid)
        w = tuple(map(jnp.asarray, ws))
        lam_max = np.linalg.eigvalsh(np.asarray(cv.mapspace_kernel(w, task)))[-1]
        a, b = outer_products(w)
        wh = pc.whitening(task, jnp.float64)
        got = float(bound(a, pc.whitened_right(b, wh), wh))
        s = np.eye(ws[0].shape[1]) if cov is None else R._psd_sqrt(cov)
        crude = sum(
            np.linalg.norm(np.asarray(x), 2) ** 2 * np.linalg.norm(np.asarray(y) @ s, 2) ** 2 for x, y in zip(a, b)
        )
        assert lam_max * (1.0 - 1e-13) <= got <= crude * (1.0 + 1e-12), (cid, got / lam_max, crude / lam_max)


@pytest.mark.parametrize("factor", [1.08, 0.92])
def test_eigenvalue_within_ten_percent_of_the_cutoff_is_certified(factor):
    """``K``'s smallest eigenvalue at ``factor · rcond · λ_max``: kept (1.08) or cut (0.92) as on the
    eigh path, certified, and the answer agrees with it. At 1.08 the Weyl bound of ``λ_max`` (11 %
    above it here) could not tell the eigenvalue from the cutoff — the widened Fig. 3 run fell
    back to eigh at such points (an eigenvalue at 1.03–1.12 · ``rcond · λ_max``); the block-norm
    bound is 4 % above."""
    ws, _, _, task = case("zero-mode-d4")
    ev = np.linalg.eigvalsh(np.asarray(cv.mapspace_kernel(tuple(map(jnp.asarray, ws)), task)))
    rcond = float(ev[0] / (factor * ev[-1]))
    rule = cd.get_rule("sqrt-ngd", rcond=rcond)
    out, info = krylov(ws, task, rule)
    assert bool(info.converged)
    _check_certificate(ws, task, info, rcond=rcond)
    eigh = rule.direction(ws, task, method="mapspace")
    if factor > 1.0:
        assert float(info.error_estimate) <= cv.DEFAULT_KRYLOV_TOL
        assert R.rel_err(out, eigh) <= TOL
    else:  # one eigenvector deflated: the estimate carries its angle bound (u ‖K‖ / λ_2 level)
        assert R.rel_err(out, eigh) <= float(info.error_estimate) <= 1e-4


def _deep_xavier():
    ws = cd.init_xavier(jax.random.PRNGKey(1), (12,) * 9, 1.0)
    return ws, cd.Task(np.random.default_rng(0).standard_normal((12, 12)))


@pytest.mark.parametrize("with_cov", [False, True])
def test_depth8_zone_eigenvalue_is_deflated_and_its_angle_reported(with_cov):
    """Depth 8, Xavier (N = 12): K has one eigenvalue at 2e-17 λ_max (under rcond · λ_max), the
    next at 8e-12 λ_max (5e-12 with the Σ ≠ I of the second case). The certificate proves one
    eigenvalue in the zone (Courant–Fischer on the Schur candidate, its Rayleigh quotient from Ĵᵀ
    in parameter space; for Σ ≠ I with a G-orthonormal candidate: K's eigenvectors are those of
    the whitened pencil) and the rest above the cutoff, and deflates it, cutting what the eigh
    path cuts. Its angle to K's eigenvector is bounded only to ≈ u ‖K‖ / λ_2 in float64 (the
    residual's round-off over the gap), so the estimate exceeds the tolerance: ``Rule.direction``
    keeps the answer with a warning, and the answer is within its estimate of the eigh path
    (measured: 4e-9 against 1.4e-4; with Σ: 2.9e-8 against 1.3e-3)."""
    ws, task = _deep_xavier()
    if with_cov:
        task = cd.Task(task.target, _cov(12, 5))
    rule = cd.get_rule("sqrt-ngd")
    _, info = krylov(ws, task, rule)
    ev = _check_certificate(ws, task, info)
    assert int(info.null_dim) == 1 and ev[0] < 1e-13 * ev[-1]  # the premise: one in the zone
    assert bool(info.converged) and not bool(info.certified)
    est = float(info.error_estimate)
    assert cv.DEFAULT_KRYLOV_TOL < est < 1e-2
    with pytest.warns(RuntimeWarning, match=r"exceeds krylov_tol.*kept"):
        got = rule.direction(ws, task, method="krylov")
    assert R.rel_err(got, rule.direction(ws, task, method="mapspace", diagnose=False)) <= est


def test_several_zone_eigenvalues_are_deflated_together_or_fall_back():
    """Depth 10, Xavier. N = 12 (key 1): two eigenvalues of K in the cutoff zone (2e-18 and
    3e-14 λ_max), the next at 4.5e-12: both are certified and deflated at once, the cut equals the
    eigh path's, and the answer is within its (over-tolerance, warned) estimate of the eigh path
    (measured: 3e-8 against 3.9e-4). N = 10 (key 4): three in the zone (1e-17, 4e-14, 7e-14
    λ_max), the last within the certificate's resolution of the cutoff 1e-13 λ_max: it cannot be
    certified, and ``Rule.direction`` falls back to the eigh path with a warning."""
    rule = cd.get_rule("sqrt-ngd")
    for n, key, n_zone in ((12, 1, 2), (10, 4, 3)):
        ws = cd.init_xavier(jax.random.PRNGKey(key), (n,) * 11, 1.0)
        task = cd.Task(np.random.default_rng(0).standard_normal((n, n)))
        ev = np.linalg.eigvalsh(np.asarray(cv.mapspace_kernel(ws, task)))
        assert int(np.sum(ev <= rule.rcond * ev[-1])) == n_zone  # the premise
        assert ev[n_zone] > 10 * rule.rcond * ev[-1]
        _, info = krylov(ws, task, rule)
        eigh = rule.direction(ws, task, method="mapspace", diagnose=False)
        if n_zone == 2:
            _check_certificate(ws, task, info)
            assert int(info.null_dim) == 2 and bool(info.converged) and not bool(info.certified)
            est = float(info.error_estimate)
            assert cv.DEFAULT_KRYLOV_TOL < est < 1e-2
            with pytest.warns(RuntimeWarning, match=r"exceeds krylov_tol.*kept"):
                got = rule.direction(ws, task, method="krylov")
            assert R.rel_err(got, eigh) <= est
        else:
            assert not bool(info.cutoff_certified) and not bool(info.converged)
            with pytest.warns(RuntimeWarning, match=r"could not certify.*falling back"):
                got = rule.direction(ws, task, method="krylov")
            assert R.rel_err(got, eigh) <= 1e-12


def test_non_identity_covariance_with_a_null_space_falls_back():
    """Σ ≠ I and a singular K: the whitened pseudo-inverse is not the original one, so the path
    declines (and Rule.direction returns the eigh answer, which matches the dense reference)."""
    ws, _, _, _ = case("bottleneck-d4")
    target = np.random.default_rng(3).standard_normal((5, 5))
    cov = _cov(5, 5)
    task = cd.Task(target, cov)
    rule = cd.get_rule("ngd")
    _, info = krylov(ws, task, rule)
    assert not bool(info.converged)
    with pytest.warns(RuntimeWarning, match="falling back"):
        got = rule.direction(ws, task, method="krylov")
    assert R.rel_err(got, R.Reference(ws, target, cov).direction("ngd")) <= TOL


def _set_smallest_singular_value(w, value):
    u, sv, vt = np.linalg.svd(np.asarray(w), full_matrices=False)
    sv = sv.copy()
    sv[-1] = value
    return jnp.asarray((u * sv) @ vt)


def test_jit_and_vmap_equal_single_calls_and_fall_back_per_member():
    """A batch under ``vmap``: converged members equal their single calls and the eigh path; a
    member with singular values 1e-4, 1e-7, 1e-9 in the middle layer and one with three at 1e-9
    (the Kronecker-sum bound is ≈ 0 on three coordinates while λ_min(K) = 1e-4 λ_max: the 2 × 2
    Schur step could not certify it, the ℓ × ℓ one does); a member with an eigenvalue of K at
    rcond · λ_max (first and last layer's smallest singular value 2.6e-6: λ_min = 1.005e-13 λ_max,
    between the certifiable lower and upper ends of the cutoff) cannot be certified either way
    and takes the in-program eigh fallback, the others do not; ``Rule.direction`` says so."""
    widths = (4, 5, 5, 4)
    members = [cd.init_xavier(jax.random.PRNGKey(k), widths, 1.0) for k in range(2)]
    u, _, vt = np.linalg.svd(np.asarray(members[0][1]))
    for svs in ([1.0, 0.5, 1e-4, 1e-7, 1e-9], [1.0, 0.5, 1e-9, 1e-9, 1e-9]):
        low = list(members[0])
        low[1] = jnp.asarray((u * np.array(svs)) @ vt)
        members.append(tuple(low))
    band = list(members[0])
    band[0], band[2] = (_set_smallest_singular_value(band[i], 2.6e-6) for i in (0, 2))
    members.append(tuple(band))
    batch = tuple(jnp.stack([m[i] for m in members]) for i in range(3))
    task = cd.Task(np.random.default_rng(0).standard_normal((4, 4)))
    ev = np.linalg.eigvalsh(np.asarray(cv.mapspace_kernel(members[4], task)))
    assert 0.5e-13 < ev[0] / ev[-1] < 2e-13  # the premise: at the cutoff
    rule = cd.get_rule("sqrt-ngd")
    f = rule.spectral_function()
    out, info = jax.jit(jax.vmap(lambda w: cv.krylov_direction(w, task, f, fallback=True)))(batch)
    assert info.converged.tolist() == [True, True, True, True, False]
    assert info.certified.tolist()[:4] == [True] * 4
    assert info.fallback.tolist() == [False, False, False, False, True]
    for b, ws in enumerate(members[:4]):
        single, single_info = krylov(ws, task, rule)
        assert R.rel_err([o[b] for o in out], single) <= 1e-10
        _check_certificate(ws, task, single_info)
    for b in (2, 3, 4):
        eigh = rule.direction(members[b], task, method="mapspace", diagnose=False)
        assert R.rel_err([o[b] for o in out], eigh) <= (1e-10 if b < 4 else 1e-12)
    with pytest.warns(RuntimeWarning, match=r"could not certify.*falling back"):
        got = rule.direction(members[4], task, method="krylov")
    assert R.rel_err(got, rule.direction(members[4], task, method="mapspace", diagnose=False)) <= 1e-12


def test_warm_start_equals_cold_and_saves_iterations():
    """From the solutions at a nearby point (relative change 1e-4) the direction equals the cold
    one to the tolerance and takes fewer CG iterations (measured: 0.78×; the saving is bounded
    by the tight tolerance: from 1e-4 instead of 1 the solves still reduce errors by ~1e-8)."""
    ws, task = _sim_setup()
    rng = np.random.default_rng(1)
    near = tuple(w + 1e-4 * jnp.linalg.norm(w) * rng.standard_normal(w.shape) / np.sqrt(w.size) for w in ws)
    rule = cd.get_rule("sqrt-ngd")
    step = jax.jit(lambda w, st: direction_warm(w, task, rule, "krylov", st))
    _, state, _ = step(ws, warm_state(ws, task, rule, "krylov"))
    warm, _, stats_warm = step(near, state)
    cold, _, stats_cold = step(near, warm_state(near, task, rule, "krylov"))
    assert R.rel_err(warm, cold) <= 2e-10
    assert float(stats_warm[4]) < 0.9 * float(stats_cold[4])  # iterations


def test_never_forms_k():
    """The compiled krylov path (without the in-program fallback) allocates nothing of the size of
    K: its largest intermediate is a layer or a small stack of map-sized matrices."""
    from test_scale import _max_intermediate

    widths = (6, 6, 6, 6, 6)
    ws = tuple(jnp.asarray(w) for w in _gauss(widths, 0))
    task = cd.Task(np.ones((6, 6)))
    for name in ("ngd", "sqrt-ngd"):
        f = cd.get_rule(name).spectral_function()
        slots = cv.krylov.krylov_slots(f, cv.DEFAULT_KRYLOV_TOL)
        biggest = _max_intermediate(lambda w, f=f: cv.krylov_direction(w, task, f)[0], ws)
        assert biggest <= max(64 * 36, slots * 36) < (36**2) * 2, biggest


def test_rational_tables_are_accurate_where_they_claim():
    """An independent check of every tier: random points of each interval, the stored bound holds;
    Zolotarev's pole counts for x^{-1/2} grow like ln κ (about 3 per decade)."""
    rng = np.random.default_rng(0)
    for alpha in (0.5, 1.0 / 3.0, 2.0 / 3.0):
        table = rational_table(alpha, 2e-11)
        for k, kappa in enumerate(table.kappas):
            n = int(table.counts[k])
            x = np.exp(rng.uniform(-np.log(kappa), 0.0, 4000))
            err = np.abs(evaluate(table.poles[k, :n], table.weights[k, :n], table.poly[k], x) * x**alpha - 1.0)
            assert err.max() <= table.errors[k] <= 2e-11
            assert np.all(table.weights[k, :n] > 0) and np.all(table.poles[k, :n] >= 0)
    z = rational_table(0.5, 2e-11)
    assert z.kind == "zolotarev" and int(z.counts[list(z.kappas).index(1e13)]) <= 46


def test_method_plumbing_and_auto():
    rule = cd.get_rule("sqrt-ngd")
    from curvdyn._names import METHODS

    assert "krylov" in METHODS
    assert rule.resolve_method((20,) * 5, True, "auto") == "krylov"  # n_map = 400
    assert rule.resolve_method((16,) * 5, True, "auto") == "balanced-checked"
    assert rule.resolve_method((64, 64, 64), True, "auto") == "kronsum"
    assert cv.choose_full_method((20, 2, 2, 20), True) == "dense"  # P < n_map: H₊ is smaller
    assert rule.resolve_method((20, 2, 2, 20), True, "auto") == "balanced-checked"
    assert rule.resolve_method((20,) * 3, False, "auto") == "krylov"  # d = 2, Σ ≠ I: K = M exactly
    with pytest.raises(ValueError, match="full-curvature"):
        cd.get_rule("sqrt-ngd-d").resolve_method((3, 3, 3), True, "krylov")
    # balanced-checked never falls back to krylov
    ws = cd.init_xavier(jax.random.PRNGKey(0), (20,) * 4, 1.0)
    task = cd.Task(np.ones((20, 20)))
    assert rule.method_at(ws, task, "balanced-checked") == "mapspace"
    assert cd.get_rule("sgd").direction(ws, task, method="krylov")[0].shape == (20, 20)


# ---------------------------------------------------------------------------------------
# simulate: warm starts
# ---------------------------------------------------------------------------------------


def _sim_setup():
    ws = cd.init_xavier(jax.random.PRNGKey(1), (4, 5, 5, 4), 0.7)
    return ws, cd.Task(np.random.default_rng(0).standard_normal((4, 4)))


def test_warm_started_euler_equals_cold_steps():
    """A batch of two runs (simulate's vmap strategy, warm starts carried in the loop) against
    the same steps taken with cold directions one at a time; the recorded diagnostics are the
    krylov estimates."""
    ws, task = _sim_setup()
    other = tuple(1.1 * w for w in ws)
    batch = tuple(jnp.stack([a, b]) for a, b in zip(ws, other))
    rule = cd.get_rule("sqrt-ngd")
    eta, steps = 0.1, 12
    euler = cd.Euler(steps=steps)
    traj = cd.simulate(batch, task, rule, integrator=euler, eta=eta, n_save=steps + 1, method="krylov", batch="vmap")
    assert traj.config["batch_strategy"] == "vmap"
    for b, start in enumerate((ws, other)):
        w = tuple(map(jnp.asarray, start))
        for k in range(steps):
            d = rule.direction(w, task, method="krylov")
            w = tuple(x - eta * y for x, y in zip(w, d))
            np.testing.assert_allclose(np.asarray(traj.weights[0][b, k + 1]), np.asarray(w[0]), rtol=0, atol=1e-9)
    stats = traj.config["krylov"]
    assert stats["directions"] == 2 * steps and stats["fallbacks"] == 0 and stats["over_tol"] == 0
    assert 0 < stats["max_estimate"] <= 1e-10
    exact = traj.config["exactness"]
    assert exact["reliable"] and 0 < exact["error_estimate"] <= 1e-10 and exact["n_cut"] == 0


def test_warm_started_ode_equals_the_eigh_path():
    ws, task = _sim_setup()
    rule = cd.get_rule("sqrt-ngd")
    opts = dict(integrator=cd.ODE(rtol=1e-10, atol=1e-12), n_save=5, diagnose=False)  # trajectories compared
    a = cd.simulate(ws, task, rule, 2.0, method="krylov", **opts)
    b = cd.simulate(ws, task, rule, 2.0, method="mapspace", **opts)
    assert a.status == b.status == "completed"
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-8 * np.abs(y).max())
    np.testing.assert_allclose(a.update_norm, b.update_norm, rtol=1e-8)
    assert a.config["krylov"]["directions"] >= a.config["solver_steps"] // 2
    assert a.config["krylov"]["fallbacks"] == 0
