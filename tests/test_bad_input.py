"""Bad inputs: each raises the documented exception type with a message that names the problem,
and a failing call changes nothing (inputs, later results)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import curvdyn as cd

# The rule names of DESIGN.md's table, restated (not taken from curvdyn.RULE_NAMES).
DESIGN_RULE_NAMES = (
    "sgd",
    "ngd",
    "sqrt-ngd",
    "frac-ngd",
    "damped-ngd",
    "ngd-d",
    "sqrt-ngd-d",
    "frac-ngd-d",
)


def _net(widths=(4, 3, 2), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((o, i)) for i, o in zip(widths[:-1], widths[1:])]


def _task(n_out=2, n_in=4, seed=1, cov=False):
    rng = np.random.default_rng(seed)
    target = rng.standard_normal((n_out, n_in))
    if not cov:
        return cd.Task(target)
    m = rng.standard_normal((n_in, n_in))
    return cd.Task(target, m @ m.T + np.eye(n_in))


# ---------------------------------------------------------------------------------------
# weights and tasks
# ---------------------------------------------------------------------------------------


def test_layers_that_do_not_chain():
    ws = [np.ones((3, 4)), np.ones((2, 5))]  # w_2 expects 5 inputs, w_1 gives 3
    with pytest.raises(ValueError, match=r"layers do not chain: w_2 has shape \(2, 5\)"):
        cd.get_rule("ngd").direction(ws, _task())
    with pytest.raises(ValueError, match="do not chain"):
        cd.as_weights(ws)


def test_network_map_does_not_match_task():
    ws = _net((4, 3, 5))  # map 5 × 4, task target 2 × 4
    with pytest.raises(ValueError, match=r"network map has shape .*\(5, 4\).*target has shape \(2, 4\)"):
        cd.get_rule("sgd").direction(ws, _task())


def test_layer_not_a_matrix():
    with pytest.raises(ValueError, match=r"layer w_2 must have shape"):
        cd.get_rule("ngd").direction([np.ones((3, 4)), np.ones(3)], _task())


def test_weights_not_a_sequence_or_empty():
    with pytest.raises(TypeError, match="tuple or list of layer matrices"):
        cd.get_rule("ngd").direction(np.ones((2, 4)), _task())
    with pytest.raises(ValueError, match="at least one layer"):
        cd.get_rule("ngd").direction([], _task())


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights(bad):
    ws = _net()
    ws[1][0, 1] = bad
    with pytest.raises(ValueError, match=r"layer w_2 has non-finite entries"):
        cd.get_rule("sqrt-ngd").direction(ws, _task())


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_target(bad):
    target = np.ones((2, 3))
    target[1, 2] = bad
    with pytest.raises(ValueError, match="target has non-finite entries"):
        cd.Task(target)


def test_non_finite_input_cov():
    cov = np.eye(3)
    cov[0, 0] = np.nan
    with pytest.raises(ValueError, match="input_cov has non-finite entries"):
        cd.Task(np.ones((2, 3)), cov)


def test_input_cov_not_symmetric():
    cov = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="input_cov is not symmetric"):
        cd.Task(np.ones((2, 3)), cov)


def test_input_cov_not_psd():
    cov = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # eigenvalue −1
    with pytest.raises(ValueError, match="input_cov is not positive semi-definite"):
        cd.Task(np.ones((2, 3)), cov)


@pytest.mark.parametrize("shape", [(4, 4), (3, 4), (3,)])
def test_input_cov_wrong_shape(shape):
    cov = np.eye(4)[: shape[0], : shape[-1]] if len(shape) == 2 else np.ones(3)
    match = "input_cov must have shape" if len(shape) == 2 else "input_cov must be a matrix"
    with pytest.raises(ValueError, match=match):
        cd.Task(np.ones((2, 3)), cov)


def test_from_data_sample_counts_differ():
    with pytest.raises(ValueError, match="same number of samples"):
        cd.Task.from_data(np.ones((3, 5)), np.ones((2, 4)))


# ---------------------------------------------------------------------------------------
# rules
# ---------------------------------------------------------------------------------------


def test_unknown_rule_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown rule 'adam'") as info:
        cd.get_rule("adam")
    for name in DESIGN_RULE_NAMES:
        assert re.search(rf"(^|[\s,:'\"]){re.escape(name)}($|[\s,'\"])", str(info.value)), name


@pytest.mark.parametrize(
    "name, params, param",
    [
        ("sgd", {"q": 2.0}, "q"),
        ("ngd", {"eps": 0.1}, "eps"),
        ("damped-ngd", {"eps": 0.1, "lm_damping": 0.1}, "lm_damping"),
        ("sqrt-ngd", {"layer_rates": (1.0, 1.0)}, "layer_rates"),
        ("ngd-d", {"learning_rate": 1.0}, "learning_rate"),
    ],
)
def test_unknown_parameter_for_rule(name, params, param):
    with pytest.raises(TypeError, match=rf"rule '{re.escape(name)}' takes no parameter.*'{param}'"):
        cd.get_rule(name, **params)


@pytest.mark.parametrize("name", ["frac-ngd", "frac-ngd-d"])
def test_missing_q(name):
    with pytest.raises(TypeError, match=rf"rule '{name}' needs the parameter q"):
        cd.get_rule(name)


def test_missing_eps():
    with pytest.raises(TypeError, match="needs the parameter eps"):
        cd.get_rule("damped-ngd")


@pytest.mark.parametrize("name", ["frac-ngd", "frac-ngd-d"])
@pytest.mark.parametrize("q", [0.5, 0.0, -2.0, math.nan])
def test_q_below_one(name, q):
    with pytest.raises(ValueError, match=r"q must be >= 1"):
        cd.get_rule(name, q=q)


def test_negative_eps():
    with pytest.raises(ValueError, match=r"eps must be finite and >= 0, got -0.1"):
        cd.get_rule("damped-ngd", eps=-0.1)


@pytest.mark.parametrize("name", ["ngd", "frac-ngd", "sqrt-ngd-d"])
def test_negative_lm_damping(name):
    params = {"q": 2.0} if name == "frac-ngd" else {}
    with pytest.raises(ValueError, match=r"lm_damping must be finite and >= 0, got -0.5"):
        cd.get_rule(name, lm_damping=-0.5, **params)


def test_rcond_out_of_range():
    with pytest.raises(ValueError, match="rcond must be finite and >= 0"):
        cd.get_rule("ngd", rcond=-1e-3)
    with pytest.raises(ValueError, match="rcond is a relative cutoff and must be < 1"):
        cd.get_rule("ngd", rcond=1.0)


def test_layer_rates_of_wrong_length():
    rule = cd.get_rule("sqrt-ngd-d", layer_rates=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"3 layer_rates but the network has depth 2"):
        rule.direction(_net(), _task())
    with pytest.raises(ValueError, match="each layer rate must be finite and >= 0"):
        cd.get_rule("ngd-d", layer_rates=(1.0, -1.0))


def test_unknown_method():
    with pytest.raises(ValueError, match=r"unknown method 'fast'; choose one of"):
        cd.get_rule("ngd").direction(_net(), _task(), method="fast")


@pytest.mark.parametrize("widths", [(4, 2), (4, 3, 3, 2)])
def test_kronsum_needs_depth_two(widths):
    with pytest.raises(ValueError, match=r"'kronsum' needs depth d = 2"):
        cd.get_rule("ngd").direction(_net(widths), _task(), method="kronsum")


def test_kronsum_needs_identity_cov():
    with pytest.raises(ValueError, match=r"'kronsum' needs .*identity input covariance"):
        cd.get_rule("sqrt-ngd").direction(_net(), _task(cov=True), method="kronsum")


def test_methods_of_the_wrong_family():
    with pytest.raises(ValueError, match="'kronsum' is for the full-curvature rules"):
        cd.get_rule("ngd-d").direction(_net(), _task(), method="kronsum")
    with pytest.raises(ValueError, match="'kronecker' is for the block-diagonal rules"):
        cd.get_rule("ngd").direction(_net(), _task(), method="kronecker")
    for method in ("balanced", "balanced-checked", "cg"):
        with pytest.raises(ValueError, match=rf"'{method}' is for the full-curvature rules"):
            cd.get_rule("sqrt-ngd-d").direction(_net(), _task(), method=method)


@pytest.mark.parametrize("name, params", [("ngd", {}), ("sqrt-ngd", {"lm_damping": 0.1}), ("damped-ngd", {"eps": 0.0})])
def test_cg_needs_a_damped_rule(name, params):
    """cg solves (K + shift)Λ = ·; rules without a shift (or with a fractional power) are refused."""
    with pytest.raises(ValueError, match="'cg' is for damped rules"):
        cd.get_rule(name, **params).direction(_net(), _task(), method="cg")


# ---------------------------------------------------------------------------------------
# a failing call corrupts nothing
# ---------------------------------------------------------------------------------------


def test_failing_calls_change_nothing():
    ws = _net((4, 3, 2), seed=5)
    rng = np.random.default_rng(6)
    target = rng.standard_normal((2, 4))
    m = rng.standard_normal((4, 4))
    cov = m @ m.T + 0.5 * np.eye(4)
    copies = [w.copy() for w in ws], target.copy(), cov.copy()
    task = cd.Task(target, cov)
    rule = cd.get_rule("sqrt-ngd")
    before = [np.asarray(x).copy() for x in rule.direction(ws, task)]

    bad_ws = [w.copy() for w in ws]
    bad_ws[0][1, 1] = np.nan
    bad_ws_copy = [w.copy() for w in bad_ws]
    asym = cov.copy()
    asym[0, 1] += 1.0
    asym_copy = asym.copy()
    failing = [
        (ValueError, lambda: rule.direction(bad_ws, task)),
        (ValueError, lambda: rule.direction(ws, task, method="kronsum")),
        (ValueError, lambda: rule.direction(ws, task, method="fast")),
        (ValueError, lambda: rule.direction(ws[:1], task)),
        (ValueError, lambda: cd.Task(target, asym)),
        (ValueError, lambda: cd.Task(target, -cov)),
        (ValueError, lambda: cd.get_rule("sqrt-ngd-d", layer_rates=(1.0, 2.0, 3.0)).direction(ws, task)),
    ]
    for exc, call in failing:
        with pytest.raises(exc):
            call()

    for w, c in zip(ws, copies[0]):
        np.testing.assert_array_equal(w, c)
    np.testing.assert_array_equal(target, copies[1])
    np.testing.assert_array_equal(cov, copies[2])
    for w, c in zip(bad_ws, bad_ws_copy):
        np.testing.assert_array_equal(w, c)  # NaN compare equal position-wise in assert_array_equal
    np.testing.assert_array_equal(asym, asym_copy)
    # the task and rule still give the same direction, bit for bit
    np.testing.assert_array_equal(task.target, target)
    np.testing.assert_array_equal(task.input_cov, cov)
    after = rule.direction(ws, task)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(np.asarray(a), b)
