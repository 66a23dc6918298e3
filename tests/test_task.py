"""Tasks: defaults, the square root of Σ, tasks from data (with singular Σ), student–teacher."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import curvdyn as cd
import reference as R


def _rng_ws(rng, widths):
    return tuple(rng.standard_normal((o, i)) / np.sqrt(max(i, o)) for i, o in zip(widths[:-1], widths[1:]))


def _data_loss(w_map, x, y):
    """``(1/2P) Σ_μ ‖W x^μ − y^μ‖²`` computed sample by sample."""
    res = w_map @ x - y
    return 0.5 * np.mean(np.sum(res * res, axis=0))


# ---------------------------------------------------------------------------------------
# Task
# ---------------------------------------------------------------------------------------


def test_task_defaults():
    rng = np.random.default_rng(0)
    target = rng.standard_normal((3, 5))
    task = cd.Task(target)
    assert task.output_dim == 3 and task.input_dim == 5
    assert task.identity_cov is True
    assert task.loss_offset == 0.0
    np.testing.assert_array_equal(task.target, target)
    np.testing.assert_array_equal(task.input_cov, np.eye(5))
    np.testing.assert_array_equal(task.sqrt_cov, np.eye(5))
    assert task.target.dtype == np.float64 and task.input_cov.dtype == np.float64
    # an explicit identity is recognized as such, and gives the same loss
    explicit = cd.Task(target, np.eye(5))
    assert explicit.identity_cov is True
    ws = _rng_ws(rng, (5, 4, 3))
    assert float(cd.loss(ws, explicit)) == pytest.approx(float(cd.loss(ws, task)), rel=1e-15)


@pytest.mark.parametrize("rank", [4, 2])
def test_task_sqrt_cov_squares_to_cov(rank):
    """``S = Σ^{1/2}``: symmetric PSD with ``S S = Σ`` (also for a rank-deficient Σ)."""
    rng = np.random.default_rng(rank)
    m = rng.standard_normal((4, rank))
    cov = m @ m.T
    task = cd.Task(rng.standard_normal((2, 4)), cov)
    assert task.identity_cov is False
    s = np.asarray(task.sqrt_cov)
    assert np.linalg.norm(s - s.T) <= 1e-14 * np.linalg.norm(s)
    assert np.linalg.eigvalsh(s).min() >= -1e-7 * np.linalg.norm(s)  # √(round-off) at the zero modes
    assert np.linalg.norm(s @ s - cov) <= 1e-12 * np.linalg.norm(cov)
    np.testing.assert_allclose(task.input_cov, cov, rtol=1e-15, atol=0)


def test_task_is_a_pytree():
    rng = np.random.default_rng(1)
    m = rng.standard_normal((3, 3))
    task = cd.Task(rng.standard_normal((2, 3)), m @ m.T, loss_offset=0.7)
    leaves, treedef = jax.tree_util.tree_flatten(task)
    back = jax.tree_util.tree_unflatten(treedef, leaves)
    for a, b in ((back.target, task.target), (back.input_cov, task.input_cov), (back.sqrt_cov, task.sqrt_cov)):
        np.testing.assert_array_equal(a, b)
    assert back.identity_cov == task.identity_cov and back.loss_offset == task.loss_offset


# ---------------------------------------------------------------------------------------
# from data
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_in, n_out, p", [(4, 3, 50), (6, 2, 6), (6, 3, 4), (5, 5, 1)], ids=["P>n0", "P=n0", "P<n0", "P=1"]
)
def test_from_data_loss_plus_offset_is_the_data_loss(n_in, n_out, p):
    """``loss(ws, task) + task.loss_offset = (1/2P) Σ ‖W x − y‖²`` for networks of several depths
    and at the optimum, also when P < n_0 (singular Σ)."""
    rng = np.random.default_rng(n_in * 100 + p)
    x = rng.standard_normal((n_in, p))
    y = rng.standard_normal((n_out, p)) + rng.standard_normal((n_out, n_in)) @ x
    task = cd.Task.from_data(x, y)
    np.testing.assert_allclose(task.input_cov, x @ x.T / p, rtol=1e-14, atol=1e-15)
    # W* is the minimum-norm least-squares solution of W X ≈ Y (independent: lstsq on Xᵀ)
    w_star = np.linalg.lstsq(x.T, y.T, rcond=None)[0].T
    assert np.linalg.norm(np.asarray(task.target) - w_star) <= 1e-10 * np.linalg.norm(w_star)
    for widths in ((n_in, n_out), (n_in, 3, n_out), (n_in, 7, 2, 5, n_out)):
        ws = _rng_ws(rng, widths)
        got = float(cd.loss(ws, task)) + task.loss_offset
        want = _data_loss(np.asarray(R.product_map(ws)), x, y)
        assert abs(got - want) <= 1e-12 * want
    # at the optimum the loss is 0 and the offset is the least-squares residual
    assert abs(float(cd.loss((w_star,), task))) <= 1e-20 + 1e-12 * task.loss_offset
    # (the offset is a difference of terms of size ½ tr(YYᵀ)/P: round-off relative to that)
    scale = 0.5 * np.sum(y * y) / p
    assert abs(task.loss_offset - _data_loss(w_star, x, y)) <= 1e-12 * scale
    assert task.loss_offset >= -1e-12 * scale


def test_from_data_with_singular_cov_builds_a_valid_task():
    """P < n_0: Σ is singular (rank P) and the task is still accepted and usable by the rules."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 3))
    y = rng.standard_normal((2, 3))
    task = cd.Task.from_data(x, y)
    ev = np.linalg.eigvalsh(np.asarray(task.input_cov))
    assert np.sum(ev > 1e-12 * ev.max()) == 3
    ws = _rng_ws(rng, (6, 4, 2))
    d = cd.get_rule("ngd").direction(ws, task)
    assert all(np.all(np.isfinite(np.asarray(x_))) for x_ in d)


