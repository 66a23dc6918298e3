"""Optax optimizers that apply the paper's curvature corrections to ordinary JAX models.

* :func:`fractional_kfac` — fractional K-FAC for dense MLPs: each layer's gradient
  ``[∇w_i | ∇b_i]`` is preconditioned by the q-th root of its Kronecker-factored Gauss–Newton
  block, ``G_i^{-1/q} ∇W_i A_i^{-1/q}`` (q = 1: K-FAC; q = 2 with ``depth_scaling``: the
  paper's sqrt-NGD-d), with moving averages, damping and periodic factor/root updates. The
  factors come from :func:`kfac_statistics`, passed to ``update`` as ``curvature=``.
* :func:`fractional_ngd` — exact fractional NGD ``(H₊⁺)^{1/q} g`` for any small model
  ``f(params, x)`` on a mini-batch, through the output-space kernel ``J Jᵀ``; the batch is
  passed to ``update`` as ``inputs=``.

Both are ``optax.GradientTransformationExtraArgs`` (plus ``scale_by_*`` versions without the
learning rate, and stateless ``*_direction`` functions). Loss convention throughout:
``L = loss_scale · (1/N) Σ_b ½ ‖f(x_b) − y_b‖²``, ``N = B`` (``reduction="mean"``, default)
or 1 (``"sum"``); the defaults are the paper's ``½ E_D ‖W x − y‖²``. See ``docs/optim.md``.

Layouts: inputs ``x`` of shape ``(B, n_0)`` (one example per row); dense weights in curvdyn's
``(n_out, n_in)`` convention (a curvdyn network ``ws`` is an MLP's params), flax-style
``{"params": {"Dense_0": {"kernel": (n_in, n_out), "bias": ...}}}`` dicts, or equinox MLPs
(:mod:`curvdyn.optim.layouts`).

Conventions of optax: every factory spells out its hyperparameters and works under
``optax.inject_hyperparams`` (numeric ones may be arrays, traced under ``jit``); counters
saturate instead of overflowing; a step with a non-finite gradient or curvature is skipped (zero
update, state unchanged, counted as in ``optax.apply_if_finite``). Precision follows the
parameters: float32 parameters compute in float32 (with the float32 cutoff), so importing
``curvdyn.optim`` needs no float64 mode.
"""

from curvdyn.optim.kfac import (
    DAMPING_MODES,
    FractionalKFACState,
    fractional_kfac,
    fractional_kfac_direction,
    scale_by_fractional_kfac,
)
from curvdyn.optim.mlp import (
    ACTIVATIONS,
    MLP,
    KFACStatistics,
    dense_layers,
    kfac_statistics,
)
from curvdyn.optim.ngd import (
    SOLVERS,
    FractionalNGDState,
    fractional_ngd,
    fractional_ngd_direction,
    output_jacobian,
    scale_by_fractional_ngd,
)

__all__ = [
    "ACTIVATIONS",
    "DAMPING_MODES",
    "MLP",
    "SOLVERS",
    "FractionalKFACState",
    "FractionalNGDState",
    "KFACStatistics",
    "dense_layers",
    "fractional_kfac",
    "fractional_kfac_direction",
    "fractional_ngd",
    "fractional_ngd_direction",
    "kfac_statistics",
    "output_jacobian",
    "scale_by_fractional_kfac",
    "scale_by_fractional_ngd",
]
