"""Exact curvature at scale: every exact path against the independent dense reference, the
``auto`` choice, memory shape of the compiled paths, batched simulation, float32, and CG.

The reference is ``tests/reference.py`` (autodiff Jacobian, ``H₊ = Jᵀ(I ⊗ Σ)J``, numpy
``eigh``); it never calls ``curvdyn.curvature``. Cases cover random, ill-conditioned (small,
unbalanced initial weights), bottleneck, wide, rectangular, non-identity and rank-deficient Σ,
balanced and aligned weights, d = 1…4. Every comparison uses the same tolerance, ``TOL``.
"""

from __future__ import annotations

import functools

import jax
import jax.extend  # jax.extend.core is used below; `import jax` alone does not load it
import jax.numpy as jnp
import numpy as np
import pytest

import curvdyn as cd
import curvdyn.curvature as cv
import reference as R

TOL = 1e-9  # relative, all layers together, against the dense reference
F32_TOL = 1e-5  # float32 vs float64, networks with cond(K) ≤ 1e2 (measured ≤ 1e-6, cond ≤ 30)

# ---------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------


def _gaussian(rng, widths, scales=None):
    """Gaussian layers N(0, 1/max(n_in, n_out)); with ``scales`` each rescaled to that largest
    singular value (the paper's small random initialization: 0.05 for every layer)."""
    ws = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        w = rng.standard_normal((n_out, n_in)) / np.sqrt(max(n_in, n_out))
        if scales is not None:
            w = w * (scales[i] / np.linalg.norm(w, 2))
        ws.append(w)
    return tuple(ws)