# ---------------------------------------------------------------------------------------
# student–teacher
# ---------------------------------------------------------------------------------------


def test_student_teacher_whitening_rank_and_snr():
    n_in, n_out, rank, snr, noise = 8, 5, 3, 4.0, 0.5
    profile = np.array([1.0, 0.6, 0.3])
    st = cd.student_teacher(
        jax.random.PRNGKey(0),
        n_in,
        n_out,
        rank=rank,
        snr=snr,
        n_train=3 * n_in,
        noise_std=noise,
        teacher_profile=profile,
    )
    x = np.asarray(st.x_train)
    assert x.shape == (n_in, 3 * n_in) and st.y_train.shape == (n_out, 3 * n_in)
    # exact whitening: X Xᵀ / P = I
    np.testing.assert_allclose(x @ x.T / x.shape[1], np.eye(n_in), rtol=0, atol=1e-12)
    np.testing.assert_allclose(st.train_task.input_cov, np.eye(n_in), rtol=0, atol=1e-12)
    # the teacher has rank `rank` with singular values snr · noise_std · profile
    s = np.linalg.svd(np.asarray(st.teacher), compute_uv=False)
    np.testing.assert_allclose(s[:rank], snr * noise * np.sort(profile)[::-1], rtol=1e-12)
    assert np.all(s[rank:] <= 1e-12 * s[0])
    assert st.teacher.shape == (n_out, n_in) and st.noise_std == noise and st.snr == snr


def test_student_teacher_train_task_is_the_data_task():
    st = cd.student_teacher(jax.random.PRNGKey(5), 6, 4, rank=2, n_train=10)
    x, y = np.asarray(st.x_train), np.asarray(st.y_train)
    rng = np.random.default_rng(0)
    ws = _rng_ws(rng, (6, 5, 4))
    got = float(cd.loss(ws, st.train_task)) + st.train_task.loss_offset
    want = _data_loss(np.asarray(R.product_map(ws)), x, y)
    assert abs(got - want) <= 1e-12 * want


