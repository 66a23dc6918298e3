"""Tests of curvdyn.theory: singular-mode dynamics, map dynamics, scaling laws, mode projection.

The ground truth is the full-matrix dynamics (``curvdyn.simulate``, ``rule.direction``); the
theory's reduced formulas must reproduce it to the stated tolerances.

Runtime: JAX compiles one program per (rule, shapes); the tests share a few fixed widths per
depth (``WIDTHS``) and one cached full simulation per configuration, so each compiled
program is reused by every test that needs it.
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
import pytest
from scipy import integrate

import curvdyn as cd
from curvdyn import theory as th

INF = math.inf
WIDTHS = {2: (3, 4, 3), 3: (3, 4, 4, 3), 4: (3, 4, 4, 4, 3)}
TIGHT_ODE = cd.ODE(rtol=1e-11, atol=1e-13, solver="dopri8")
TIGHT = dict(integrator=TIGHT_ODE)

RULES = {
    "sgd": cd.get_rule("sgd"),
    "ngd": cd.get_rule("ngd"),
    "sqrt-ngd": cd.get_rule("sqrt-ngd"),
    "frac-ngd-3": cd.get_rule("frac-ngd", q=3.0),
    "damped-ngd": cd.get_rule("damped-ngd", eps=0.5),
    "ngd-d": cd.get_rule("ngd-d"),
    "sqrt-ngd-d": cd.get_rule("sqrt-ngd-d"),
    "frac-ngd-d-3": cd.get_rule("frac-ngd-d", q=3.0),
    "frac-ngd-d-6": cd.get_rule("frac-ngd-d", q=6.0),
}


def random_target(seed: int, strengths, n_out: int = 3, n_in: int = 3) -> np.ndarray:
    """A target map with the given singular values and Haar-random singular vectors."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((n_out, n_out)))[0][:, : len(strengths)]
    v = np.linalg.qr(rng.standard_normal((n_in, n_in)))[0][:, : len(strengths)]
    return (u * np.asarray(strengths, float)) @ v.T


@pytest.fixture
def eager():
    """Run ``rule.direction`` op by op: dozens of (rule, depth) pairs would each compile once
    (~1 s apiece on 2 cores) for a single evaluation; eagerly the same math takes ~10 ms."""
    with jax.disable_jit():
        yield


# ---------------------------------------------------------------------------------------
# formulas and conventions
# ---------------------------------------------------------------------------------------


def test_coupling_products_handle_zeros():
    s = np.array([[2.0, 3.0, 5.0], [0.0, 3.0, 5.0], [0.0, 0.0, 5.0], [-2.0, 3.0, 0.5]])
    j = np.asarray(th.coupling(s))
    np.testing.assert_allclose(j[0], [15.0, 10.0, 6.0], rtol=1e-15)
    np.testing.assert_allclose(j[1], [15.0, 0.0, 0.0])  # one zero: still active
    np.testing.assert_allclose(j[2], [0.0, 0.0, 0.0])  # two zeros: inactive
    np.testing.assert_allclose(j[3], [1.5, -1.0, -6.0], rtol=1e-15)
    np.testing.assert_allclose(th.coupling_norm(s)[0], math.sqrt(15**2 + 10**2 + 6**2), rtol=1e-15)
    assert list(np.asarray(th.is_active(s))) == [True, True, False, True]
    assert np.asarray(th.coupling([7.0])).tolist() == [1.0]  # d = 1: empty product


def test_stiffness_rate_effective_depth():
    assert th.stiffness(2, INF) == 1.0 and th.stiffness(3, INF) == pytest.approx(4 / 3)
    assert th.stiffness(5, 1) == 0.0
    assert th.stiffness(2, 2) == 0.5 and th.stiffness(4, 2) == pytest.approx(0.75)
    assert th.stiffness(4, 3) == pytest.approx(1.0)
    assert th.depth_calibrated_rate(0.5, 3, INF) == 1.5
    assert th.depth_calibrated_rate(1.0, 4, 2) == pytest.approx(2.0)
    assert th.depth_calibrated_rate(1.0, 7, 1) == 1.0
    for d in (1, 2, 3, 6):
        for q in (1.0, 1.5, 2.0, 3.0, 10.0, INF):
            # d_eff is the SGD depth with the same stiffness (eq. 22)
            assert th.stiffness(d, q) == pytest.approx(2 * (th.effective_depth(d, q) - 1) / th.effective_depth(d, q))
            assert th.effective_depth(d, q) <= min(d, q) + 1e-12
    assert th.effective_depth(3, INF) == 3.0
    assert th.effective_depth(10**6, 2.0) == pytest.approx(2.0, rel=1e-5)
    with pytest.raises(ValueError):
        th.stiffness(3, 0.5)
    with pytest.raises(ValueError):
        th.effective_depth(0, 2)


def test_scaling_exponents_formulas():
    assert th.scaling_exponents(3, INF) == (2.0, 4.0)  # SGD: α^{d−1}, α^{2(d−1)}
    assert th.scaling_exponents(3, 2.0) == (0.0, 2.0)  # sqrt-NGD (q = 2; "q = 1/2" in S.I. is a typo)
    assert th.scaling_exponents(3, 1.0) == (-2.0, 0.0)  # NGD
    e_w, e_l = th.scaling_exponents(4, 3.0)
    assert e_w == pytest.approx(1.0) and e_l == pytest.approx(4.0)


