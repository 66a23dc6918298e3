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


# ---------------------------------------------------------------------------------------
# complex arrays: refused everywhere, never cut to their real part
# ---------------------------------------------------------------------------------------


def _complex(x):
    return np.asarray(x) * (1 + 0.5j)


def _complex_calls():
    import jax

    ws, task = _net(), _task()
    cws = [ws[0], _complex(ws[1])]
    target = np.asarray(task.target)
    key = jax.random.PRNGKey(0)
    th = cd.theory
    sig = np.array([[0.5, 0.7, 0.9]])
    st = cd.student_teacher
    return {
        "as_weights": lambda: cd.as_weights(cws),
        "direction": lambda: cd.get_rule("ngd").direction(cws, task),
        "method_at": lambda: cd.get_rule("ngd").method_at(cws, task),
        "simulate": lambda: cd.simulate(cws, task, "sgd", 1.0, n_save=2),
        "astype": lambda: cd.astype(cws, task, np.float32),
        "Task-target": lambda: cd.Task(_complex(target)),
        "Task-cov": lambda: cd.Task(target, _complex(np.eye(4))),
        "Task-loss_offset": lambda: cd.Task(target, loss_offset=np.complex128(1.0)),
        "from_data-x": lambda: cd.Task.from_data(_complex(np.ones((4, 6))), np.ones((2, 6))),
        "from_data-y": lambda: cd.Task.from_data(np.ones((4, 6)), _complex(np.ones((2, 6)))),
        "student_teacher-profile": lambda: st(key, 4, rank=2, teacher_profile=_complex([1.0, 2.0])),
        "student_teacher-snr": lambda: st(key, 4, rank=2, snr=np.complex128(10.0)),
        "init_aligned-target": lambda: cd.init_aligned(_complex(target), (4, 3, 2), [1.0, 0.5]),
        "init_aligned-modes": lambda: cd.init_aligned(target, (4, 3, 2), _complex([1.0, 0.5])),
        "init_balanced-scale": lambda: cd.init_balanced(key, (4, 3, 2), _complex([1.0, 0.5])),
        "init_random-scale": lambda: cd.init_random(key, (4, 3, 2), 0.05 + 0.01j),
        "frac-ngd-q": lambda: cd.get_rule("frac-ngd", q=np.complex128(2.0)),
        "coupling": lambda: th.coupling(_complex(sig)),
        "mode_velocity-sigmas": lambda: th.mode_velocity("ngd", _complex(sig), 1.0),
        "mode_velocity-target": lambda: th.mode_velocity("ngd", sig, np.complex128(1.0)),
        "map_velocity": lambda: th.map_velocity("sqrt-ngd", _complex(sig), 1.0),
        "constant_of_motion": lambda: th.constant_of_motion("ngd-d", _complex(sig)),
        "simulate_modes-sigmas": lambda: th.simulate_modes("ngd", _complex(sig), [1.0], 1.0, n_save=2),
        "simulate_modes-targets": lambda: th.simulate_modes("ngd", sig, _complex([1.0]), 1.0, n_save=2),
        "map_solution-t": lambda: th.map_solution(_complex([0.0, 1.0]), 0.5, 1.0),
        "map_solution-target": lambda: th.map_solution([0.0, 1.0], 0.5, np.complex128(1.0)),
        "map_time": lambda: th.map_time(_complex([0.5]), 0.5, 1.0),
        "balanced_map_velocity": lambda: th.balanced_map_velocity(_complex([0.5]), 0.5, 1.0),
        "project_modes": lambda: th.project_modes(_complex(np.ones((2, 4))), task),
        "aligned_bases": lambda: th.aligned_bases(_complex(target), (4, 3, 2)),
        "layer_mode_values": lambda: th.layer_mode_values(cws, th.aligned_bases(target, (4, 3, 2))),
        "measure_update_rates": lambda: th.measure_update_rates(cws, task, "ngd"),
    }


@pytest.mark.parametrize("which", list(_complex_calls()))
def test_complex_input_is_refused(which):
    """Each public entry that takes arrays (or numbers) refuses complex ones by name; a cast to
    float would silently drop the imaginary part."""
    with pytest.raises(TypeError, match=r"complex"):
        _complex_calls()[which]()


