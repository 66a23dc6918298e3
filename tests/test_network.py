"""Network primitives (map, loss, gradient, layer products, conserved quantities, flattening)
and the initializers, each against an explicit computation from the definitions."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

import curvdyn as cd
import reference as R

WIDTHS = [(4, 3), (3, 6, 2), (4, 2, 7, 3), (2, 5, 5, 3, 6), (3, 4, 1, 5, 2, 3)]


def _rand_case(widths, seed, cov_kind="full"):
    rng = np.random.default_rng(seed)
    ws = tuple(rng.standard_normal((o, i)) / np.sqrt(max(i, o)) for i, o in zip(widths[:-1], widths[1:]))
    target = rng.standard_normal((widths[-1], widths[0]))
    if cov_kind == "I":
        cov = None
    else:
        m = rng.standard_normal((widths[0], widths[0]))
        cov = m @ m.T / widths[0] + 0.2 * np.eye(widths[0])
    return ws, target, cov


def _explicit_product(mats):
    """``mats[-1] @ ... @ mats[0]`` by numpy, or None for an empty list."""
    out = None
    for m in mats:
        out = m if out is None else m @ out
    return out


@pytest.mark.parametrize("widths", WIDTHS, ids=str)
@pytest.mark.parametrize("cov_kind", ["I", "full"])
def test_map_loss_gradient(widths, cov_kind):
    ws, target, cov = _rand_case(widths, seed=sum(widths), cov_kind=cov_kind)
    task = cd.Task(target, cov)
    sigma = np.eye(widths[0]) if cov is None else cov
    w_map = _explicit_product(list(ws))
    assert np.asarray(cd.network_map(ws)).shape == (widths[-1], widths[0])
    assert np.allclose(cd.network_map(ws), w_map, rtol=0, atol=1e-14 * np.abs(w_map).max())
    delta = w_map - target
    assert np.linalg.norm(cd.displacement(ws, task) - delta) <= 1e-14 * np.linalg.norm(delta)
    want = 0.5 * np.trace(delta @ sigma @ delta.T)
    assert abs(float(cd.loss(ws, task)) - want) <= 1e-13 * want
    g = cd.gradient(ws, task)
    g_ref = R.gradient_flat(ws, target, sigma)  # jax.grad of ½ tr(ΔΣΔᵀ) over the flat vector
    assert R.rel_err(g, R.unflat(g_ref, widths)) <= 1e-13
    for g_i, w_i in zip(g, ws):
        assert g_i.shape == w_i.shape


@pytest.mark.parametrize("widths", WIDTHS, ids=str)
def test_outer_products_are_the_explicit_products(widths):
    ws, _, _ = _rand_case(widths, seed=1 + sum(widths))
    a, b = cd.outer_products(ws)
    d = len(ws)
    assert len(a) == d and len(b) == d
    for i in range(1, d + 1):
        a_ref = _explicit_product(list(ws[i:]))  # w_d ... w_{i+1}
        b_ref = _explicit_product(list(ws[: i - 1]))  # w_{i-1} ... w_1
        a_ref = np.eye(widths[-1]) if a_ref is None else a_ref
        b_ref = np.eye(widths[0]) if b_ref is None else b_ref
        assert a[i - 1].shape == (widths[-1], widths[i])
        assert b[i - 1].shape == (widths[i - 1], widths[0])
        np.testing.assert_allclose(a[i - 1], a_ref, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(b[i - 1], b_ref, rtol=1e-13, atol=1e-14)
        # A_i w_i B_i is the map for every i
        np.testing.assert_allclose(a[i - 1] @ ws[i - 1] @ b[i - 1], cd.network_map(ws), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("widths", [w for w in WIDTHS if len(w) >= 3], ids=str)
def test_conserved_quantities_formula(widths):
    ws, _, _ = _rand_case(widths, seed=2 + sum(widths))
    cs = cd.conserved(ws)
    assert len(cs) == len(ws) - 1
    for i, c in enumerate(cs):
        want = ws[i] @ ws[i].T - ws[i + 1].T @ ws[i + 1]
        assert c.shape == (widths[i + 1], widths[i + 1])
        np.testing.assert_allclose(c, want, rtol=1e-13, atol=1e-14)


def test_conserved_quantities_are_invariant_under_the_symmetry():
    """``(w_i, w_{i+1}) → (G w_i, w_{i+1} G⁻¹)`` with orthogonal G keeps the map and the C_i up to
    the rotation ``C_i → G C_i Gᵀ``: a check that C_i pairs the right layers and transposes."""
    widths = (3, 4, 4, 2)
    ws, _, _ = _rand_case(widths, seed=5)
    rng = np.random.default_rng(6)
    g = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    moved = (g @ ws[0], ws[1] @ g.T, ws[2])
    np.testing.assert_allclose(cd.network_map(moved), cd.network_map(ws), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cd.conserved(moved)[0], g @ cd.conserved(ws)[0] @ g.T, atol=1e-13)


@pytest.mark.parametrize("widths", WIDTHS, ids=str)
def test_flatten_unflatten_round_trip(widths):
    ws, _, _ = _rand_case(widths, seed=3 + sum(widths))
    theta = cd.flatten_weights(ws)
    p = sum(i * o for i, o in zip(widths[:-1], widths[1:]))
    assert theta.shape == (p,) and cd.n_params(ws) == p
    assert cd.widths_of(ws) == tuple(widths)
    # documented order: layer 1 first, each layer row-major
    np.testing.assert_array_equal(theta, np.concatenate([w.ravel(order="C") for w in ws]))
    back = cd.unflatten_weights(theta, widths)
    assert len(back) == len(ws)
    for b, w in zip(back, ws):
        np.testing.assert_array_equal(b, w)
    with pytest.raises(ValueError, match="entries"):
        cd.unflatten_weights(np.concatenate([theta, [0.0]]), widths)


def test_as_weights_accepts_lists_and_casts_integers():
    ws = cd.as_weights([np.ones((2, 3), dtype=np.int32), np.ones((1, 2))])
    assert isinstance(ws, tuple)
    assert all(np.issubdtype(w.dtype, np.floating) for w in ws)
    assert ws[0].dtype == np.float64


# ---------------------------------------------------------------------------------------
# initializers
# ---------------------------------------------------------------------------------------

INIT_WIDTHS = [(4, 4), (5, 3, 7), (16, 16, 16, 16, 16), (3, 8, 2, 6)]


@pytest.mark.parametrize("widths", INIT_WIDTHS, ids=str)
@pytest.mark.parametrize("scale", [0.05, 1.7])
def test_init_random_top_singular_value_is_scale(widths, scale):
    ws = cd.init_random(jax.random.PRNGKey(7), widths, scale)
    assert tuple(w.shape for w in ws) == tuple((o, i) for i, o in zip(widths[:-1], widths[1:]))
    for w in ws:
        assert w.dtype == np.float64
        s = np.linalg.svd(np.asarray(w), compute_uv=False)
        assert abs(s[0] - scale) <= 1e-12 * scale
        if min(w.shape) > 1:
            assert s[-1] < 0.99 * scale  # a random matrix, not a scaled orthogonal one
    # deterministic in the key, different for another key
    again = cd.init_random(jax.random.PRNGKey(7), widths, scale)
    other = cd.init_random(jax.random.PRNGKey(8), widths, scale)
    for a, b, c in zip(ws, again, other):
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c)


def test_init_xavier_shape_and_variance():
    """Entries ~ α·N(0, 2/(n_in + n_out)). With N = 60 000 entries the sample variance has
    relative standard error sqrt(2/N) ≈ 0.0058: a 5σ tolerance (0.03) still rejects any
    wrong constant (e.g. 1/n_in = 0.0050 vs 2/(n_in+n_out) = 0.0040 here, a 25% difference)."""
    widths = (200, 300)
    alpha = 1.5
    (w,) = cd.init_xavier(jax.random.PRNGKey(0), widths, alpha)
    assert w.shape == (300, 200) and w.dtype == np.float64
    w = np.asarray(w)
    want_var = alpha**2 * 2.0 / (200 + 300)
    assert abs(w.var() / want_var - 1) <= 5 * np.sqrt(2 / w.size)
    assert abs(w.mean()) <= 5 * np.sqrt(want_var / w.size)
    # α is an exact multiplier of the same draw
    (w1,) = cd.init_xavier(jax.random.PRNGKey(0), widths, 1.0)
    np.testing.assert_allclose(w, alpha * np.asarray(w1), rtol=1e-15)
    ws = cd.init_xavier(jax.random.PRNGKey(1), (3, 5, 2))
    assert [x.shape for x in ws] == [(5, 3), (2, 5)]


@pytest.mark.parametrize("widths", [(4, 4, 4), (3, 6, 5, 2), (5, 2, 7, 4), (6, 9, 8, 7, 6)], ids=str)
def test_init_balanced_is_balanced(widths):
    r = min(widths)
    for scale in (0.05, 1.3, np.linspace(0.5, 2.0, r)):
        ws = cd.init_balanced(jax.random.PRNGKey(3), widths, scale)
        assert tuple(w.shape for w in ws) == tuple((o, i) for i, o in zip(widths[:-1], widths[1:]))
        vals = np.broadcast_to(np.asarray(scale, dtype=float), (r,))
        for i in range(len(ws) - 1):
            lhs = np.asarray(ws[i] @ ws[i].T)
            rhs = np.asarray(ws[i + 1].T @ ws[i + 1])
            assert np.linalg.norm(lhs - rhs) <= 1e-12 * np.linalg.norm(lhs)
        for w in ws:  # every layer has the singular values `scale` (then zeros)
            s = np.linalg.svd(np.asarray(w), compute_uv=False)
            np.testing.assert_allclose(s[:r], np.sort(vals)[::-1], rtol=1e-12)
            assert np.all(s[r:] <= 1e-12 * s[0])
        # the map has singular values scale^d
        s_map = np.linalg.svd(np.asarray(cd.network_map(ws)), compute_uv=False)
        np.testing.assert_allclose(s_map[:r], np.sort(vals)[::-1] ** len(ws), rtol=1e-11)


@functools.cache
def _target(n_out, n_in, seed=4):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_out, n_in))


@pytest.mark.parametrize(
    "widths, r, use_key",
    [((4, 6, 3), 3, False), ((5, 3, 7, 4), 3, True), ((4, 8, 8, 8, 4), 2, True), ((3, 3), 3, False)],
    ids=str,
)
def test_init_aligned_reproduces_target_singular_vectors(widths, r, use_key):
    """The map is ``L* diag(Π_i σ_i) R*ᵀ`` (first r modes of W*), built sign-invariantly as
    ``Σ_k σ̄_k l_k r_kᵀ`` from numpy's SVD of W*; each layer has singular values |σ_{i,k}|."""
    target = _target(widths[-1], widths[0])
    d = len(widths) - 1
    rng = np.random.default_rng(9)
    vals = rng.uniform(0.3, 1.5, (d, r)) * rng.choice([-1.0, 1.0], (d, r))
    key = jax.random.PRNGKey(2) if use_key else None
    ws = cd.init_aligned(target, widths, vals, key=key)
    assert tuple(w.shape for w in ws) == tuple((o, i) for i, o in zip(widths[:-1], widths[1:]))
    left, _, right_t = np.linalg.svd(target)
    prods = np.prod(vals, axis=0)
    want = sum(prods[k] * np.outer(left[:, k], right_t[k]) for k in range(r))
    w_map = np.asarray(cd.network_map(ws))
    assert np.linalg.norm(w_map - want) <= 1e-12 * np.linalg.norm(want)
    for i, w in enumerate(ws):
        s = np.linalg.svd(np.asarray(w), compute_uv=False)
        np.testing.assert_allclose(s[:r], np.sort(np.abs(vals[i]))[::-1], rtol=1e-12)
        assert np.all(s[r:] <= 1e-12)
    # inactive modes: w_1 annihilates R*'s columns beyond r, w_dᵀ annihilates L*'s
    assert np.linalg.norm(np.asarray(ws[0]) @ right_t[r:].T) <= 1e-12
    assert np.linalg.norm(np.asarray(ws[-1]).T @ left[:, r:]) <= 1e-12
    # a 1-d mode_values means the same values in every layer
    ws1 = cd.init_aligned(target, widths, vals[0], key=key)
    want1 = sum(vals[0, k] ** d * np.outer(left[:, k], right_t[k]) for k in range(r))
    assert np.linalg.norm(np.asarray(cd.network_map(ws1)) - want1) <= 1e-12 * np.linalg.norm(want1)


def test_init_aligned_layers_are_aligned_with_each_other():
    """Footnote 2: ``R_{i+1} = L_i`` — consecutive layers share their hidden singular vectors,
    so ``w_{i+1} w_i`` has singular values ``|σ_{i+1,k} σ_{i,k}|`` (no mixing between modes)."""
    widths = (5, 6, 7, 4)
    target = _target(4, 5)
    vals = np.array([[1.2, 0.5, 0.9], [0.7, 1.4, 0.6], [1.1, 0.8, 1.3]])
    ws = cd.init_aligned(target, widths, vals, key=jax.random.PRNGKey(11))
    for i in range(2):
        s = np.linalg.svd(np.asarray(ws[i + 1] @ ws[i]), compute_uv=False)
        np.testing.assert_allclose(s[:3], np.sort(np.abs(vals[i] * vals[i + 1]))[::-1], rtol=1e-12)