def test_velocity_formulas_written_out():
    """mode_velocity against the equations as printed (eqs. 6, 12, 14, 18, 24, 25, 26)."""
    rng = np.random.default_rng(3)
    s = rng.uniform(0.3, 1.5, (5, 3)) * rng.choice([-1.0, 1.0], (5, 3))
    tgt = rng.uniform(-2, 2, 5)
    d = 3
    bar = np.prod(s, axis=1)
    delta = (bar - tgt)[:, None]
    j = bar[:, None] / s
    nj = np.linalg.norm(j, axis=1, keepdims=True)

    def v(name, **kw):
        return np.asarray(th.mode_velocity(cd.get_rule(name, **kw), s, tgt))

    np.testing.assert_allclose(v("sgd"), -delta * j, rtol=1e-13)
    np.testing.assert_allclose(v("ngd"), -delta * j / nj**2, rtol=1e-13)
    np.testing.assert_allclose(v("sqrt-ngd"), -delta * j / nj, rtol=1e-13)
    np.testing.assert_allclose(v("frac-ngd", q=3), -delta * j / nj ** (2 / 3), rtol=1e-13)
    eps = 0.7
    a = eps / nj  # eq. 18 as printed
    np.testing.assert_allclose(v("damped-ngd", eps=eps), -delta * j / nj * (a * nj + 1) / (a + nj), rtol=1e-13)
    np.testing.assert_allclose(v("ngd-d"), -delta / (d * j), rtol=1e-13)
    np.testing.assert_allclose(v("sqrt-ngd-d"), -delta * np.sign(j) / math.sqrt(d), rtol=1e-13)
    np.testing.assert_allclose(
        v("frac-ngd-d", q=3), -delta / d ** (1 / 3) * np.sign(j) * np.abs(j) ** (1 - 2 / 3), rtol=1e-13
    )
    rates = (0.2, 0.5, 1.3)
    np.testing.assert_allclose(
        v("frac-ngd-d", q=1.5, layer_rates=rates),
        -delta * np.array(rates) * np.sign(j) * np.abs(j) ** (1 - 2 / 1.5),
        rtol=1e-13,
    )
    np.testing.assert_allclose(v("ngd", lm_damping=0.3), -delta * j / (nj**2 + 0.3), rtol=1e-13)
    # eq. 20: σ̄̇ = −η σ_Δ ‖j‖^{2(1−1/q)} for q-NGD (and eq. 19 in general)
    for q in (1.0, 2.0, 3.0):
        mv = np.asarray(th.map_velocity(cd.get_rule("frac-ngd", q=q), s, tgt, eta=0.7))
        np.testing.assert_allclose(mv, -0.7 * delta[:, 0] * nj[:, 0] ** (2 * (1 - 1 / q)), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(th.map_velocity("sgd", s, tgt)), -delta[:, 0] * nj[:, 0] ** 2, rtol=1e-13)


def test_inactive_modes_are_frozen_and_single_zero_is_active():
    for rule in RULES.values():
        for s in ([0.0, 0.0], [0.0, 0.0, 1.3], [0.0, 2.0, 0.0, 0.5]):
            assert np.all(np.asarray(th.mode_velocity(rule, s, 2.0)) == 0.0)
        v = np.asarray(th.mode_velocity(rule, [0.0, 0.8, 1.1], 2.0))
        assert v[0] < 0 or v[0] > 0  # j_1 = 0.88 ≠ 0: the zero layer moves
        assert np.all(np.isfinite(v))


