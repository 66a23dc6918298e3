"""The second-order Runge–Kutta–Chebyshev solver (RKC) for stiff gradient flows, as a diffrax solver.

SGD's continuous-time dynamics ``ẇ = −η ∇L(w)`` is stiff: its Jacobian ``−η ∇²L`` is symmetric,
so its spectrum is real, and it spans from the learned modes' relaxation rate (``η λ_max ≈ 134``
in the paper's Fig. 3 task) down to the noise modes' ``~1e-4``. A classical explicit solver
(Tsit5) is then held by stability to steps ``≈ 3.5 / (η λ_max)`` over the whole run. RKC
(Sommeijer, Shampine & Verwer, "RKC: an explicit solver for parabolic PDEs", J. Comput. Appl.
Math. 88, 1998) is explicit too, but its ``s`` stages follow the shifted Chebyshev recursion
whose stability interval on the negative real axis grows as ``β(s) ≈ 0.65 s²``, so a step ``h``
needs only ``s ≈ sqrt(1.54 h ρ)`` evaluations of the field (``ρ`` the spectral radius of the
Jacobian), and the step is set by accuracy, not stability. It is second order.

One step from ``(t₀, y₀)`` with ``h = t₁ − t₀``, damping ``ε`` (2/13), ``w₀ = 1 + ε/s²``,
``w₁ = T_s'(w₀)/T_s''(w₀)`` and ``b_j = T_j''(w₀)/T_j'(w₀)²`` (``b₀ = b₁ = b₂``),
``a_j = 1 − b_j T_j(w₀)``, ``T_j`` the Chebyshev polynomials of the first kind::

    Y₀ = y₀,   Y₁ = y₀ + b₁ w₁ h F(y₀),
    Y_j = (1 − μ_j − ν_j) y₀ + μ_j Y_{j−1} + ν_j Y_{j−2} + μ̃_j h F(Y_{j−1}) + γ̃_j h F(y₀),
    μ_j = 2 w₀ b_j / b_{j−1},  ν_j = −b_j / b_{j−2},  μ̃_j = 2 w₁ b_j / b_{j−1},  γ̃_j = −a_{j−1} μ̃_j,

and ``y₁ = Y_s``. The local error estimate is the paper's ``(12 (y₀ − y₁) + 6 h (F(y₀) + F(y₁))) / 15``
(the trapezoidal rule's defect, ``O(h³)``), so diffrax's controller uses the exponent 1/3;
``F(y₁)`` is reused by the next step (first same as last), and it gives the cubic Hermite dense
output. ``s = 1 + ⌊sqrt(1 + 1.54 h ρ̂)⌋`` with ``ρ̂ = 1.2 ρ`` (the paper's safety factor) and
``ρ`` from power iteration on ``∂F/∂y`` (Jacobian–vector products, :func:`jax.jvp`): 20
iterations at the start, then one per step warm-started from the last vector, which tracks the
top eigenvector as the curvature changes (``‖J v‖ ≤ ρ`` for the symmetric Jacobian of a gradient
flow; an underestimate shows in the error estimate as an unstable step, which the controller
rejects). A step that would need more than ``max_stages`` stages is rejected (an infinite
error), so the controller shrinks it.

For non-stiff flows (the curvature-corrected rules, whose Jacobian is ``O(η)``) it is a plain
second-order method with ``s = 2``: use Tsit5 there.
"""

from __future__ import annotations

from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu

#: The paper's damping ε of the Chebyshev recursion (stability interval ≈ 0.653 s², no point of
#: the interval's interior with ``|P_s| > 1 − ε/3``).
DAMPING = 2.0 / 13.0
#: Safety factor on the estimated spectral radius (the paper's).
RHO_SAFETY = 1.2
#: Power iterations on the Jacobian at the start of a solve.
INITIAL_POWER_ITERATIONS = 20


def _norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(leaf * leaf) for leaf in jtu.tree_leaves(tree)))


def _axpy_tree(*pairs):
    """``Σ_k c_k x_k`` over pytrees ``x_k`` of the same structure (``pairs = (c_1, x_1), …``)."""
    coeffs = [c for c, _ in pairs]
    trees = [x for _, x in pairs]
    return jtu.tree_map(lambda *leaves: sum(c * leaf for c, leaf in zip(coeffs, leaves, strict=True)), *trees)


def stages_for(h_rho: jax.Array) -> jax.Array:
    """The number of stages ``s = 1 + ⌊sqrt(1 + 1.54 h ρ̂)⌋`` (at least 2) whose stability
    interval ``β(s) ≈ 0.653 s²`` covers ``h ρ̂``."""
    return jnp.maximum(2, 1 + jnp.floor(jnp.sqrt(1.0 + 1.54 * h_rho)).astype(jnp.int32))


def _w1(s: jax.Array, w0: jax.Array) -> jax.Array:
    """``T_s'(w₀) / T_s''(w₀)`` in closed form (``w₀ > 1``, ``T_s(w) = cosh(s arccosh w)``)."""
    temp1 = w0 * w0 - 1.0
    temp2 = jnp.sqrt(temp1)
    arg = s * jnp.log(w0 + temp2)
    return jnp.sinh(arg) * temp1 / (jnp.cosh(arg) * s * temp2 - w0 * jnp.sinh(arg))