def test_student_teacher_default_and_unwhitened_sizes():
    st = cd.student_teacher(jax.random.PRNGKey(1), 5)  # paper setting: n_out = n_in, P = n_in
    assert st.teacher.shape == (5, 5) and st.x_train.shape == (5, 5)
    np.testing.assert_allclose(st.train_task.input_cov, np.eye(5), atol=1e-12)
    raw = cd.student_teacher(jax.random.PRNGKey(1), 5, n_train=40, whiten=False)
    cov = np.asarray(raw.train_task.input_cov)
    assert np.max(np.abs(cov - np.eye(5))) > 1e-3  # not whitened
    few = cd.student_teacher(jax.random.PRNGKey(1), 6, n_train=3)  # P < N: cannot whiten
    ev = np.linalg.eigvalsh(np.asarray(few.train_task.input_cov))
    assert np.sum(ev > 1e-12 * ev.max()) == 3


def test_student_teacher_is_reproducible_from_the_key():
    kw = dict(rank=2, n_train=12, n_test=7)
    a = cd.student_teacher(jax.random.PRNGKey(3), 6, 4, **kw)
    b = cd.student_teacher(jax.random.PRNGKey(3), 6, 4, **kw)
    c = cd.student_teacher(jax.random.PRNGKey(4), 6, 4, **kw)
    for name in ("teacher", "x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert not np.allclose(getattr(a, name), getattr(c, name)), name
    assert a.train_task.loss_offset == b.train_task.loss_offset


def test_student_teacher_noise_level():
    """``y − W_teacher x`` is the noise: its sample std over n_out·P = 4000 entries is within
    5 standard errors (std·/sqrt(2·4000) ≈ 1.1%·std) of noise_std."""
    noise = 0.7
    st = cd.student_teacher(jax.random.PRNGKey(8), 10, 4, rank=2, n_train=1000, noise_std=noise)
    z = np.asarray(st.y_train) - np.asarray(st.teacher) @ np.asarray(st.x_train)
    assert abs(z.std() / noise - 1) <= 5 / np.sqrt(2 * z.size)
    assert abs(z.mean()) <= 5 * noise / np.sqrt(z.size)


def test_student_teacher_test_task_is_the_expected_loss():
    """``loss(ws, test_task) + offset = E[½‖W x − y‖²]`` for fresh x ~ N(0, I), y = W_T x + z.

    Monte-Carlo check with M = 200 000 fresh samples, drawn (a) here with numpy from the
    teacher and (b) by the generator itself (``n_test``). The student's map is the teacher plus
    a perturbation of norm ~0.5, so the per-sample loss is dominated by the noise term and its
    spread is small. Tolerance: 5 standard errors of the sample mean (SE = sample std / √M,
    ~0.2% of the expectation here), so a correct formula fails with probability ~1e-6 (and the
    seeds are fixed). The test is meaningful: it also asserts 5·SE < 2% of the noise term
    ½ n_out σ² (and the target term ½‖W − W_T‖² is ~0.1 while ‖W_T‖² ≈ 5), so a wrong
    noise offset (a missing ½, n_out or σ²) or a wrong target would be caught.
    """
    n_in, n_out, noise, m = 6, 4, 0.8, 200_000
    st = cd.student_teacher(jax.random.PRNGKey(2), n_in, n_out, rank=2, snr=2.0, noise_std=noise, n_test=m)
    task = st.test_task
    np.testing.assert_array_equal(task.target, st.teacher)
    assert task.identity_cov
    rng = np.random.default_rng(12)
    w1 = rng.standard_normal((n_in, n_in))  # invertible hidden layer of width n_in
    perturbation = 0.25 * rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
    ws = (w1, (np.asarray(st.teacher) + perturbation) @ np.linalg.inv(w1))
    w_map = np.asarray(R.product_map(ws))
    expected = float(cd.loss(ws, task)) + task.loss_offset
    noise_term = 0.5 * n_out * noise**2

    teacher = np.asarray(st.teacher)
    x = rng.standard_normal((n_in, m))
    y = teacher @ x + noise * rng.standard_normal((n_out, m))
    for xs, ys in ((x, y), (np.asarray(st.x_test), np.asarray(st.y_test))):
        assert xs.shape == (n_in, m)
        res = w_map @ xs - ys
        per_sample = 0.5 * np.sum(res * res, axis=0)
        se = per_sample.std() / np.sqrt(m)
        assert 5 * se < 0.02 * noise_term
        assert abs(per_sample.mean() - expected) <= 5 * se