def test_balanced_map_dynamics_is_eq21_for_full_and_block_rules():
    """With σ_i = σ̄^{1/d}, eq. (19) gives eq. (21) with p and η̄ — for the block rules too."""
    for d in (2, 3, 4):
        for rule in RULES.values():
            if rule.eps is not None:
                continue
            sb = np.array([1e-4, 0.3, 2.0, 7.0])
            s = np.repeat(sb[:, None] ** (1 / d), d, axis=1)
            got = np.asarray(th.map_velocity(rule, s, 3.0, eta=0.6))
            p, eta_bar = th.stiffness(d, rule.q), th.depth_calibrated_rate(0.6, d, rule.q)
            want = np.asarray(th.balanced_map_velocity(sb, p, 3.0, eta_bar=eta_bar))
            np.testing.assert_allclose(got, want, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# mode velocity = full-matrix direction projected on the mode (aligned weights)
# ---------------------------------------------------------------------------------------

VELOCITY_RULES = dict(
    RULES,
    **{
        "frac-ngd-1.5": cd.get_rule("frac-ngd", q=1.5),
        "ngd-lm": cd.get_rule("ngd", lm_damping=0.2),
        "frac-ngd-d-rates": None,  # built per depth in the test
    },
)


@pytest.mark.parametrize("d", [2, 3, 4])
@pytest.mark.parametrize("name", list(VELOCITY_RULES))
def test_mode_velocity_equals_projected_full_direction(name, d, eager):
    rule = VELOCITY_RULES[name]
    if name == "frac-ngd-d-rates":
        rule = cd.get_rule("frac-ngd-d", q=1.5, layer_rates=tuple(np.linspace(0.3, 0.9, d)))
    rng = np.random.default_rng(10 + d)
    target = random_target(d, [3.0, 1.5, 0.7])
    task = cd.Task(target)
    vals = rng.uniform(0.4, 1.4, (d, 3)) * rng.choice([-1.0, 1.0], (d, 3))  # mixed signs of j_i
    ws = cd.init_aligned(target, WIDTHS[d], vals)
    bases = th.aligned_bases(target, WIDTHS[d])
    sig = th.layer_mode_values(ws, bases)
    np.testing.assert_allclose(sig, vals.T, atol=1e-15)
    targets = np.linalg.svd(target, compute_uv=False)
    proj = th.layer_mode_values(tuple(-x for x in rule.direction(ws, task)), bases)
    vel = np.asarray(th.mode_velocity(rule, sig, targets))
    np.testing.assert_allclose(proj, vel, rtol=1e-9, atol=1e-9 * np.max(np.abs(vel)))
    # and nothing leaves the aligned subspace: the direction is exactly mode-diagonal
    rebuilt = tuple((bases[i + 1] * vel[:, i]) @ bases[i].T for i in range(d))
    for full, diag in zip(rule.direction(ws, task), rebuilt):
        np.testing.assert_allclose(-np.asarray(full), diag, atol=1e-9 * np.max(np.abs(vel)))


def test_mode_velocity_bottleneck_inactive_modes_match_direction(eager):
    """Bottleneck: target modes beyond the narrowest width get zero velocity in both pictures."""
    target = random_target(5, [3.0, 2.0, 1.0])
    widths = (3, 3, 1, 3)
    vals = np.array([[0.9], [-0.7], [1.2]])
    ws = cd.init_aligned(target, widths, vals)
    task = cd.Task(target)
    for rule in RULES.values():
        _, s, _ = th.correlation_modes(task)
        direction = rule.direction(ws, task)
        sig = np.zeros((3, 3))
        sig[0] = vals[:, 0]
        vel = np.asarray(th.mode_velocity(rule, sig, s))
        assert np.all(vel[1:] == 0.0)
        bases = th.aligned_bases(target, widths, r=1)
        proj = th.layer_mode_values(tuple(-x for x in direction), bases)
        np.testing.assert_allclose(proj[0], vel[0], rtol=1e-9)


# ---------------------------------------------------------------------------------------
# constants of motion
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RULES))
def test_constant_of_motion_is_conserved_along_mode_ode(name):
    rule = RULES[name]
    s0 = np.array([[0.3, -0.5, -0.8], [1.1, 0.6, 0.4], [-0.2, -0.9, 0.7]])  # σ̄(0) > 0
    traj = th.simulate_modes(rule, s0, [2.0, 1.0, 0.5], 3.0, n_save=41, **TIGHT)
    assert traj.status == "completed"
    c = traj.constants
    assert c.shape == (41, 3, 2)
    scale = np.max(np.abs(c[0]))
    assert np.max(np.abs(c - c[0])) <= 1e-9 * scale
    assert np.max(np.abs(traj.map[-1] - traj.targets)) < 0.2  # it did move toward the targets
    np.testing.assert_allclose(traj.map, np.prod(traj.sigmas, axis=-1), rtol=1e-15)
    np.testing.assert_allclose(traj.loss, 0.5 * np.sum((traj.map - traj.targets) ** 2, axis=1), rtol=1e-14)


def test_hyperbolic_constant_breaks_under_ngd_d_and_ratio_breaks_under_ngd():
    s0 = np.array([[0.3, -0.5, -0.8], [1.1, 0.6, 0.4], [-0.2, -0.9, 0.7]])  # σ̄(0) > 0
    tg = [2.0, 1.0, 0.5]
    blk = th.simulate_modes("ngd-d", s0, tg, 3.0, n_save=41, **TIGHT)
    hyp = np.asarray(th.constant_of_motion("ngd", blk.sigmas))
    assert np.max(np.abs(hyp - hyp[0])) > 0.1  # visibly not conserved (§3.3, Fig. 1D)
    ratio = blk.sigmas[..., :-1] / blk.sigmas[..., 1:]
    np.testing.assert_allclose(ratio, ratio[0:1].repeat(41, 0), rtol=1e-9)
    full = th.simulate_modes("ngd", s0, tg, 3.0, n_save=41, **TIGHT)
    ratio_full = np.asarray(th.constant_of_motion("ngd-d", full.sigmas))
    assert np.max(np.abs(ratio_full - ratio_full[0])) > 0.1
    # sqrt-NGD-d keeps |σ_i| − |σ_k| but not the hyperbolic quantity
    sq = th.simulate_modes("sqrt-ngd-d", s0, tg, 3.0, n_save=41, **TIGHT)
    hyp = np.asarray(th.constant_of_motion("sgd", sq.sigmas))
    assert np.max(np.abs(hyp - hyp[0])) > 0.1


def test_constant_of_motion_with_layer_rates_and_errors():
    rates = (0.2, 0.5, 1.1)
    s0 = np.array([[0.3, -0.5, -0.8], [1.1, 0.6, 0.4], [-0.2, -0.9, 0.7]])  # σ̄(0) > 0
    for q in (1.0, 1.5, 2.0, 3.0):
        rule = cd.get_rule("frac-ngd-d", q=q, layer_rates=rates)
        traj = th.simulate_modes(rule, s0, [2.0, 1.0, 0.5], 3.0, n_save=41, **TIGHT)
        c = traj.constants
        assert np.max(np.abs(c - c[0])) <= 1e-9 * np.max(np.abs(c[0]))
    with pytest.raises(ValueError):
        th.constant_of_motion(cd.get_rule("sqrt-ngd-d", lm_damping=0.1), s0)
    assert th.constant_of_motion("sqrt-ngd-d", [[0.5, -0.75]]).tolist() == [[-0.25]]