class RKC(diffrax.AbstractAdaptiveSolver):
    """Second-order Runge–Kutta–Chebyshev: explicit, with a stability interval that grows as the
    square of its (adaptive) number of stages (the module docstring has the scheme).

    For ODEs ``y' = F(t, y)`` (one :class:`diffrax.ODETerm`) whose Jacobian has a real, or nearly
    real, spectrum: gradient flows. Use it with :class:`diffrax.PIDController`; ``order`` 2,
    error order 3.

    Attributes:
      max_stages: the most stages of one step; a longer step is rejected.
      power_iterations: Jacobian–vector products per step for the spectral-radius estimate.
    """

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation
    max_stages: int = eqx.field(static=True, default=1000)
    power_iterations: int = eqx.field(static=True, default=1)

    def order(self, terms) -> int:
        del terms
        return 2

    def error_order(self, terms) -> int:
        del terms
        return 3

    def _power(self, terms, t, y, args, v, n: int):
        """``n`` power iterations on ``∂F/∂y`` at ``y`` from ``v`` (unit): (new unit vector, ‖J v‖)."""

        def one(_, carry):
            vec, _rho = carry
            _, jv = jax.jvp(lambda z: terms.vf(t, z, args), (y,), (vec,))
            nrm = _norm(jv)
            safe = jnp.where(nrm > 0, nrm, 1.0)
            vec = jtu.tree_map(lambda a, old: jnp.where(nrm > 0, a / safe, old), jv, vec)
            return vec, nrm

        return jax.lax.fori_loop(0, n, one, (v, jnp.zeros((), _norm(v).dtype)))

    def init(self, terms, t0, t1, y0, args):
        del t1
        f0 = terms.vf(t0, y0, args)
        # a fixed pseudo-random start (a field's own direction can be orthogonal to the stiff modes)
        leaves, treedef = jtu.tree_flatten(y0)
        keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
        v = jtu.tree_unflatten(
            treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
        )
        v = jtu.tree_map(lambda a: a / _norm(v), v)
        v, rho = self._power(terms, t0, y0, args, v, INITIAL_POWER_ITERATIONS)
        return f0, v, rho

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        f0, v, _ = solver_state
        f0 = jax.lax.cond(made_jump, lambda: terms.vf(t0, y0, args), lambda: f0)
        h = t1 - t0
        v, rho = self._power(terms, t0, y0, args, v, self.power_iterations)
        h_rho = jnp.abs(h) * RHO_SAFETY * rho
        s_needed = stages_for(h_rho)
        too_stiff = s_needed > self.max_stages
        s = jnp.minimum(s_needed, self.max_stages)
        sf = s.astype(h.dtype) if hasattr(h, "dtype") else s.astype(rho.dtype)
        w0 = 1.0 + DAMPING / (sf * sf)
        w1 = _w1(sf, w0)
        b = 1.0 / (4.0 * w0 * w0)  # b_0 = b_1 = b_2
        mu1t = b * w1
        y1_stage = _axpy_tree((1.0, y0), (mu1t * h, f0))
        one = jnp.ones_like(w0)
        zero = jnp.zeros_like(w0)

        def body(j, carry):
            yjm1, yjm2, tjm1, tjm2, dtjm1, dtjm2, d2tjm1, d2tjm2, bjm1, bjm2, cjm1, cjm2 = carry
            tj = 2 * w0 * tjm1 - tjm2
            dtj = 2 * tjm1 + 2 * w0 * dtjm1 - dtjm2
            d2tj = 4 * dtjm1 + 2 * w0 * d2tjm1 - d2tjm2
            bj = d2tj / (dtj * dtj)
            ajm1 = 1.0 - bjm1 * tjm1
            mu = 2 * w0 * bj / bjm1
            nu = -bj / bjm2
            mut = 2 * w1 * bj / bjm1
            gat = -ajm1 * mut
            fjm1 = terms.vf(t0 + cjm1 * h, yjm1, args)
            yj = _axpy_tree((1.0 - mu - nu, y0), (mu, yjm1), (nu, yjm2), (mut * h, fjm1), (gat * h, f0))
            cj = mu * cjm1 + nu * cjm2 + mut + gat
            return yj, yjm1, tj, tjm1, dtj, dtjm1, d2tj, d2tjm1, bj, bjm1, cj, cjm1

        # j = 2 … s; the carry holds stage j − 1 and j − 2 (T_1 = w₀, T_0 = 1, T_1' = 1, T_0' = 0)
        carry = (y1_stage, y0, w0, one, one, zero, zero, zero, b, b, mu1t, zero)
        carry = jax.lax.fori_loop(2, s + 1, body, carry)
        y1 = carry[0]
        f1 = terms.vf(t1, y1, args)
        y_error = _axpy_tree((0.8, y0), (-0.8, y1), (0.4 * h, f0), (0.4 * h, f1))
        y_error = jtu.tree_map(lambda e: jnp.where(too_stiff, jnp.inf, e), y_error)
        dense_info = dict(y0=y0, y1=y1, k0=jtu.tree_map(lambda f: h * f, f0), k1=jtu.tree_map(lambda f: h * f, f1))
        return y1, y_error, dense_info, (f1, v, rho), diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