def test_complex_refusal_names_the_argument():
    with pytest.raises(TypeError, match=r"layer w_2 is complex \(complex128\)"):
        cd.as_weights([np.ones((3, 4)), np.ones((2, 3)) * 1j])
    with pytest.raises(TypeError, match=r"input_cov is complex"):
        cd.Task(np.ones((2, 3)), np.eye(3) + 0j)
    with pytest.raises(TypeError, match=r"sigmas0 is complex"):
        cd.theory.simulate_modes("sgd", np.ones((1, 2)) + 0j, [1.0], 1.0)
    # real arrays of other kinds still pass (integers are cast to float)
    assert cd.as_weights([np.ones((3, 4), dtype=np.int32)])[0].dtype == np.float64


# ---------------------------------------------------------------------------------------
# widths: positive integers, never truncated
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("widths", [(3, 2.5, 3), (3, 0, 3), (3, -1, 3), (3, True, 3), (3, "2", 3), (3,)])
@pytest.mark.parametrize("init", ["random", "xavier", "balanced", "aligned", "unflatten", "aligned_bases"])
def test_widths_must_be_positive_integers(widths, init):
    import jax

    key = jax.random.PRNGKey(0)
    calls = {
        "random": lambda: cd.init_random(key, widths),
        "xavier": lambda: cd.init_xavier(key, widths),
        "balanced": lambda: cd.init_balanced(key, widths),
        "aligned": lambda: cd.init_aligned(np.ones((3, 3)), widths, [1.0]),
        "unflatten": lambda: cd.unflatten_weights(np.ones(12), widths),
        "aligned_bases": lambda: cd.theory.aligned_bases(np.ones((3, 3)), widths),
    }
    match = "at least two" if len(widths) == 1 else r"every width must be a positive integer, got n_1 = "
    with pytest.raises(ValueError, match=match):
        calls[init]()


def test_integral_widths_are_accepted():
    import jax

    ws = cd.init_random(jax.random.PRNGKey(0), (3, np.int64(4), 2.0))
    assert [w.shape for w in ws] == [(4, 3), (2, 4)]


# ---------------------------------------------------------------------------------------
# a Rule is validated however it is built
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"name": "ngd", "q": 0.5}, r"rule 'ngd' has q = 1, got q = 0.5"),
        ({"name": "sqrt-ngd-d", "q": 3.0, "block": True}, r"rule 'sqrt-ngd-d' has q = 2"),
        ({"name": "ngd", "block": True}, r"rule 'ngd' has block=False"),
        ({"name": "ngd-d", "q": 1.0}, r"rule 'ngd-d' has block=True"),
        ({"name": "sgd", "eps": 0.1}, r"rule 'sgd' takes no eps"),
        ({"name": "damped-ngd", "q": 1.0}, r"'damped-ngd' needs eps"),
        ({"name": "damped-ngd", "q": 1.0, "eps": -1.0}, r"eps must be finite and >= 0"),
        ({"name": "damped-ngd", "q": 2.0, "eps": 0.1}, r"'damped-ngd' has q = 1"),
        ({"name": "damped-ngd", "q": 1.0, "eps": 0.1, "lm_damping": 0.1}, r"takes no lm_damping"),
        ({"name": "frac-ngd", "q": 0.5}, r"q must be >= 1"),
        ({"name": "frac-ngd", "q": math.nan}, r"q must be >= 1"),
        ({"name": "ngd", "q": 1.0, "rcond": 1.5}, r"rcond is a relative cutoff and must be < 1"),
        ({"name": "sgd", "rcond": 1e-6}, r"rule 'sgd' takes no rcond"),
        ({"name": "ngd", "q": 1.0, "layer_rates": (1.0, 1.0)}, r"takes no layer_rates"),
        ({"name": "ngd-d", "q": 1.0, "block": True, "layer_rates": ()}, r"layer_rates must not be empty"),
        ({"name": "ngd-d", "q": 1.0, "block": True, "layer_rates": (1.0, -2.0)}, r"each layer rate"),
        ({"name": "NGD", "q": 1.0}, r"unknown rule 'NGD'"),
        ({"name": "adam"}, r"unknown rule 'adam'"),
    ],
)
def test_rule_built_directly_is_validated(fields, match):
    with pytest.raises(ValueError, match=match):
        cd.Rule(**fields)