# ---------------------------------------------------------------------------------------
# the general solution of eq. (21)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p, init_frac",
    [(p, f) for p in (0.0, 0.5, 1.0) for f in (0.0, 1e-4, 0.3, 0.8, 1.7) if not (p >= 1 and f == 0)],
)
def test_general_solution_equals_closed_forms(p, init_frac):
    """(p ≥ 1 from 0 stays at 0: test_general_solution_from_zero_is_nontrivial_and_polynomial.)"""
    target, eta_bar = 3.0, 0.7
    t = np.concatenate([[0.0, 1e-9], np.linspace(0.01, 12.0, 60)])
    closed = th.map_solution(t, p, target, eta_bar=eta_bar, init=init_frac * target, branch="closed")
    general = th.map_solution(t, p, target, eta_bar=eta_bar, init=init_frac * target, branch="general")
    np.testing.assert_allclose(general, closed, rtol=1e-12)
    assert th.map_solution(0.0, p, target, eta_bar=eta_bar, init=init_frac * target) == init_frac * target


def test_closed_forms_are_the_papers():
    t = np.linspace(0, 5, 11)
    eta_bar, tgt = 1.3, 2.5
    np.testing.assert_allclose(
        th.map_solution(t, 0.0, tgt, eta_bar=eta_bar), tgt * (1 - np.exp(-eta_bar * t)), rtol=1e-14
    )
    np.testing.assert_allclose(
        th.map_solution(t, 0.5, tgt, eta_bar=eta_bar), tgt * np.tanh(eta_bar * math.sqrt(tgt) * t / 2) ** 2, rtol=1e-14
    )
    s0 = 0.01
    np.testing.assert_allclose(
        th.map_solution(t, 1.0, tgt, eta_bar=eta_bar, init=s0),
        tgt / (1 + (tgt / s0 - 1) * np.exp(-eta_bar * tgt * t)),
        rtol=1e-14,
    )


@pytest.mark.parametrize("p", [0.2, 2 / 3, 0.75, 0.95, 1.3, 4 / 3, 1.5, 1.9])
def test_general_solution_solves_the_ode(p):
    """map_time against an independent quadrature, and map_solution ∘ map_time = identity."""
    target, eta_bar = 2.0, 1.7
    init = 0.0 if p < 1 else 0.02
    sb = np.array([0.001, 0.05, 0.5, 1.0, 1.5, 1.99, 1.999999]) * target / 2.0
    sb = sb[sb > init]
    t = th.map_time(sb, p, target, eta_bar=eta_bar, init=init)
    for s, ti in zip(sb, t):
        # t(σ̄) = ∫ dσ / (η̄ (σ̄* − σ) σ^p): substitute σ = u^{1/(1−p)} (p < 1) to remove σ^{−p}
        if p < 1:
            c = 1.0 - p
            ref = integrate.quad(
                lambda u: 1.0 / (c * (target - u ** (1 / c))), 0.0, s**c, epsabs=0, epsrel=1e-13, limit=200
            )[0]
        else:
            ref = integrate.quad(lambda x: 1.0 / ((target - x) * x**p), init, s, epsabs=0, epsrel=1e-13, limit=200)[0]
        assert ti == pytest.approx(ref / eta_bar, rel=1e-10)
    back = th.map_solution(t, p, target, eta_bar=eta_bar, init=init)
    np.testing.assert_allclose(back, sb, rtol=1e-12)
    # monotone, bounded, and the right asymptote
    tt = np.linspace(0, 50, 200)
    x = th.map_solution(tt, p, target, eta_bar=eta_bar, init=init)
    assert np.all(np.diff(x) >= 0) and np.all(x <= target)
    assert x[-1] == pytest.approx(target, rel=1e-6)


def test_map_time_near_p_one_against_series():
    """p → 1⁻ from 0: t(σ̄) ~ σ̄^{1−p}/(1−p) is huge and cancellation-prone; check it against
    ``∫_0^s x^{−p}/(T − x) dx = Σ_n s^{n+c}/((n+c) T^{n+1})`` (c = 1 − p, s ≤ T/2)."""
    target = 2.0
    for p in (0.9, 0.9999, 1 - 1e-7):
        c = 1.0 - p
        for s in (1e-3, 0.05, 0.5, 1.0):
            n = np.arange(80)
            ref = np.sum(s ** (n + c) / ((n + c) * target ** (n + 1)))
            assert th.map_time(s, p, target) == pytest.approx(ref, rel=1e-12)
        t = th.map_time(np.array([0.05, 1.0]), p, target)
        np.testing.assert_allclose(th.map_solution(t, p, target), [0.05, 1.0], rtol=1e-6)


def test_general_solution_from_zero_is_nontrivial_and_polynomial():
    """p < 1 from σ̄(0) = 0: σ̄ ≈ ((1−p) η̄ σ̄* t)^{1/(1−p)} near 0 (§3.2), not σ̄ ≡ 0."""
    for p in (0.25, 0.5, 2 / 3, 0.8):
        t = np.array([1e-8, 1e-6, 1e-4])
        x = th.map_solution(t, p, 1.0, eta_bar=1.0)
        c = 1 - p
        np.testing.assert_allclose(x, (c * t) ** (1 / c), rtol=5e-4)
    assert np.all(th.map_solution([0.5, 10.0], 1.2, 1.0, init=0.0) == 0.0)  # p >= 1: stays at 0
    assert th.half_max_time(1.5, 1.0, init=0.0) == math.inf


