"""One formula in one place, typed settings: the shared pieces the library, the experiments and
the command line all go through.

* the Haar sampler is Haar (sign-corrected QR, unlike a plain QR) and every former copy uses it;
* the block layer factor, the power 1/q and the spectral function are one function each, and the
  rules, the theory, the optimizers and the nonlinear module agree with it to the bit;
* one style table serves ``Rule.label``, the figures and the digits study;
* every experiment's settings are frozen, hashable and survive strict JSON; a bad
  ``config.json`` is refused with a clear error;
* the command line's number types accept and refuse what :mod:`curvdyn._validate` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import curvdyn as cd
from curvdyn import _validate, cli, experiments, theory
from curvdyn import curvature as cv
from curvdyn._names import STYLES
from curvdyn.experiments import base
from curvdyn.experiments.common import random_target, rule_color, rule_label
from curvdyn.io import json_text

# ---------------------------------------------------------------------------------------
# the Haar sampler
# ---------------------------------------------------------------------------------------


def test_haar_orthogonal_is_the_sign_corrected_qr_of_its_gaussian_draw():
    for n, k in ((1, None), (3, None), (6, 2), (16, 3)):
        key = jax.random.PRNGKey(n)
        q = cd.haar_orthogonal(key, n, k)
        assert q.dtype == np.float64 and q.shape == (n, n if k is None else k)
        np.testing.assert_allclose(q.T @ q, np.eye(q.shape[1]), atol=1e-14)
        # Q diag(sign(diag R)) of the QR of the same Gaussian matrix: R with positive diagonal
        z = np.asarray(jax.random.normal(key, (n, n), dtype=jnp.float64))
        full = cd.haar_orthogonal(key, n)
        r = full.T @ z
        np.testing.assert_allclose(np.triu(r), r, atol=1e-12)
        assert np.all(np.diag(r) > 0)
        np.testing.assert_array_equal(q, full[:, : q.shape[1]])


def test_haar_orthogonal_has_no_sign_bias_that_plain_qr_has():
    """A Haar matrix's entries are symmetric about 0; LAPACK's unsigned QR fixes the sign of Q[0, 0]."""
    keys = jax.random.split(jax.random.PRNGKey(7), 400)
    haar = np.array([cd.haar_orthogonal(k, 4)[0, 0] for k in keys])
    plain = np.array([np.linalg.qr(np.asarray(jax.random.normal(k, (4, 4), dtype=jnp.float64)))[0][0, 0] for k in keys])
    assert 0.4 < np.mean(haar > 0) < 0.6  # 400 fair coins: 0.5 ± 0.025 (4 standard deviations: ±0.1)
    assert np.mean(plain > 0) in (0.0, 1.0)  # the bias the sign correction removes


def test_every_former_copy_draws_with_the_one_sampler():
    key = jax.random.PRNGKey(3)
    k_u, k_v = jax.random.split(key)
    s = np.array([3.0, 1.0, 0.5])
    want = (cd.haar_orthogonal(k_u, 3) * s) @ cd.haar_orthogonal(k_v, 3).T
    np.testing.assert_array_equal(random_target(key, s), want)
    # student_teacher: the teacher's singular vectors are the first `rank` Haar columns
    st = cd.student_teacher(jax.random.PRNGKey(5), 6, rank=2, snr=4.0, noise_std=0.5)
    k_u, k_v = jax.random.split(jax.random.PRNGKey(5), 6)[:2]
    u, v = cd.haar_orthogonal(k_u, 6, 2), cd.haar_orthogonal(k_v, 6, 2)
    np.testing.assert_allclose(np.asarray(st.teacher), (u * 2.0) @ v.T, rtol=0, atol=1e-15)
    # init_balanced: w_i = U_i D U_{i-1}ᵀ with Haar U_i
    ws = cd.init_balanced(jax.random.PRNGKey(2), (3, 4, 3), 0.5)
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    us = [cd.haar_orthogonal(k, n, 3) for k, n in zip(keys, (3, 4, 3))]
    np.testing.assert_allclose(np.asarray(ws[1]), (us[2] * 0.5) @ us[1].T, atol=1e-15)


# ---------------------------------------------------------------------------------------
# one formula each: the power 1/q, the layer factor, the spectral function
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [1.0, 2.0, 3.0, math.inf])
@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_layer_factor_is_one_function_for_rules_theory_and_optimizers(q, d):
    power = cv.curvature_power(q)
    assert power == (0.0 if math.isinf(q) else 1.0 / q)
    factor = cv.block_scale(d, power)
    assert factor == d ** (-power)
    rule = cd.get_rule("frac-ngd-d", q=q)
    assert rule.layer_scales(d) == (factor,) * d
    assert theory.depth_calibrated_rate(0.7, d, q) == 0.7 * (d * factor)
    # traced: the optimizers' and nonlinear's path (a JAX scalar, same value)
    traced = jax.jit(lambda p: cv.block_scale(d, p))(jnp.float64(power))
    assert float(traced) == pytest.approx(factor, rel=1e-15)
    e_w, e_l = theory.scaling_exponents(d, q)
    assert (e_w, e_l) == ((d - 1) * (1 - 2 * power), (d - 1) * (2 - 2 * power))


@pytest.mark.parametrize(
    "rule",
    [
        cd.get_rule("sgd"),
        cd.get_rule("ngd"),
        cd.get_rule("sqrt-ngd"),
        cd.get_rule("damped-ngd", eps=0.3),
        cd.get_rule("damped-ngd", eps=0.0),
        cd.get_rule("sqrt-ngd", lm_damping=0.2),
        cd.get_rule("sqrt-ngd-d"),
        cd.get_rule("frac-ngd-d", q=3.0),
    ],
)
def test_mode_velocity_applies_the_rules_own_spectral_function(rule):
    """σ̇_i = −η s_i f(κ_i) σ_Δ j_i with f = rule.spectral_function(), κ = ‖j‖² or j_i² (block)."""
    sig = np.array([[0.7, -0.4, 1.3], [0.2, 0.5, 0.9], [0.0, 0.0, 1.0]])  # the last mode is inactive
    target = np.array([1.5, 0.3, 2.0])
    got = np.asarray(theory.mode_velocity(rule, sig, target, eta=0.8))
    f = rule.spectral_function()
    for m in range(len(sig)):
        j = np.asarray(theory.coupling(sig[m]))
        delta = np.prod(sig[m]) - target[m]
        scales = rule.layer_scales(3) if rule.block else (1.0,) * 3
        for i in range(3):
            kappa = j[i] ** 2 if rule.block else float(np.sum(j * j))
            if kappa == 0 and f.shift == 0:
                factor = 0.0  # the pseudo-inverse convention
            else:
                factor = f.gain * (kappa + f.shift) ** (-f.power)
            assert got[m, i] == pytest.approx(-0.8 * scales[i] * factor * delta * j[i], rel=1e-13, abs=1e-300)


def test_balanced_update_rates_use_the_rules_spectral_function():
    rule = cd.get_rule("damped-ngd", eps=0.5)
    d, alpha = 3, 0.4
    j2 = alpha ** (2 * (d - 1))
    c = rule.spectral_function().gain / (d * j2 + rule.spectral_function().shift)
    speed, rate = theory.balanced_update_rates(rule, d, alpha)
    assert speed == pytest.approx(math.sqrt(j2) * math.sqrt(2.0 * d * c * c), rel=1e-14)
    assert rate == pytest.approx(2.0 * j2 * d * c, rel=1e-14)


# ---------------------------------------------------------------------------------------
# one style table
# ---------------------------------------------------------------------------------------


def test_one_style_table_for_rule_labels_figures_and_the_digits_study():
    for name in cd.RULE_NAMES:
        assert rule_label(name) == STYLES[name].display and rule_color(name) == STYLES[name].color
    assert cd.get_rule("sqrt-ngd-d").label == STYLES["sqrt-ngd-d"].text == "sqrt-NGD-d"
    assert rule_label("sqrt-ngd-d") == "√NGD-d"
    assert cd.get_rule("frac-ngd", q=3.0, lm_damping=0.1).label == "q-NGD (q=3), LM 0.1"
    assert cd.get_rule("damped-ngd", eps=0.5).label == "damped NGD (eps=0.5)"
    from curvdyn.experiments import digits

    for kind in digits.OPTIMIZERS:
        assert kind in STYLES
    assert rule_label("sqrt-kfac") == "√K-FAC (q=2)" and rule_color("kfac") == rule_color("ngd")
    assert rule_label("no-such-rule") == "no-such-rule"


# ---------------------------------------------------------------------------------------
# typed settings
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", experiments.names())
def test_settings_are_frozen_hashable_and_round_trip_through_strict_json(name):
    module = experiments.get(name)
    for settings in (module.DEFAULT, module.QUICK):
        assert dataclasses.is_dataclass(settings) and type(settings) is type(module.DEFAULT)
        hash(settings)  # usable as a key (issue 12: many seeds per settings)
        with pytest.raises(dataclasses.FrozenInstanceError):
            settings.__setattr__(dataclasses.fields(settings)[0].name, None)
        back = base.settings_from_json(type(settings), json.loads(json_text(base.settings_as_json(settings))))
        assert back == settings and hash(back) == hash(settings)
    assert module.QUICK != module.DEFAULT  # --quick changes something


def test_quick_is_a_replace_of_default_and_config_json_refuses_what_does_not_fit():
    from curvdyn.experiments import fig3

    assert fig3.QUICK == dataclasses.replace(
        fig3.DEFAULT,
        n_save=200,
        n_save_curvature=60,
        ode=dataclasses.replace(fig3.DEFAULT.ode, rtol=1e-5, atol=1e-8),
        sgd_ode=dataclasses.replace(fig3.DEFAULT.sgd_ode, rtol=1e-7, atol=1e-10),
    )
    obj = base.Config(fig3.DEFAULT, {"runs": {}}).as_json()
    assert base.Config.from_json(fig3.Settings, json.loads(json_text(obj))).settings == fig3.DEFAULT
    missing = json.loads(json_text(obj))
    del missing["settings"]["ngd"]["clip"]
    with pytest.raises(ValueError, match=r"Settings\.ngd: settings fields missing \['clip'\]"):
        base.Config.from_json(fig3.Settings, missing)
    wrong = json.loads(json_text(obj))
    wrong["settings"]["depth"] = "four"
    with pytest.raises(ValueError, match=r"Settings\.depth: 'four' is not a int"):
        base.Config.from_json(fig3.Settings, wrong)
    with pytest.raises(ValueError, match="another curvdyn version"):
        base.Config.from_json(fig3.Settings, {"task": {}, "runs": {}})  # an old config.json
    with pytest.raises(ValueError, match="sgd_integrator"):
        dataclasses.replace(fig3.DEFAULT, sgd_integrator="rk4")


def test_measure_keeps_order_and_drops_claims_that_do_not_apply():
    def first(data, config):
        return base.at_most("first", "A first claim (stand-in).", float(data["x"]), 1.0, "x.")

    def absent(data, config):
        return None

    def second(data, config):
        return base.at_least("second", "A second claim (stand-in).", config.settings, 1.0, "the setting.")

    claims = base.measure((first, absent, second), {"x": np.asarray(0.5)}, base.Config(2.0))
    assert [c.key for c in claims] == ["first", "second"] and all(c.passed for c in claims)


# ---------------------------------------------------------------------------------------
# the command line's number types are the library's checks
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arg_type,check,texts",
    [
        (cli._positive_int, lambda v: _validate.check_count(v, "value"), ["3", "1", "0", "-2"]),
        (cli._nonneg_int, lambda v: _validate.check_count(v, "value", 0), ["0", "7", "-1"]),
        (cli._n_save, lambda v: _validate.check_count(v, "value", 2), ["2", "1"]),
        (cli._positive_float, lambda v: _validate.check_positive(v, "value"), ["1e-3", "0", "-1", "nan", "inf"]),
        (cli._nonneg_float, lambda v: _validate.check_nonneg(v, "value"), ["0", "2.5", "-1e-9", "inf"]),
        (cli._q_value, _validate.check_q, ["1", "2", "inf", "0.5", "nan"]),
    ],
)
def test_cli_number_types_accept_what_the_validators_accept(arg_type, check, texts):
    for text in texts:
        value = float(text) if arg_type in (cli._positive_float, cli._nonneg_float, cli._q_value) else int(text)
        try:
            want = check(value)
        except ValueError as exc:
            with pytest.raises(argparse.ArgumentTypeError) as err:
                arg_type(text)
            assert str(err.value) == str(exc)
        else:
            assert arg_type(text) == want
    with pytest.raises(argparse.ArgumentTypeError, match="expected"):
        arg_type("x")


def test_check_count_refuses_bools_fractions_and_non_numbers():
    assert _validate.check_count(np.int64(4), "n") == 4 and _validate.check_count(3.0, "n") == 3
    for bad in (True, 2.5, "3", None, math.inf):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            _validate.check_count(bad, "n")
    with pytest.raises(ValueError, match="n must be an integer >= 2, got 1"):
        _validate.check_count(1, "n", 2)