def test_rule_built_directly_equals_get_rule():
    direct = cd.Rule(name="frac-ngd-d", q=3, block=True, layer_rates=[1.0, 0.5])
    assert direct == cd.get_rule("frac-ngd-d", q=3.0, layer_rates=(1.0, 0.5))
    assert direct.layer_rates == (1.0, 0.5) and hash(direct)  # a tuple: usable as a static jit argument
    with pytest.raises(TypeError, match="q must be a number"):
        cd.Rule(name="frac-ngd", q="3")


# ---------------------------------------------------------------------------------------
# mixed float32 / float64: promoted to the common dtype (docs/conventions.md)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["weights32", "task32"])
def test_mixed_precision_is_promoted(which):
    import jax.numpy as jnp

    ws64, task64 = cd.as_weights(_net((3, 4, 2))), _task(2, 3)
    ws32, task32 = cd.astype(ws64, task64, jnp.float32)
    ws, task = (ws32, task64) if which == "weights32" else (ws64, task32)
    # the reference: both in float64, from the same (rounded) values
    ref_ws, ref_task = cd.astype(ws, task, jnp.float64)
    rule = cd.get_rule("sqrt-ngd")
    got = rule.direction(ws, task)
    assert all(g.dtype == jnp.float64 for g in got)
    np.testing.assert_array_equal(
        np.concatenate([np.ravel(g) for g in got]),
        np.concatenate([np.ravel(g) for g in rule.direction(ref_ws, ref_task)]),
    )
    for integrator in (cd.ODE(), cd.Euler(dt=0.1)):
        traj = cd.simulate(ws, task, rule, 1.0, integrator=integrator, n_save=3)
        want = cd.simulate(ref_ws, ref_task, rule, 1.0, integrator=integrator, n_save=3)
        assert traj.status == "completed" and traj.weights[0].dtype == np.float64
        np.testing.assert_allclose(traj.loss, want.loss, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# options the resolved method ignores raise
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params, method, options, match",
    [
        ("ngd", {}, "mapspace", {"cg_tol": 1e-8}, r"cg_tol: option\(s\) of method 'cg'; rule NGD runs 'mapspace'"),
        ("damped-ngd", {"eps": 0.1}, "auto", {"cg_maxiter": 10}, r"cg_maxiter: option\(s\) of method 'cg'"),
        ("ngd-d", {}, "kronecker", {"cg_tol": 1e-8, "cg_maxiter": 5}, r"cg_tol, cg_maxiter"),
        ("ngd", {}, "mapspace", {"balance_tol": 1e-6}, r"balance_tol is an option of method 'balanced-checked'"),
        ("damped-ngd", {"eps": 0.1}, "cg", {"balance_tol": 1e-6}, r"runs 'cg' here"),
        ("sgd", {}, "auto", {"balance_tol": 1e-6}, r"runs 'gradient' here"),
        ("sgd", {}, "auto", {"cg_tol": 1e-6}, r"runs 'gradient' here"),
    ],
)
def test_options_the_method_ignores_raise(name, params, method, options, match):
    rule = cd.get_rule(name, **params)
    with pytest.raises(ValueError, match=match):
        rule.direction(_net((4, 3, 3, 2)), _task(), method=method, **options)


def test_balance_tol_with_auto_on_a_kronsum_shape_raises():
    """d = 2, Σ = I: auto resolves to kronsum, which has no shared-basis check to tune."""
    rule = cd.get_rule("ngd")
    with pytest.raises(ValueError, match=r"runs 'kronsum' here"):
        rule.direction(_net((4, 3, 2)), _task(), balance_tol=1e-6)
    with pytest.raises(ValueError, match=r"runs 'kronsum' here"):
        rule.method_at(_net((4, 3, 2)), _task(), balance_tol=1e-6)
    # where the option is used, it is accepted
    ws = _net((4, 3, 3, 2))
    assert rule.method_at(ws, _task(), balance_tol=1e-6) == "mapspace"
    rule.direction(ws, _task(), method="balanced-checked", balance_tol=1e-6)
    cd.get_rule("damped-ngd", eps=0.1).direction(ws, _task(), method="cg", cg_tol=1e-8, cg_maxiter=500)