def test_map_solution_other_branches():
    t = np.linspace(0, 6, 25)
    # from above (σ̄(0) > σ̄*), against the closed forms and a tight ODE solve
    for p in (0.0, 0.5, 1.0):
        a = th.map_solution(t, p, 2.0, eta_bar=0.9, init=5.0, branch="general")
        b = th.map_solution(t, p, 2.0, eta_bar=0.9, init=5.0, branch="closed")
        np.testing.assert_allclose(a, b, rtol=1e-12)
    from scipy.integrate import solve_ivp

    for p in (0.3, 1.4):
        ref = solve_ivp(
            lambda _, y: -0.9 * (y - 2.0) * y**p, (0, 6), [5.0], t_eval=t, rtol=1e-12, atol=1e-14, method="DOP853"
        ).y[0]
        np.testing.assert_allclose(th.map_solution(t, p, 2.0, eta_bar=0.9, init=5.0), ref, rtol=1e-9)
    # negative targets by symmetry, zero target closed form
    np.testing.assert_allclose(
        th.map_solution(t, 0.7, -2.0, init=-0.1), -th.map_solution(t, 0.7, 2.0, init=0.1), rtol=1e-15
    )
    np.testing.assert_allclose(
        th.map_solution(t, 1.5, 0.0, init=0.4), 0.4 * (1 + 1.5 * 0.4**1.5 * t) ** (-1 / 1.5), rtol=1e-14
    )
    with pytest.raises(ValueError):
        th.map_solution(t, 0.5, 2.0, init=-0.1)
    with pytest.raises(ValueError):
        th.map_solution(-1.0, 0.5, 2.0)
    with pytest.raises(ValueError):
        th.map_solution(t, 0.7, 2.0, branch="closed")
    assert math.isnan(th.half_max_time(0.5, 2.0, init=3.0))
    assert th.half_max_time(1.0, 2.0, init=1.5) < 0


def test_half_max_times():
    assert th.half_max_time(0.0, 4.0, eta_bar=2.0) == pytest.approx(math.log(2) / 2.0, rel=1e-14)
    assert th.half_max_time(0.5, 4.0, eta_bar=2.0) == pytest.approx(2 * math.atanh(2**-0.5) / (2.0 * 2.0), rel=1e-14)
    for p in (0.0, 0.5, 1.0):
        init = 0.0 if p < 1 else 0.04
        assert th.half_max_time(p, 4.0, eta_bar=2.0, init=init, branch="general") == pytest.approx(
            th.half_max_time(p, 4.0, eta_bar=2.0, init=init, branch="closed"), rel=1e-12
        )
    # scaling with the mode strength: t_half ∝ σ̄*^{−p} from 0 (p < 1)
    for p in (0.3, 2 / 3):
        assert th.half_max_time(p, 8.0) / th.half_max_time(p, 2.0) == pytest.approx(4.0**-p, rel=1e-12)
    # and the solution really is at half max there
    for p in (0.3, 0.5, 1.0, 1.6):
        init = 0.0 if p < 1 else 0.01
        t_half = th.half_max_time(p, 3.0, eta_bar=1.1, init=init)
        assert th.map_solution(t_half, p, 3.0, eta_bar=1.1, init=init) == pytest.approx(1.5, rel=1e-12)


def test_saxe_logistic_half_max_time():
    """Saxe et al. (2013): d = 2 SGD is the p = 1 logistic; σ̄* = 10, σ̄(0) = 1e-3, η = 1."""
    p = th.stiffness(2, INF)
    eta_bar = th.depth_calibrated_rate(1.0, 2, INF)
    assert (p, eta_bar) == (1.0, 2.0)
    assert th.half_max_time(p, 10.0, eta_bar=eta_bar, init=1e-3) == pytest.approx(math.log(9999) / 20, rel=1e-14)
    assert th.half_max_time(p, 10.0, eta_bar=eta_bar, init=1e-3, branch="general") == pytest.approx(
        math.log(9999) / 20, rel=1e-12
    )


# ---------------------------------------------------------------------------------------
# full-matrix simulations vs the theory
# ---------------------------------------------------------------------------------------
#
# One aligned full simulation per configuration, shared by the tests below. Each run has
# three target modes: mode 0 balanced (σ_i = σ̄(0)^{1/d}, for eq. 21), the others unbalanced
# with mixed signs (for the per-layer mode ODEs). The SGD run has a hidden layer of width 2
# (a bottleneck): target mode 2 is inactive and must stay frozen at 0.
#
# Coverage: every rule; d = 2, 3, 4; q = 1, 2, 3, 6, ∞ and damping; balanced stiffness
# p = 0 (NGD, NGD-d), ½ (sqrt-NGD-d, d = 2), 1 (SGD, d = 2: Saxe et al.) in closed form, and
# p = 3/4, 8/9 (from σ̄(0) ≈ 0) and 5/4 (from σ̄(0) > 0) by the general solution.