def _cov(rng, n, kind):
    if kind == "I":
        return None
    if kind == "full":
        m = rng.standard_normal((n, n))
        return m @ m.T / n + 0.3 * np.eye(n)
    m = rng.standard_normal((n, max(1, n // 2)))  # rank-deficient
    return m @ m.T / m.shape[1]


def _balanced(widths, seed):
    r = min(widths)
    vals = np.linspace(0.6, 1.4, r)  # distinct singular values
    return tuple(np.asarray(w) for w in cd.init_balanced(jax.random.PRNGKey(seed), widths, vals))


#: id -> (widths, weights kind, Σ kind, seed)
CASES = {
    "random-d3": ((4, 6, 5, 3), "gaussian", "I", 1),
    # ill-conditioned: small random layers (largest singular value 0.05, cond(K) ≈ 3e4), and
    # small unbalanced ones (0.5, 0.005, 0.05) with Σ ≠ I (cond(K) ≈ 4e6). The float64 dense
    # reference is itself accurate to about cond · 1e-16 here (≈ 3e-10 measured), so these are
    # near the edge of what it can check at TOL.
    "ill-small-d4": ((6, 8, 7, 8, 6), "small", "I", 9),
    "ill-unbalanced-d3-cov": ((5, 4, 6, 4), "unbalanced", "full", 2),
    "bottleneck-d4-cov": ((5, 6, 2, 6, 5), "gaussian", "full", 4),  # P = 76 > n_map = 25
    "bottleneck-dense-d2": ((6, 2, 5), "gaussian", "full", 5),  # P = 22 < n_map = 30
    "wide-d3": ((3, 24, 20, 4), "gaussian", "I", 6),
    "rankcov-d3": ((6, 5, 4, 3), "gaussian", "rank", 7),
    "d2-I": ((5, 7, 4), "gaussian", "I", 8),
    "d2-cov": ((5, 7, 4), "gaussian", "full", 9),
    "d1-cov": ((5, 4), "gaussian", "full", 10),
    "balanced-d4": ((4, 5, 6, 5, 4), "balanced", "I", 11),
    "balanced-rect-d3": ((5, 7, 4, 6), "balanced", "I", 12),
    "balanced-d3-cov": ((4, 5, 5, 4), "balanced", "full", 13),  # Σ breaks the shared basis
    "aligned-d3": ((4, 6, 6, 4), "aligned", "I", 14),  # aligned, unbalanced
}


@functools.cache
def case(cid):
    widths, kind, cov_kind, seed = CASES[cid]
    rng = np.random.default_rng(seed)
    target = rng.standard_normal((widths[-1], widths[0]))
    if kind == "gaussian":
        ws = _gaussian(rng, widths)
    elif kind == "small":
        ws = _gaussian(rng, widths, (0.05,) * (len(widths) - 1))
    elif kind == "unbalanced":
        ws = _gaussian(rng, widths, (0.5, 0.005, 0.05))
    elif kind == "balanced":
        ws = _balanced(widths, seed)
    else:  # aligned with the target, different per-layer mode values
        r = min(min(widths), *target.shape)
        vals = rng.uniform(0.3, 1.5, size=(len(widths) - 1, r))
        ws = tuple(np.asarray(w) for w in cd.init_aligned(target, widths, vals, key=jax.random.PRNGKey(seed)))
    cov = _cov(rng, widths[0], cov_kind)
    return ws, target, cov, cd.Task(target, cov)


@functools.cache
def ref(cid):
    ws, target, cov, _ = case(cid)
    return R.Reference(ws, target, cov)


def shared_basis_holds(cid) -> bool:
    widths, kind, cov_kind, _ = CASES[cid]
    d = len(widths) - 1
    return d == 1 or (d == 2 and cov_kind == "I") or (kind in ("balanced", "aligned") and cov_kind == "I")


FULL_RULES = {
    "ngd": ("ngd", {}),
    "sqrt-ngd": ("sqrt-ngd", {}),
    "q3": ("frac-ngd", {"q": 3.0}),
    "damped": ("damped-ngd", {"eps": 0.05}),
    "sqrt-lm": ("sqrt-ngd", {"lm_damping": 0.02}),
}


def exact_methods(cid, key):
    widths, _, cov_kind, _ = CASES[cid]
    out = ["mapspace", "auto", "balanced-checked"]
    if len(widths) == 3 and cov_kind == "I":
        out.append("kronsum")
    if shared_basis_holds(cid):
        out.append("balanced")
    if key == "damped":
        out.append("cg")
    return out


#: The cases every rule runs on; NGD and √NGD — the two kinds of spectral function, power one
#: (refined) and a fractional power (not) — run on every case. The other rules change only the
#: spectral function's numbers on the same paths (test_directions checks each against the dense
#: reference on its own cases), so they run where a path is at its edge: ill-conditioned,
#: bottleneck with Σ, rank-deficient Σ, balanced and d = 2 (kronsum). One compile per case,
#: rule and method is what this test costs.
EDGE_CASES = ("ill-small-d4", "ill-unbalanced-d3-cov", "bottleneck-d4-cov", "rankcov-d3", "balanced-d4", "d2-I")


def _params():
    for cid in CASES:
        for key in FULL_RULES:
            if key not in ("ngd", "sqrt-ngd") and cid not in EDGE_CASES:
                continue
            for m in exact_methods(cid, key):
                yield pytest.param(cid, key, m, id=f"{cid}-{key}-{m}")


@pytest.mark.parametrize("cid, key, method", list(_params()))
def test_exact_path_matches_dense_reference(cid, key, method):
    name, params = FULL_RULES[key]
    ws, _, _, task = case(cid)
    got = cd.get_rule(name, **params).direction(ws, task, method=method, diagnose=False)
    want = ref(cid).direction(name, **params)
    assert all(g.dtype == jnp.float64 and g.shape == w.shape for g, w in zip(got, want))
    assert R.rel_err(got, want) <= TOL


def test_ill_conditioned_cases_are_ill_conditioned():
    """The 'ill' cases really are: cond(K) ≥ 1e4 (the other random cases: ≤ 1e3)."""
    for cid in ("ill-small-d4", "ill-unbalanced-d3-cov"):
        ws, _, _, task = case(cid)
        assert cv.condition_number(ws, task) > 1e4, cid
    ws, _, _, task = case("random-d3")
    assert cv.condition_number(ws, task) < 1e3


@pytest.mark.parametrize("cid", ["random-d3", "ill-small-d4", "d2-cov"])
def test_balanced_path_is_wrong_without_a_shared_basis(cid):
    """The declared ``balanced`` path is only right when the basis is shared: here it is far off
    (so the tests above can fail), the error estimate says so, and ``auto`` falls back."""
    ws, _, _, task = case(cid)
    rule = cd.get_rule("ngd")
    want = ref(cid).direction("ngd")
    assert R.rel_err(rule.direction(ws, task, method="balanced", diagnose=False), want) > 1e-3
    assert float(cv.shared_basis_error(ws, task)) > 1e-3
    assert rule.method_at(ws, task) == "mapspace"
    assert R.rel_err(rule.direction(ws, task), want) <= TOL


def test_shared_basis_error_is_round_off_where_the_basis_is_shared():
    for cid in CASES:
        ws, _, _, task = case(cid)
        err = float(cv.shared_basis_error(ws, task))
        if shared_basis_holds(cid):
            assert err <= 1e-11, (cid, err)
        else:
            assert err > 1e-6, (cid, err)


@pytest.mark.parametrize("cid", ["random-d3", "bottleneck-d4-cov", "balanced-d4", "d1-cov"])
@pytest.mark.parametrize("name", ["ngd-d", "sqrt-ngd-d"])
def test_block_paths_match_reference(cid, name):
    ws, _, _, task = case(cid)
    want = ref(cid).direction(name)
    for method in ("kronecker", "mapspace", "auto"):
        assert R.rel_err(cd.get_rule(name).direction(ws, task, method=method, diagnose=False), want) <= TOL


# ---------------------------------------------------------------------------------------
# extended precision: which float64 method is closer to the truth on ill-conditioned K
# ---------------------------------------------------------------------------------------


def test_mapspace_is_at_least_as_accurate_as_dense_on_ill_conditioned_k():
    """Gaussian d = 4, N = 8 (cond(K) ~ 1e5): against an extended-precision NGD direction the
    map-space result is within TOL and no worse than the dense H₊'s own error (×10)."""
    widths = (8,) * 5
    rng = np.random.default_rng(20)
    ws = _gaussian(rng, widths)
    target = rng.standard_normal((8, 8))
    task = cd.Task(target)
    assert cv.condition_number(ws, task) > 1e4
    truth = R.ngd_extended(ws, target)
    rule = cd.get_rule("ngd")
    err_map = R.rel_err(rule.direction(ws, task, method="mapspace"), truth)
    err_dense = R.rel_err(rule.direction(ws, task, method="dense"), truth)
    assert err_map <= TOL
    assert err_map <= 10 * err_dense + 1e-14


# ---------------------------------------------------------------------------------------
# auto
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cid, expected",
    [
        ("random-d3", "mapspace"),
        ("ill-small-d4", "mapspace"),
        ("wide-d3", "mapspace"),
        ("bottleneck-d4-cov", "mapspace"),
        ("bottleneck-dense-d2", "dense"),  # P = 22 < n_d n_0 = 30: H₊ is the smaller matrix
        ("d2-I", "kronsum"),
        ("d2-cov", "mapspace"),
        ("d1-cov", "balanced"),
        ("balanced-d4", "balanced"),
        ("balanced-rect-d3", "balanced"),
        ("aligned-d3", "balanced"),
        ("balanced-d3-cov", "mapspace"),  # balanced, but Σ does not commute with the Grams
    ],
)
def test_auto_picks_each_path(cid, expected):
    ws, _, _, task = case(cid)
    rule = cd.get_rule("sqrt-ngd")
    assert rule.method_at(ws, task) == expected
    widths = cd.widths_of(ws)
    static = rule.resolve_method(widths, task.identity_cov, "auto")
    assert static == ("kronsum" if expected == "kronsum" else "balanced-checked")


def test_auto_for_block_rules_and_gradient():
    rule = cd.get_rule("sqrt-ngd-d")
    assert rule.resolve_method((16, 16, 16, 16, 16), True, "auto") == "kronecker"  # O(Σ n_i³)
    assert rule.resolve_method((2, 64, 64, 2), True, "auto") == "mapspace"  # Grams of size 2
    assert cd.get_rule("sgd").method_at(*case("random-d3")[::3]) == "gradient"


def test_declared_methods_are_validated():
    with pytest.raises(ValueError, match="full-curvature"):
        cd.get_rule("ngd-d").resolve_method((3, 3, 3), True, "balanced")
    with pytest.raises(ValueError, match="damped"):
        cd.get_rule("sqrt-ngd").resolve_method((3, 3, 3, 3), True, "cg")
    with pytest.raises(ValueError, match="unknown method"):
        cd.get_rule("ngd").resolve_method((3, 3, 3), True, "lanczos")


def test_balance_tol_is_user_settable():
    """A looser tolerance lets ``auto`` take the shared basis on nearly balanced weights; the
    default refuses it, and the loose result is off by about the estimate."""
    ws, _, _, task = case("balanced-d4")
    rng = np.random.default_rng(0)
    ws = tuple(w + 1e-6 * rng.standard_normal(w.shape) for w in ws)
    rule = cd.get_rule("ngd")
    est = float(cv.shared_basis_error(ws, task))
    assert 1e-8 < est < 1e-3
    assert rule.method_at(ws, task) == "mapspace"
    assert rule.method_at(ws, task, balance_tol=1e-2) == "balanced"
    exact = rule.direction(ws, task)
    loose = rule.direction(ws, task, balance_tol=1e-2)
    assert R.rel_err(exact, R.Reference(ws, case("balanced-d4")[1]).direction("ngd")) <= TOL
    assert 0 < R.rel_err(loose, exact) <= 10 * est


# ---------------------------------------------------------------------------------------
# what the compiled paths allocate: nothing P × P, no Kronecker product larger than K
# ---------------------------------------------------------------------------------------


def _max_intermediate(fn, *args) -> int:
    """Largest number of elements of any value in the jaxpr of ``fn`` (sub-jaxprs included)."""
    closed = jax.make_jaxpr(fn)(*args)
    sizes = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            for v in eqn.outvars:
                sizes.append(int(np.prod(v.aval.shape)) if hasattr(v.aval, "shape") else 1)
            for p in eqn.params.values():
                for sub in p if isinstance(p, (tuple, list)) else (p,):
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        walk(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        walk(sub)

    walk(closed.jaxpr)
    return max(sizes)


@pytest.mark.parametrize("name", ["ngd", "sqrt-ngd", "damped-ngd"])
def test_auto_never_forms_p_by_p_nor_more_than_k(name):
    from curvdyn.rules import direction_unchecked

    rule = cd.get_rule(name, eps=0.1) if name == "damped-ngd" else cd.get_rule(name)
    for widths in [(6, 5, 5, 5, 6), (3, 40, 30, 4)]:  # K-dominated; layer-dominated (wide)
        ws = tuple(jnp.asarray(w) for w in _gaussian(np.random.default_rng(0), widths))
        task = cd.Task(np.ones((widths[-1], widths[0])))
        p = cd.n_params(ws)
        k_size = (widths[0] * widths[-1]) ** 2
        layer = max(a * b for a, b in zip(widths[:-1], widths[1:]))
        for method in ("auto", "mapspace", "cg") if name == "damped-ngd" else ("auto", "mapspace"):
            m = rule.resolve_method(widths, True, method)
            biggest = _max_intermediate(lambda w, t=task, m=m: direction_unchecked(w, t, rule, m), ws)
            assert biggest <= max(k_size, layer), (widths, method, biggest)
            assert biggest < p * p
        dense = _max_intermediate(lambda w, t=task: direction_unchecked(w, t, rule, "dense"), ws)
        assert dense >= p * p  # the checker sees a P × P matrix when there is one


# ---------------------------------------------------------------------------------------
# batched simulation
# ---------------------------------------------------------------------------------------


def _stack(list_of_ws):
    return tuple(jnp.stack([w[i] for w in list_of_ws]) for i in range(len(list_of_ws[0])))


@pytest.mark.parametrize("method", ["euler", "ode"])
def test_batched_simulation_equals_per_seed_runs(method):
    """Seeds and α scales in one vectorized call, including a balanced member (the batched
    ``balanced-checked`` branch runs as a select), equal the separate runs."""
    widths = (4, 5, 5, 4)
    task = cd.Task(np.random.default_rng(3).standard_normal((4, 4)))
    members = [
        cd.init_xavier(jax.random.PRNGKey(0), widths, 0.5),
        cd.init_xavier(jax.random.PRNGKey(1), widths, 1.0),
        cd.init_xavier(jax.random.PRNGKey(2), widths, 2.0),
        cd.init_balanced(jax.random.PRNGKey(3), widths, np.linspace(0.5, 1.0, 4)),
    ]
    rule = cd.get_rule("sqrt-ngd")
    opts = (
        dict(integrator=cd.Euler(steps=40), eta=0.05, n_save=5)
        if method == "euler"
        else dict(integrator=cd.ODE(rtol=1e-10, atol=1e-12, solver="dopri8"), n_save=5)
    )
    t_end = None if method == "euler" else 2.0
    opts["diagnose"] = False  # the trajectories are compared here; test_exactness checks diagnostics
    batched = cd.simulate(_stack(members), task, rule, t_end, **opts)
    assert batched.batched and batched.t.shape[0] == len(members)
    for b, ws in enumerate(members):
        single = cd.simulate(ws, task, rule, t_end, **opts)
        member = batched.member(b)
        np.testing.assert_allclose(member.t, single.t, rtol=1e-12, atol=1e-14)
        for wb, ws_ in zip(member.weights, single.weights):
            np.testing.assert_allclose(wb, ws_, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(member.loss, single.loss, rtol=1e-9, atol=1e-14)


# ---------------------------------------------------------------------------------------
# float32
# ---------------------------------------------------------------------------------------


def _well_conditioned(widths, seed):
    rng = np.random.default_rng(seed)
    ws = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        k = min(n_in, n_out)
        u = np.linalg.qr(rng.standard_normal((n_out, k)))[0]
        v = np.linalg.qr(rng.standard_normal((n_in, k)))[0]
        ws.append((u * rng.uniform(0.7, 1.3, k)) @ v.T)
    return tuple(ws), rng.standard_normal((widths[-1], widths[0]))


@pytest.mark.parametrize(
    "widths, cov, name, method",
    [
        ((6, 8, 7, 5), False, "sqrt-ngd", "mapspace"),
        ((6, 8, 7, 5), True, "ngd", "auto"),
        ((6, 9, 5), False, "sqrt-ngd", "kronsum"),
        ((5, 6, 6, 5), False, "sqrt-ngd-d", "kronecker"),
        ((5, 6, 6, 5), False, "damped-ngd", "cg"),
        ("balanced", False, "sqrt-ngd", "auto"),
    ],
)
def test_float32_within_tolerance_of_float64(widths, cov, name, method):
    if widths == "balanced":
        widths = (5, 6, 6, 5)
        ws = _balanced(widths, 1)
        target = np.random.default_rng(1).standard_normal((5, 5))
    else:
        ws, target = _well_conditioned(widths, 2)
    c = None
    if cov:
        rng = np.random.default_rng(4)
        q = np.linalg.qr(rng.standard_normal((widths[0],) * 2))[0]
        c = (q * rng.uniform(0.5, 1.5, widths[0])) @ q.T
    task = cd.Task(target, c)
    assert cv.condition_number(ws, task) <= 1e2
    rule = cd.get_rule(name, eps=0.1) if name == "damped-ngd" else cd.get_rule(name)
    want = rule.direction(ws, task, method=method, diagnose=False)  # the float64 reference
    ws32, task32 = cd.astype(ws, task, jnp.float32)
    kw = {"cg_tol": 1e-5} if method == "cg" else {}
    got = rule.direction(ws32, task32, method=method, **kw)
    assert all(g.dtype == jnp.float32 for g in got)
    assert R.rel_err(got, want) <= F32_TOL
    if method == "auto" and widths == (5, 6, 6, 5):
        assert rule.method_at(ws32, task32) == "balanced"  # the float32 balance tolerance


@pytest.mark.parametrize("method", ["ode", "euler"])
def test_simulate_keeps_float32(method):
    ws, target = _well_conditioned((5, 6, 5), 3)
    task = cd.Task(target)
    ws32, task32 = cd.astype(ws, task, jnp.float32)
    integrator = cd.ODE(rtol=1e-5, atol=1e-7) if method == "ode" else cd.Euler(dt=0.01)
    rule = cd.get_rule("sqrt-ngd")
    t32 = cd.simulate(ws32, task32, rule, t_end=1.0, integrator=integrator, n_save=5)
    t64 = cd.simulate(ws, task, rule, t_end=1.0, integrator=integrator, n_save=5)
    assert t32.status == t64.status == "completed"
    assert all(w.dtype == np.float32 for w in t32.weights) and t32.loss.dtype == np.float32
    assert all(w.dtype == np.float64 for w in t64.weights)
    # float32 round-off and (ODE) the solver's tolerance, relative to the initial loss
    assert np.max(np.abs(t32.loss - t64.loss)) <= 1e-4 * t64.loss[0]


def test_rcond_default_is_dtype_aware():
    assert cv.default_rcond(jnp.float64) == cv.DEFAULT_RCOND == 1e-13
    assert cv.default_rcond(jnp.float32) == cv.DEFAULT_RCOND_F32 == 1e-5
    assert cd.get_rule("ngd").rcond == 1e-13  # rules carry the float64 value ...
    f = cd.get_rule("ngd").spectral_function()
    assert f.cutoff(jnp.float32) == 1e-5  # ... which means "the dtype default" in float32
    assert f.cutoff(jnp.float64) == 1e-13
    g = cd.get_rule("ngd", rcond=1e-3).spectral_function()
    assert g.cutoff(jnp.float32) == g.cutoff(jnp.float64) == 1e-3  # explicit values are kept
    # in action: a K eigenvalue at ~1e-6 λ_max is cut in float32 by default, kept in float64
    vals = jnp.array([1e-6, 0.5, 1.0])
    assert float(f(vals.astype(jnp.float32), jnp.float32(1.0))[0]) == 0.0
    assert float(f(vals, 1.0)[0]) == pytest.approx(1e6)


def test_astype_casts_weights_and_task():
    ws, _, _, task = case("rankcov-d3")
    ws32, task32 = cd.astype(ws, task, jnp.float32)
    assert all(w.dtype == jnp.float32 for w in ws32)
    assert task32.target.dtype == task32.input_cov.dtype == task32.sqrt_cov.dtype == jnp.float32
    assert task32.identity_cov == task.identity_cov and task32.loss_offset == task.loss_offset
    with pytest.raises(ValueError):
        cd.astype(ws, task, jnp.int32)


# ---------------------------------------------------------------------------------------
# conjugate gradients (damped rules)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1.0, 1e-2, 1e-4])
def test_cg_stops_on_its_error_bound_and_reports_iterations(eps):
    ws, _, _, task = case("bottleneck-d4-cov")
    rule = cd.get_rule("damped-ngd", eps=eps)
    f = rule.spectral_function()
    want = ref("bottleneck-d4-cov").direction("damped-ngd", eps=eps)
    for tol in (1e-4, 1e-10):
        got, info = cv.cg_direction(ws, task, f, tol=tol)
        err = R.rel_err(got, want)
        assert bool(info.converged) and float(info.error_bound) <= tol
        assert err <= float(info.error_bound) * 1.01 + 1e-13  # the bound is a bound
        assert 1 <= int(info.iterations) <= 2000
    # a tighter tolerance takes more iterations
    _, loose = cv.cg_direction(ws, task, f, tol=1e-4)
    _, tight = cv.cg_direction(ws, task, f, tol=1e-10)
    assert int(tight.iterations) >= int(loose.iterations)


def test_cg_warns_when_it_hits_maxiter():
    ws, _, _, task = case("ill-small-d4")
    rule = cd.get_rule("damped-ngd", eps=1e-12)
    with pytest.warns(RuntimeWarning, match="cg stopped after 3 iterations"):
        rule.direction(ws, task, method="cg", cg_maxiter=3)


def test_everything_jits_and_vmaps():
    """Each full path traces under jit and vmap (the batched simulate relies on it)."""
    from curvdyn.rules import direction_unchecked

    widths = (4, 5, 5, 4)
    members = [cd.init_xavier(jax.random.PRNGKey(k), widths, 1.0) for k in range(3)]
    members.append(cd.init_balanced(jax.random.PRNGKey(9), widths, np.linspace(0.5, 1.0, 4)))
    batch = _stack(members)
    task = cd.Task(np.random.default_rng(0).standard_normal((4, 4)))
    for name, method in [
        ("sqrt-ngd", "balanced-checked"),
        ("sqrt-ngd", "mapspace"),
        ("ngd", "dense"),
        ("damped-ngd", "cg"),
        ("sqrt-ngd-d", "kronecker"),
    ]:
        rule = cd.get_rule(name, eps=0.1) if name == "damped-ngd" else cd.get_rule(name)
        fn = jax.jit(jax.vmap(lambda w, r=rule, m=method: direction_unchecked(w, task, r, m)))
        out = fn(batch)
        for b, ws in enumerate(members):
            single = rule.direction(ws, task, method=method)
            assert R.rel_err([o[b] for o in out], single) <= 1e-12, (name, method, b)
