"""Every rule's direction, by every valid method, against the independent dense reference.

The reference (``tests/reference.py``) rebuilds the map, loss, gradient and ``H₊`` from the
definitions with JAX autodiff and applies spectral functions with ``numpy.linalg.eigh``; it
never calls ``curvdyn.curvature``. Cases are small (P ≤ ~200) so the O(P³) reference is cheap.

Weights are seeded Gaussians with entries ``N(0, 1/max(n_in, n_out))``: every layer has
singular values of order one, so the nonzero spectrum of ``H₊`` spans one to three decades
(condition numbers 4 to ~1e3 on these cases) — far from both the cutoff and an identity
spectrum, which is what makes fractional powers distinguishable (checked below) and the
1e-9 tolerance meaningful (round-off observed here is ~1e-14).

JIT compilation dominates the run time (one compile per rule configuration, method and
shape, ~0.3–0.5 s each), so the rule × case matrix is a balanced design rather than a full
product (``CASE_RULES``): each case runs a few configurations, each with every valid method
(full rules: dense, mapspace, auto and, for d = 2 with Σ = I, kronsum; block rules: dense,
mapspace, kronecker, auto). ``test_design_covers_every_configuration`` checks that every
configuration and rule name is used and that q = 1, 1.5, 2, 3 each run on at least two cases
for the full and for the block rules; the cases cover depths 1–5, bottlenecks, wide layers,
rectangular maps and identity / full-rank / rank-deficient Σ. The structure-exploiting methods
(``balanced``, ``balanced-checked``, ``cg``) have their own section, on weights where they apply.
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
import pytest

import curvdyn as cd
import curvdyn.curvature as cv
import reference as R

TOL = 1e-9  # rule direction vs reference (relative, all layers together)
TOL_METHODS = 1e-10  # map-space vs dense, both from curvdyn

# ---------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------

#: id -> (widths (n_0, ..., n_d), Σ kind, rank of Σ when rank-deficient, seed)
CASES = {
    "d1-rect-fullcov": ((5, 4), "full", None, 11),
    "d1-rankcov": ((4, 6), "rank", 2, 12),
    "d2-wide-I": ((4, 6, 3), "I", None, 13),
    "d2-bottleneck-I": ((5, 3, 5), "I", None, 14),
    "d2-bottleneck-fullcov": ((6, 2, 5), "full", None, 15),
    "d3-rect-fullcov": ((4, 7, 6, 3), "full", None, 17),
    "d3-wide-I": ((3, 12, 10, 4), "I", None, 18),
    "d4-bottleneck-rankcov": ((4, 5, 2, 6, 4), "rank", 3, 19),
    "d5-bottleneck-fullcov": ((3, 5, 4, 6, 2, 4), "full", None, 20),
}
# d = 1 with Σ = I is deliberately absent: there H₊ = I, on which every power is the identity.


@functools.cache
def case(case_id: str):
    """(ws as numpy arrays, target, Σ or None, Task) for a case id, deterministic in its seed."""
    widths, cov_kind, rank, seed = CASES[case_id]
    rng = np.random.default_rng(seed)
    ws = tuple(
        rng.standard_normal((n_out, n_in)) / np.sqrt(max(n_in, n_out)) for n_in, n_out in zip(widths[:-1], widths[1:])
    )
    target = rng.standard_normal((widths[-1], widths[0]))
    n0 = widths[0]
    if cov_kind == "I":
        cov = None
    elif cov_kind == "full":
        m = rng.standard_normal((n0, n0))
        cov = m @ m.T / n0 + 0.3 * np.eye(n0)  # eigenvalues in ~[0.3, 4]: full rank, not I
    else:
        m = rng.standard_normal((n0, rank))
        cov = m @ m.T / rank  # PSD of rank `rank` < n0
    return ws, target, cov, cd.Task(target, cov)


@functools.cache
def ref(case_id: str) -> R.Reference:
    ws, target, cov, _ = case(case_id)
    return R.Reference(ws, target, cov)


def depth(case_id: str) -> int:
    return len(CASES[case_id][0]) - 1


def identity_cov(case_id: str) -> bool:
    return CASES[case_id][1] == "I"


def full_methods(case_id: str) -> list[str]:
    out = ["dense", "mapspace", "auto"]
    if depth(case_id) == 2 and identity_cov(case_id):
        out.append("kronsum")
    return out


BLOCK_METHODS = ["dense", "mapspace", "kronecker", "auto"]

RATES = (0.7, 1.3, 0.4, 2.0, 0.9)  # per-layer rates, truncated to the depth


def resolve_params(params: dict, case_id: str) -> dict:
    out = dict(params)
    if out.get("layer_rates") == "RATES":
        out["layer_rates"] = RATES[: depth(case_id)]
    return out


# key -> (rule name, params); "RATES" stands for the per-layer rates of the case's depth
FULL = {
    "sgd": ("sgd", {}),
    "ngd": ("ngd", {}),
    "sqrt-ngd": ("sqrt-ngd", {}),
    "q1.5": ("frac-ngd", {"q": 1.5}),
    "q3": ("frac-ngd", {"q": 3.0}),
    "qinf": ("frac-ngd", {"q": math.inf}),
    "eps0": ("damped-ngd", {"eps": 0.0}),
    "eps0.1": ("damped-ngd", {"eps": 0.1}),
    "eps2": ("damped-ngd", {"eps": 2.0}),
    "ngd-lm": ("ngd", {"lm_damping": 0.1}),
    "sqrt-lm": ("sqrt-ngd", {"lm_damping": 0.05}),
    "q3-lm": ("frac-ngd", {"q": 3.0, "lm_damping": 0.5}),
}
BLOCK = {
    "ngd-d": ("ngd-d", {}),
    "sqrt-ngd-d": ("sqrt-ngd-d", {}),
    "q1.5-d": ("frac-ngd-d", {"q": 1.5}),
    "q3-d": ("frac-ngd-d", {"q": 3.0}),
    "ngd-d-lm": ("ngd-d", {"lm_damping": 0.1}),
    "sqrt-d-rates": ("sqrt-ngd-d", {"layer_rates": "RATES"}),
    "q1.5-d-rates-lm": ("frac-ngd-d", {"q": 1.5, "layer_rates": "RATES", "lm_damping": 0.2}),
}

# Balanced design: which configurations each case runs (all valid methods each).
CASE_RULES = {
    "d1-rect-fullcov": ("q1.5", "q3-d", "ngd-d", "eps0"),
    "d1-rankcov": ("q3-lm", "sqrt-d-rates", "eps0.1"),
    "d2-wide-I": ("q3", "ngd-d-lm", "eps0", "sgd"),
    "d2-bottleneck-I": ("ngd", "q1.5-d-rates-lm", "sqrt-lm"),
    "d2-bottleneck-fullcov": ("sqrt-ngd", "q3-d", "eps2", "ngd-lm"),
    "d3-rect-fullcov": ("ngd", "sqrt-ngd-d"),
    "d3-wide-I": ("q3",),
    "d4-bottleneck-rankcov": ("sqrt-ngd", "q1.5-d", "qinf"),
    "d5-bottleneck-fullcov": ("q1.5", "sqrt-d-rates"),
}

FULL_PAIRS = [(c, k) for c, keys in CASE_RULES.items() for k in keys if k in FULL]
BLOCK_PAIRS = [(c, k) for c, keys in CASE_RULES.items() for k in keys if k in BLOCK]


def test_design_covers_every_configuration():
    """Every configuration and rule name is exercised; every q in {1, 1.5, 2, 3} (full and
    block) runs on at least two cases; so does eps = 0."""
    used: dict[str, set] = {}
    for cid, key in FULL_PAIRS + BLOCK_PAIRS:
        used.setdefault(key, set()).add(cid)
    assert set(used) == set(FULL) | set(BLOCK)
    assert {(FULL.get(k) or BLOCK.get(k))[0] for k in used} == set(cd.RULE_NAMES)
    for table, pairs in ((FULL, FULL_PAIRS), (BLOCK, BLOCK_PAIRS)):
        by_q: dict[float, set] = {}
        for cid, key in pairs:
            name, params = table[key]
            q = params.get("q", {"ngd": 1.0, "ngd-d": 1.0, "sqrt-ngd": 2.0, "sqrt-ngd-d": 2.0}.get(name))
            by_q.setdefault(q, set()).add(cid)
        for q in (1.0, 1.5, 2.0, 3.0):
            assert len(by_q.get(q, ())) >= 2, q
    assert len(used["eps0"]) >= 2  # the pseudo-inverse limit of eq. 17, on two cases
    assert {CASES[c][1] for c in CASES} == {"I", "full", "rank"}
    assert {depth(c) for c in CASES} == {1, 2, 3, 4, 5}


def direction(case_id: str, key: str, method: str):
    name, params = FULL.get(key) or BLOCK[key]
    ws, _, _, task = case(case_id)
    rule = cd.get_rule(name, **resolve_params(params, case_id))
    # the numerics alone: the diagnostics are checked in test_exactness (and, with the
    # direction, in test_diagnosed_direction_is_the_same_computation)
    return rule.direction(ws, task, method=method, diagnose=False)


def ref_direction(case_id: str, key: str):
    name, params = FULL.get(key) or BLOCK[key]
    return ref(case_id).direction(name, **resolve_params(params, case_id))


# ---------------------------------------------------------------------------------------
# the reference itself (a test must be able to fail: so must the reference)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", ["d4-bottleneck-rankcov"])
def test_reference_hessian_is_hessian_at_zero_residual(case_id):
    """At W* = W the loss Hessian is exactly the Gauss–Newton matrix: checks ``I ⊗ Σ`` and vec order."""
    r = ref(case_id)
    w_now = np.asarray(R.product_map(r.ws))
    hess = R.loss_hessian_flat(r.ws, w_now, r.cov)
    assert np.linalg.norm(hess - r.h) <= 1e-12 * np.linalg.norm(r.h)


@pytest.mark.parametrize("case_id", ["d2-bottleneck-fullcov", "d5-bottleneck-fullcov"])
def test_reference_gradient_is_jacobian_pullback(case_id):
    """``g = Jᵀ (I ⊗ Σ) vec_r(Δ)``: the autodiff gradient and the Jacobian agree on conventions."""
    r = ref(case_id)
    delta = np.asarray(R.product_map(r.ws)) - r.target
    pulled = R.jacobian(r.ws).T @ np.kron(np.eye(r.widths[-1]), r.cov) @ delta.reshape(-1)
    assert np.linalg.norm(pulled - r.g) <= 1e-12 * np.linalg.norm(r.g)


@pytest.mark.parametrize("case_id", ["d1-rect-fullcov", "d1-rankcov"])
def test_reference_depth_one_closed_form(case_id):
    """d = 1: ``H₊ = I ⊗ Σ`` and the q-NGD direction is ``Δ Σ^{1−1/q}`` (power on the range of Σ)."""
    r = ref(case_id)
    delta = r.ws[0] - r.target
    evals, evecs = np.linalg.eigh(r.cov)
    keep = evals > R.RCOND * evals.max()
    for q in (1.0, 1.5, 3.0):
        cov_pow = (evecs * np.where(keep, np.abs(evals) ** (1 - 1 / q), 0.0)) @ evecs.T
        expected = delta @ cov_pow
        got = r.direction("frac-ngd", q=q)[0]
        assert np.linalg.norm(got - expected) <= 1e-12 * np.linalg.norm(expected)


@pytest.mark.parametrize("case_id", list(CASES))
def test_fractional_powers_are_distinguishable(case_id):
    """On every case q = 1, 1.5, 2, 3 and SGD give clearly different directions (full and block),
    so a wrong root, a wrong layer factor or a skipped correction cannot pass at 1e-9."""
    r = ref(case_id)
    full = [r.direction("sgd")] + [r.direction("frac-ngd", q=q) for q in (1.0, 1.5, 2.0, 3.0)]
    block = [r.direction("frac-ngd-d", q=q) for q in (1.0, 1.5, 2.0, 3.0)]
    for group in (full, block):
        for a in range(len(group)):
            for b in range(a + 1, len(group)):
                assert R.rel_err(group[a], group[b]) > 0.01, (a, b)
    # the block rule differs from the full rule (d ≥ 2), and damping values differ from each other
    if r.depth >= 2:
        assert R.rel_err(block[2], full[3]) > 0.01
    damped = [r.direction("damped-ngd", eps=e) for e in (0.0, 0.1, 2.0)]
    assert R.rel_err(damped[0], damped[1]) > 0.01 and R.rel_err(damped[1], damped[2]) > 0.01


# ---------------------------------------------------------------------------------------
# directions vs reference
# ---------------------------------------------------------------------------------------


def _full_params():
    for cid, key in FULL_PAIRS:
        for m in full_methods(cid):
            yield pytest.param(cid, key, m, id=f"{cid}-{key}-{m}")


def _block_params():
    for cid, key in BLOCK_PAIRS:
        for m in BLOCK_METHODS:
            yield pytest.param(cid, key, m, id=f"{cid}-{key}-{m}")


@pytest.mark.parametrize("case_id, key, method", list(_full_params()))
def test_full_rule_direction_matches_reference(case_id, key, method):
    got = direction(case_id, key, method)
    want = ref_direction(case_id, key)
    assert len(got) == len(want)
    for g_i, w_i in zip(got, want):
        assert g_i.shape == w_i.shape and g_i.dtype == np.float64
    assert R.rel_err(got, want) <= TOL


@pytest.mark.parametrize("case_id, key, method", list(_block_params()))
def test_block_rule_direction_matches_reference(case_id, key, method):
    got = direction(case_id, key, method)
    want = ref_direction(case_id, key)
    for g_i, w_i in zip(got, want):
        assert g_i.shape == w_i.shape and g_i.dtype == np.float64
    assert R.rel_err(got, want) <= TOL


@pytest.mark.parametrize("case_id, key", [pytest.param(c, k, id=f"{c}-{k}") for c, k in FULL_PAIRS + BLOCK_PAIRS])
def test_mapspace_equals_dense(case_id, key):
    dense = direction(case_id, key, "dense")
    mapspace = direction(case_id, key, "mapspace")
    assert R.rel_err(mapspace, dense) <= TOL_METHODS


def test_block_rule_q_infinity_applies_layer_rates():
    """q = ∞ block rule: ``(H_i⁺)^0 g_i = g_i`` (g_i lies in the range of H_i), times η_i.

    (A regression test: an early ``Rule.is_gradient`` short-cut returned the plain gradient
    here, ignoring the rates, while q = 1e300 applied them.)"""
    cid = "d3-rect-fullcov"
    ws, _, _, task = case(cid)
    rates = RATES[: depth(cid)]
    got = cd.get_rule("frac-ngd-d", q=math.inf, layer_rates=rates).direction(ws, task)
    want = ref(cid).direction("frac-ngd-d", q=math.inf, layer_rates=rates)
    assert R.rel_err(got, want) <= TOL


# ---------------------------------------------------------------------------------------
# methods that exploit structure: balanced / balanced-checked (shared eigenbasis), cg (damped)
# ---------------------------------------------------------------------------------------


@functools.cache
def structured_case(kind: str):
    """Weights where the Grams share an eigenbasis (the ``balanced`` path is exact).

    * ``balanced``: init_balanced with distinct per-mode values, unequal widths, Σ = I;
    * ``aligned``: init_aligned to the target with r = 2 < min(widths) active modes (so K has
      zero eigenvalues: the cutoff is exercised), Σ = I;
    * ``depth1``: d = 1 with a full Σ (P_1 = I, Q_1 = Σ commute trivially).
    """
    rng = np.random.default_rng({"balanced": 31, "aligned": 32, "depth1": 33}[kind])
    if kind == "balanced":
        widths = (3, 5, 4, 3)
        ws = cd.init_balanced(jax.random.PRNGKey(4), widths, np.array([1.4, 0.9, 0.5]))
        cov = None
    elif kind == "aligned":
        widths = (4, 6, 3)
        target = rng.standard_normal((3, 4))
        vals = np.array([[1.3, 0.6], [0.8, 1.1]])
        ws = cd.init_aligned(target, widths, vals, key=jax.random.PRNGKey(5))
        cov = None
    else:
        widths = (4, 3)
        ws = (rng.standard_normal((3, 4)),)
        m = rng.standard_normal((4, 4))
        cov = m @ m.T / 4 + 0.3 * np.eye(4)
    ws = tuple(np.asarray(w) for w in ws)
    target = rng.standard_normal((widths[-1], widths[0]))
    return ws, target, cov, cd.Task(target, cov), R.Reference(ws, target, cov)


STRUCTURED = ["balanced", "aligned", "depth1"]


@pytest.mark.parametrize("kind", STRUCTURED)
def test_structured_cases_have_rich_spectra(kind):
    """As for the main cases: q = 2 and q = 3 differ clearly, so the comparison below is meaningful."""
    r = structured_case(kind)[-1]
    assert R.rel_err(r.direction("frac-ngd", q=2.0), r.direction("frac-ngd", q=3.0)) > 0.01
    assert R.rel_err(r.direction("ngd"), r.direction("frac-ngd", q=3.0)) > 0.01


@pytest.mark.parametrize(
    "kind, key, method",
    [
        ("balanced", "q3", "balanced"),
        ("aligned", "ngd", "balanced-checked"),
        ("depth1", "eps0.1", "balanced"),
    ],
)
def test_balanced_methods_on_balanced_weights(kind, key, method):
    ws, _, _, task, r = structured_case(kind)
    name, params = FULL[key]
    rule = cd.get_rule(name, **params)
    assert rule.method_at(ws, task, method) == "balanced"  # the shared-basis path really runs
    got = rule.direction(ws, task, method=method)
    assert R.rel_err(got, r.direction(name, **params)) <= TOL


@pytest.mark.parametrize("case_id", ["d3-rect-fullcov"])
def test_balanced_checked_falls_back_on_generic_weights(case_id):
    """Random weights: the check rejects the shared basis (auto then runs the exact fallback,
    whose result the main matrix compares with the reference); ``balanced`` itself is then wrong,
    which shows the check is needed and that this comparison could fail."""
    ws, _, _, task = case(case_id)
    rule = cd.get_rule("ngd")
    assert rule.method_at(ws, task, "auto") in ("mapspace", "dense")
    assert R.rel_err(rule.direction(ws, task, method="balanced"), ref(case_id).direction("ngd")) > 1e-3


@pytest.mark.parametrize("case_id, key", [("d2-bottleneck-fullcov", "eps0.1"), ("d4-bottleneck-rankcov", "ngd-lm")])
def test_cg_on_damped_rules(case_id, key):
    """CG stops on a guaranteed bound on Λ's error; the pull-back Ĵᵀ can amplify a relative
    error, so we ask cg_tol = 1e-12, well below the usual 1e-9 asserted on the direction
    (observed: ~1e-14; at the default cg_tol = 1e-10, 1e-11 to 1e-13)."""
    ws, _, _, task = case(case_id)
    name, params = FULL[key]
    got = cd.get_rule(name, **params).direction(ws, task, method="cg", cg_tol=1e-12)
    assert R.rel_err(got, ref(case_id).direction(name, **params)) <= TOL


# ---------------------------------------------------------------------------------------
# the curvature objects
# ---------------------------------------------------------------------------------------


CURVATURE_CASES = ["d1-rankcov", "d2-wide-I", "d2-bottleneck-fullcov", "d3-wide-I", "d4-bottleneck-rankcov"]


@pytest.mark.parametrize("case_id", CURVATURE_CASES)
def test_hessian_plus_matches_reference(case_id):
    ws, _, _, task = case(case_id)
    h = np.asarray(jax.jit(cv.hessian_plus)(ws, task))  # jit only to save op-by-op dispatch
    h_ref = ref(case_id).h
    assert h.shape == h_ref.shape
    assert np.linalg.norm(h - h_ref) <= 1e-12 * np.linalg.norm(h_ref)


@pytest.mark.parametrize("case_id", CURVATURE_CASES)
def test_mapspace_kernel_has_the_nonzero_spectrum_of_hessian_plus(case_id):
    """K = Ĵ Ĵᵀ and H₊ = Ĵᵀ Ĵ: equal spectra up to zeros (eigenvalue errors ≤ 1e-12 λ_max)."""
    ws, _, _, task = case(case_id)
    k = np.asarray(jax.jit(cv.mapspace_kernel)(ws, task))
    n_map = CASES[case_id][0][0] * CASES[case_id][0][-1]
    assert k.shape == (n_map, n_map)
    assert np.linalg.norm(k - k.T) <= 1e-14 * np.linalg.norm(k)
    ev_k = np.sort(np.linalg.eigvalsh(k))[::-1]
    ev_h = np.sort(np.linalg.eigvalsh(ref(case_id).h))[::-1]
    top = ev_h[0]
    m = min(ev_k.size, ev_h.size)
    assert np.max(np.abs(ev_k[:m] - ev_h[:m])) <= 1e-12 * top
    # the surplus eigenvalues of the larger operator are zero
    assert np.all(np.abs(ev_k[m:]) <= 1e-12 * top) and np.all(np.abs(ev_h[m:]) <= 1e-12 * top)
    # and there is a real spectrum (not all zero) on every case
    assert np.sum(ev_h > 1e-8 * top) >= 2


# ---------------------------------------------------------------------------------------
# properties (no reference direction needed)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", [c for c, k in FULL_PAIRS if k == "ngd"])
def test_ngd_satisfies_natural_gradient_constraint(case_id):
    """Eq. 9: ``H₊ d = g`` for the NGD direction (g lies in the range of H₊). Tolerance 1e-10
    relative to ‖g‖: the residual is round-off amplified by at most cond(H₊) ≤ ~1e3 here."""
    ws, _, _, task = case(case_id)
    h = ref(case_id).h
    d = R.flat_np(cd.get_rule("ngd").direction(ws, task))
    g = R.flat_np(cd.gradient(ws, task))
    assert np.linalg.norm(h @ d - g) <= 1e-10 * np.linalg.norm(g)


@pytest.mark.parametrize("case_id", ["d4-bottleneck-rankcov"])
def test_fractional_power_identities(case_id):
    """With ``d_q = H^{-1/q} g``: ``‖d_q‖² = g·d_{q/2}`` (q = 2, 3) and ``d_qᵀ H d_q = g·d_{q/(2−q)}``
    (q = 1 → NGD, q = 1.5 → q = 3): identities between curvdyn's own outputs, with only H₊ taken
    from the reference. Relative tolerance 1e-10 on these scalars (sums of positive terms)."""
    ws, _, _, task = case(case_id)
    h = ref(case_id).h
    g = R.flat_np(cd.gradient(ws, task))

    def d(q):
        return R.flat_np(cd.get_rule("frac-ngd", q=q).direction(ws, task, method="mapspace"))

    d1, d15, d2, d3 = d(1.0), d(1.5), d(2.0), d(3.0)
    pairs = [
        (d2 @ d2, g @ d1),
        (d3 @ d3, g @ d15),
        (d1 @ h @ d1, g @ d1),
        (d15 @ h @ d15, g @ d3),
        (d2 @ h @ d2, g @ g),
    ]
    for lhs, rhs in pairs:
        assert abs(lhs - rhs) <= 1e-10 * abs(rhs)


@pytest.mark.parametrize("case_id", [c for c in CASES if depth(c) >= 2])
def test_full_rules_are_orthogonal_to_the_null_space(case_id):
    """Theorem 1: the symmetry directions ``(.., m_i w_i, −w_{i+1} m_i, ..)`` (random m_i) are
    null directions of H₊, and every full-curvature direction is orthogonal to them (cosine
    ≤ 1e-10, round-off is ~1e-15), while the block-diagonal directions are not (cosines of
    1e-2 to 1e-1 on these cases; > 1e-3 asserted)."""
    ws, _, _, task = case(case_id)
    rng = np.random.default_rng(100 + depth(case_id))
    ms = [rng.standard_normal((w.shape[0], w.shape[0])) for w in ws[:-1]]
    v = R.null_direction(ws, ms)
    vf = R.flat_np(v)
    r = ref(case_id)
    assert np.linalg.norm(r.h @ vf) <= 1e-12 * np.linalg.norm(r.h) * np.linalg.norm(vf)

    def cosine(d):
        return R.inner(v, d) / (np.linalg.norm(vf) * np.linalg.norm(R.flat_np(d)))

    for key in CASE_RULES[case_id]:
        d = direction(case_id, key, "auto")
        if key in FULL:
            assert abs(cosine(d)) <= 1e-10, key
        else:
            assert abs(cosine(d)) > 1e-3, key
    assert abs(cosine(cd.gradient(ws, task))) <= 1e-10
    assert abs(cosine(r.direction("ngd-d"))) > 1e-3


def test_depth_one_block_rules_equal_full_rules():
    """With a single layer the only block is H₊ itself and d^{-1/q} = 1."""
    ws, _, _, task = case("d1-rect-fullcov")
    a = cd.get_rule("frac-ngd", q=1.5).direction(ws, task)
    b = cd.get_rule("frac-ngd-d", q=1.5).direction(ws, task)
    assert R.rel_err(b, a) <= 1e-12


def test_damped_ngd_limits():
    """eq. 17: ε → 0 gives NGD and ε → ∞ gives SGD. Per eigenvalue λ the factor (ε+1)/(ε+λ)
    differs from 1/λ by ε|λ−1|/(λ(ε+λ)) ≤ ε·s/λ_min² (s = max|λ−1|) and from 1 by
    |1−λ|/(ε+λ) ≤ s/ε; with ‖H⁺g‖ ≥ ‖g‖/λ_max these bound the relative errors below."""
    cid = "d3-rect-fullcov"
    ws, _, _, task = case(cid)
    ev = ref(cid).eig[0]
    ev = ev[ev > 1e-10 * ev.max()]
    spread = np.max(np.abs(ev - 1.0))
    g = cd.gradient(ws, task)
    ngd = cd.get_rule("ngd").direction(ws, task)
    eps = 1e-7
    near = cd.get_rule("damped-ngd", eps=eps).direction(ws, task)
    assert R.rel_err(near, ngd) <= eps * spread * ev.max() / ev.min() ** 2
    assert R.rel_err(near, ngd) > 1e-3 * eps  # the damping is applied (error is ~ε·O(1))
    eps = 1e7
    far = cd.get_rule("damped-ngd", eps=eps).direction(ws, task)
    assert R.rel_err(far, g) <= spread / eps
    assert R.rel_err(far, g) > 1e-3 / eps


# ---------------------------------------------------------------------------------------
# the cutoff
# ---------------------------------------------------------------------------------------


RCOND_TEST = 1e-3
TINY = 1e-5  # one eigenvalue of Σ, relative to the others (1 to 2)


@functools.cache
def _tiny_mode_case(widths):
    """Well-conditioned layers (orthogonal × singular values in [0.8, 1.25]) and a Σ with one
    eigenvalue 1e-5: H₊ (and its blocks) then have a cluster of eigenvalues ~1e-5 λ_max and the
    rest above ~1e-2 λ_max, so a cutoff of 1e-3 sits in a wide gap (asserted in the test)."""
    rng = np.random.default_rng(sum(widths))
    ws = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        u = np.linalg.qr(rng.standard_normal((n_out, n_out)))[0]
        v = np.linalg.qr(rng.standard_normal((n_in, n_in)))[0]
        k = min(n_in, n_out)
        ws.append((u[:, :k] * rng.uniform(0.8, 1.25, k)) @ v[:, :k].T)
    ws = tuple(ws)
    target = rng.standard_normal((widths[-1], widths[0]))
    n0 = widths[0]
    basis = np.linalg.qr(rng.standard_normal((n0, n0)))[0]
    evals = np.linspace(1.0, 2.0, n0)
    evals[0] = TINY
    cov = (basis * evals) @ basis.T
    return ws, target, cov, R.Reference(ws, target, cov), R.Reference(ws, target, 1e4 * cov)


def _assert_gap(evals):
    rel = evals / evals.max()
    assert not np.any((rel > RCOND_TEST / 20) & (rel < RCOND_TEST * 5))  # nothing near the cutoff
    assert np.any((rel > 1e-12) & (rel < RCOND_TEST / 20))  # something is cut


@pytest.mark.parametrize(
    "widths, name, params, method",
    [
        ((4, 3), "ngd", {}, "dense"),
        ((4, 5, 3), "sqrt-ngd", {}, "dense"),
        ((4, 5, 3), "damped-ngd", {"eps": 0.0}, "mapspace"),
        ((4, 5, 6, 3), "ngd-d", {}, "kronecker"),
        ((4, 5, 6, 3), "sqrt-ngd-d", {}, "mapspace"),
    ],
)
def test_rcond_cutoff_is_relative_and_user_settable(widths, name, params, method):
    """With rcond = 1e-3 the ~1e-5·λ_max modes count as zero (curvdyn matches the reference at
    that rcond), that result differs from the default-rcond one (so the parameter matters; by
    ~1e-2 for q = 1, ~3e-3 for q = 2 (√TINY): asserted > 1e-4), and multiplying Σ by 1e4 gives the
    same agreement (the cutoff is relative to λ_max)."""
    ws, target, cov, r, r_scaled = _tiny_mode_case(widths)
    block = name.endswith("-d")
    spectra = [e for e, _ in r.block_eig] if block else [r.eig[0]]
    for ev in spectra:
        _assert_gap(ev)
    rule = cd.get_rule(name, rcond=RCOND_TEST, **params)
    got = rule.direction(ws, cd.Task(target, cov), method=method)
    want = r.direction(name, rcond=RCOND_TEST, **params)
    assert R.rel_err(got, want) <= TOL
    assert R.rel_err(r.direction(name, **params), want) > 1e-4
    got_scaled = rule.direction(ws, cd.Task(target, 1e4 * cov), method=method)
    want_scaled = r_scaled.direction(name, rcond=RCOND_TEST, **params)
    assert R.rel_err(got_scaled, want_scaled) <= TOL


def test_default_rcond_is_the_documented_one():
    assert cd.get_rule("ngd").rcond == R.RCOND
    assert cv.DEFAULT_RCOND == R.RCOND