CONFIGS = {
    # name: (rule, widths, target strengths, balanced σ̄(0), unbalanced modes (per layer))
    "sgd-2-bottleneck": ("sgd", (3, 2, 3), (10.0, 2.5, 1.0), 1e-3, ((-0.8, -0.5),)),
    "ngd-3": ("ngd", WIDTHS[3], (4.0, 2.0, 1.0), 1e-6, ((-0.9, 0.6, -1.1), (0.5, 0.7, 1.2))),
    "sqrt-ngd-4": ("sqrt-ngd", WIDTHS[4], (4.0, 2.0, 1.0), 1e-6, ((0.9, -0.8, 0.7, -1.1), (0.6, 0.5, 0.8, 1.0))),
    "frac-ngd-3-3": ("frac-ngd-3", WIDTHS[3], (4.0, 2.0, 1.0), 1e-6, ((0.8, -0.6, -0.9), (0.4, 0.5, 1.1))),
    "damped-ngd-4": ("damped-ngd", WIDTHS[4], (4.0, 2.0, 1.0), 1e-2, ((-0.9, 0.8, -0.7, 1.1), (0.6, 0.5, 0.8, 1.0))),
    "ngd-d-3": ("ngd-d", WIDTHS[3], (4.0, 2.0, 1.0), 1e-6, ((0.9, -0.8, -1.1), (0.6, 0.5, 1.0))),
    "sqrt-ngd-d-2": ("sqrt-ngd-d", WIDTHS[2], (4.0, 2.0, 1.0), 1e-6, ((-0.7, 0.4), (0.3, -0.9))),
    "frac-ngd-d-6-4": (
        "frac-ngd-d-6",
        WIDTHS[4],
        (4.0, 2.0, 1.0),
        1e-2,
        ((-0.9, 0.6, -1.1, 0.8), (0.5, -0.7, 1.2, -0.9)),
    ),
}
T_END = 3.0
N_SAVE = 41
SAXE_T_HALF = math.log(9999) / 20


@functools.cache
def full_run(name: str) -> dict:
    rule_key, widths, strengths, bal0, unbalanced = CONFIGS[name]
    rule = RULES[rule_key]
    d = len(widths) - 1
    target = random_target(100 + d, strengths)
    task = cd.Task(target)
    cols = [np.full(d, bal0 ** (1.0 / d))] + [np.asarray(m, float) for m in unbalanced]
    vals = np.stack(cols, axis=1)  # (d, r)
    ws = cd.init_aligned(target, widths, vals)
    save_at = np.linspace(0.0, T_END, N_SAVE)
    if rule_key == "sgd":  # put the Saxe half-max time on the grid
        save_at = np.sort(np.concatenate([save_at[:-1], [SAXE_T_HALF]]))
    traj = cd.simulate(ws, task, rule, save_at=save_at, integrator=TIGHT_ODE)
    assert traj.status == "completed", traj.message
    sig0 = np.zeros((3, d))
    sig0[: vals.shape[1]] = vals.T  # modes beyond the bottleneck: all zeros (inactive)
    modes = th.simulate_modes(rule, sig0, strengths, T_END, save_at=save_at, **TIGHT)
    assert modes.status == "completed", modes.message
    return dict(
        rule=rule,
        d=d,
        task=task,
        target=target,
        strengths=np.asarray(strengths),
        widths=widths,
        vals=vals,
        traj=traj,
        modes=modes,
        bases=th.aligned_bases(target, widths, r=vals.shape[1]),
        t=save_at,
    )


@pytest.mark.parametrize("name", list(CONFIGS))
def test_aligned_full_simulation_matches_mode_odes(name):
    run = full_run(name)
    traj, modes = run["traj"], run["modes"]
    np.testing.assert_allclose(traj.t, modes.t)
    # map modes: σ̄_k(t) = u_kᵀ W(t) v_k (project_modes, Σ = I) — all three, inactive ones too
    sb_full = th.project_modes(traj.map, run["task"])
    for k in range(3):
        scale = max(np.max(np.abs(modes.map[:, k])), 1e-300)
        assert np.max(np.abs(sb_full[:, k] - modes.map[:, k])) <= 1e-7 * max(scale, 1e-6), (name, k)
    # per-layer values σ_{i,k}(t) = u_{i,k}ᵀ w_i(t) u_{i−1,k}
    r = run["vals"].shape[1]
    sig_full = th.layer_mode_values(traj.weights, run["bases"])
    for k in range(r):
        scale = np.max(np.abs(modes.sigmas[:, k]))
        assert np.max(np.abs(sig_full[:, k] - modes.sigmas[:, k])) <= 1e-7 * scale, (name, k)
    # the weights stay aligned: nothing outside the mode basis
    rebuilt = [
        np.einsum("ak,tk,bk->tab", run["bases"][i + 1], sig_full[:, :, i], run["bases"][i]) for i in range(run["d"])
    ]
    for w, w_modes in zip(traj.weights, rebuilt):
        assert np.max(np.abs(w - w_modes)) <= 1e-9 * np.max(np.abs(w))
    # losses agree (the loss of aligned weights is the sum over modes, eq. 1 with Σ = I)
    assert np.max(np.abs(traj.loss - modes.loss)) <= 1e-7 * np.max(modes.loss)
    if r < 3:  # bottleneck: the inactive mode is frozen at zero in both pictures
        assert np.all(modes.sigmas[:, r:] == 0.0) and np.max(np.abs(sb_full[:, r:])) <= 1e-14


BALANCED = [n for n in CONFIGS if RULES[CONFIGS[n][0]].eps is None]


@pytest.mark.parametrize("name", BALANCED)
def test_balanced_full_simulation_matches_map_solution(name):
    """Mode 0 of each run is balanced: its σ̄(t) follows eq. (21) exactly.

    A fair, exact comparison when the theory's curve starts at σ̄(0) = 0 (p < 1): the full
    simulation cannot start at 0 (all couplings vanish), so it starts at a tiny σ̄(0) > 0.
    Eq. (21) is autonomous and has unique solutions away from 0, so (a) the solution from
    the simulation's own σ̄(0) and (b) the zero-start solution shifted by the time t₀ it needs
    to reach σ̄(0) (``map_time(σ̄(0), init=0)``) are both the exact solution of the same
    problem — no approximation is made, and both must match to 1e-6.
    """
    run = full_run(name)
    rule, d = run["rule"], run["d"]
    p, eta_bar = th.stiffness(d, rule.q), th.depth_calibrated_rate(1.0, d, rule.q)
    tgt = run["strengths"][0]
    sb = th.project_modes(run["traj"].map, run["task"])[:, 0]
    init = float(np.prod(run["vals"][:, 0]))
    want = th.map_solution(run["t"], p, tgt, eta_bar=eta_bar, init=init)
    np.testing.assert_allclose(sb, want, rtol=1e-6)
    if min(abs(p - c) for c in (0.0, 0.5, 1.0)) < 1e-14:  # also the general-p path on the same run
        general = th.map_solution(run["t"], p, tgt, eta_bar=eta_bar, init=init, branch="general")
        np.testing.assert_allclose(sb, general, rtol=1e-6)
    if p < 1:
        t0 = th.map_time(init, p, tgt, eta_bar=eta_bar, init=0.0)
        assert t0 > 0
        shifted = th.map_solution(run["t"] + t0, p, tgt, eta_bar=eta_bar, init=0.0)
        np.testing.assert_allclose(sb, shifted, rtol=1e-6)
    # the balanced mode stayed balanced (every layer equal)
    sig = th.layer_mode_values(run["traj"].weights, run["bases"])[:, 0]
    np.testing.assert_allclose(sig, np.repeat(sig[:, :1], d, axis=1), rtol=1e-8)
    assert sb[-1] > 0.9 * tgt  # learned


def test_saxe_half_max_full_simulation():
    run = full_run("sgd-2-bottleneck")
    k = int(np.argmin(np.abs(run["t"] - SAXE_T_HALF)))
    assert run["t"][k] == SAXE_T_HALF
    sb = th.project_modes(run["traj"].map, run["task"])[k, 0]
    assert sb == pytest.approx(5.0, rel=1e-6)


# ---------------------------------------------------------------------------------------
# scaling laws (S.I.3)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 3, 4])
def test_balanced_scaling_prefactors_and_exponents(d, eager):
    target = random_target(7, [2.0, 1.0, 0.5])
    task = cd.Task(target)
    extra = (
        cd.get_rule("ngd", lm_damping=0.3),
        cd.get_rule("sqrt-ngd-d", lm_damping=0.1),
        cd.get_rule("frac-ngd-d", q=2.0, layer_rates=tuple(np.linspace(0.2, 0.9, d))),
    )
    for rule in list(RULES.values()) + list(extra):
        for alpha in (0.3, 1.1):
            ws = cd.init_balanced(jax.random.PRNGKey(d), WIDTHS[d], alpha)
            speed, rate = th.measure_update_rates(ws, task, rule)
            p_speed, p_rate = th.balanced_update_rates(rule, d, alpha)
            assert speed == pytest.approx(p_speed, rel=1e-9)
            assert rate == pytest.approx(p_rate, rel=1e-9)
            if rule.eps is None and not rule.lm_damping and rule.layer_rates is None:
                e_w, e_l = th.measure_scaling_exponents(ws, task, rule)
                want = th.scaling_exponents(d, rule.q)
                assert abs(e_w - want[0]) <= 1e-6 and abs(e_l - want[1]) <= 1e-6
        if rule.eps is None and not rule.block and not rule.lm_damping:  # the closed forms written out
            q = rule.q
            inv = 0.0 if math.isinf(q) else 1 / q
            s, r = th.balanced_update_rates(rule, d, 0.7, eta=0.5)
            e_w, e_l = (d - 1) * (1 - 2 * inv), (d - 1) * (2 - 2 * inv)
            assert s == pytest.approx(0.5 * math.sqrt(2) * d ** (0.5 - inv) * 0.7**e_w, rel=1e-13)
            assert r == pytest.approx(2 * th.depth_calibrated_rate(0.5, d, q) * 0.7**e_l, rel=1e-13)


@pytest.mark.parametrize("d", [2, 3, 4])
def test_xavier_scaling_exponents(d, eager):
    """Random (Xavier·α) weights: the same exponents, up to a correction that vanishes as α^d.

    For weights ``α·w`` every curvature factor scales exactly (``K → α^{2(d−1)} K``), so
    ``Q(α) = α^{e} F(Δ̂)`` with a factor F that depends only on the direction of the
    displacement ``Δ = α^d W₀ − W*``. Its log-derivative adds ``d ln F/d ln α = O(d α^d
    ‖W₀‖/‖W*‖)`` to the measured exponent — the "shift" of Fig. S.I.1. Checked: (1) the
    deviation is below ``2 d α^d ‖W₀‖₂/σ_min(W*)`` (observed 0.05–0.6 of it), (2) it shrinks
    exactly like α^d (halving α divides it by 2^d, to 5 %), and (3) the exact zero laws
    (NGD and NGD-d: |L̇/L| = 2; sqrt-NGD: ‖ẇ‖/√L = √2; all factors full rank) hold to 1e-9
    on random weights (S.I.3: "the zero-power law predictions ... are exact").
    """
    target = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))[0]
    task = cd.Task(target)
    sigma_min = np.linalg.svd(target, compute_uv=False)[-1]
    for rule in (RULES["sgd"], RULES["ngd"], RULES["sqrt-ngd"], RULES["sqrt-ngd-d"], RULES["ngd-d"]):
        want = np.array(th.scaling_exponents(d, rule.q))
        devs = []
        for alpha in (0.1, 0.05):
            ws = cd.init_xavier(jax.random.PRNGKey(d), WIDTHS[d], alpha)
            w0 = np.linalg.norm(np.asarray(cd.network_map(ws)), 2) / alpha**d
            bound = 2 * d * alpha**d * w0 / sigma_min
            dev = np.array(th.measure_scaling_exponents(ws, task, rule)) - want
            assert np.all(np.abs(dev) <= bound), (rule.name, alpha, dev, bound)
            devs.append(dev)
            speed, rate = th.measure_update_rates(ws, task, rule)
            if rule.name in ("ngd", "ngd-d"):
                assert rate == pytest.approx(2.0, rel=1e-9)
            if rule.name == "sqrt-ngd":
                assert speed == pytest.approx(math.sqrt(2.0), rel=1e-9)
        for big, small in zip(*devs):
            if abs(big) > 1e-10:
                assert small / big == pytest.approx(2.0**-d, rel=0.05)
            else:
                assert abs(small) <= 1e-10  # an exact law


# ---------------------------------------------------------------------------------------
# mode projection
# ---------------------------------------------------------------------------------------


def test_project_modes_on_data_task():
    st = cd.student_teacher(jax.random.PRNGKey(0), 6, rank=2, snr=5.0, n_train=40, whiten=False)
    task = st.train_task
    x, y = np.asarray(st.x_train), np.asarray(st.y_train)
    corr = y @ x.T / x.shape[1]
    u, s, v = th.correlation_modes(task)
    np.testing.assert_allclose((u * s) @ v.T, corr, atol=1e-12)  # Σ_yx = W* Σ = Y Xᵀ/P
    np.testing.assert_allclose(th.project_modes(task.target, task), s, rtol=1e-12)
    # a stack of maps (T, n_d, n_0) and the full matrix form
    maps = np.stack([0.0 * task.target, 0.5 * np.asarray(task.target), np.asarray(task.target)])
    out = th.project_modes(maps, task)
    assert out.shape == (3, 6)
    np.testing.assert_allclose(out, np.outer([0.0, 0.5, 1.0], s), atol=1e-12)
    full = th.project_modes(maps[2], task, full=True)
    np.testing.assert_allclose(full, np.diag(s), atol=1e-12)
    # invariant under the SVD's joint sign flips
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 6))
    signs = rng.choice([-1.0, 1.0], 6)
    direct = np.einsum("ak,ab,bc,ck->k", u * signs, w, np.asarray(task.input_cov), v * signs)
    np.testing.assert_allclose(th.project_modes(w, task), direct, rtol=1e-12)
    with pytest.raises(ValueError):
        th.project_modes(np.zeros((5, 6)), task)


def test_aligned_bases_reproduce_init_aligned():
    target = random_target(4, [3.0, 2.0, 0.5], n_out=4, n_in=3)
    widths = (3, 5, 2, 4)
    vals = np.array([[1.0, -0.5], [0.3, 0.8], [-1.2, 0.4]])
    ws = cd.init_aligned(target, widths, vals)
    bases = th.aligned_bases(target, widths, r=2)
    for i, w in enumerate(ws):
        np.testing.assert_allclose(np.asarray(w), (bases[i + 1] * vals[i]) @ bases[i].T, atol=1e-15)
    np.testing.assert_allclose(th.layer_mode_values(ws, bases), vals.T, atol=1e-15)


def test_simulate_modes_options_and_errors():
    s0 = np.array([[0.5, 0.6], [0.2, -0.9], [0.0, 0.0]])
    a = th.simulate_modes("sqrt-ngd", s0, [2.0, 1.0, 1.0], 2.0, n_save=N_SAVE, **TIGHT)
    b = th.simulate_modes("sqrt-ngd", s0, [2.0, 1.0, 1.0], 4.0, n_save=N_SAVE, eta=0.5, **TIGHT)  # η rescales time
    np.testing.assert_allclose(b.sigmas, a.sigmas, rtol=1e-8, atol=1e-12)
    assert np.all(a.sigmas[:, 2] == 0.0)  # inactive: frozen
    with pytest.raises(ValueError):
        th.simulate_modes("sgd", s0, 2.0, -1.0)
    with pytest.raises(TypeError, match=r"curvdyn\.ODE"):
        th.simulate_modes("sgd", s0, 2.0, 1.0, integrator=cd.Euler(dt=0.1))
    with pytest.raises(ValueError):
        th.simulate_modes("sgd", s0, 2.0, 1.0, save_at=[0.5, 1.0])
    # a single mode given as shape (d,), and running out of steps (NGD from tiny weights)
    with pytest.warns(RuntimeWarning, match="max_steps"):
        c = th.simulate_modes("ngd", [1e-3, 1e-3], 1.0, 1.0, n_save=5, integrator=cd.ODE(max_steps=3))
    assert c.status == "max_steps" and "max_steps" in c.message
    assert c.sigmas.shape == (5, 2) and c.map.shape == (5,) and c.constants.shape == (5, 1)
