"""Dense MLPs and their exact Kronecker-factored Gauss–Newton statistics.

Model
-----
An MLP of depth d is a sequence of dense layers. curvdyn's own layout is a tuple
``params = (layer_1, ..., layer_d)``; each layer is either

* a weight matrix ``w_i`` of shape ``(n_i, n_{i-1})`` (no bias) — so a curvdyn deep linear
  network ``ws = (w_1, ..., w_d)`` is an MLP as it is — or
* a mapping ``{"w": w_i, "b": b_i}`` with ``b_i`` of shape ``(n_i,)`` (``"b"`` optional).

Flax-style parameter dicts (kernels ``(n_in, n_out)``) and equinox MLPs work too
(:mod:`curvdyn.optim.layouts`); below, ``w_i`` always means the ``(n_out, n_in)`` matrix.

On a batch ``x`` of shape ``(B, n_0)`` (one example per row) the network computes

    a_0 = x,   s_i = a_{i-1} w_iᵀ + b_i,   a_i = φ_i(s_i),   f(x) = a_d     (shape (B, n_d))

with ``φ_i`` the hidden activation for ``i < d`` and the output activation for ``i = d``
(linear by default).

Loss convention
---------------
Squared loss with an explicit reduction and scale:

    L = loss_scale · (1/N) Σ_b ½ ‖f(x_b) − y_b‖²,   N = B ("mean") or 1 ("sum").

The default (``loss_scale = 1``, ``"mean"``) is the paper's and curvdyn's
``L = ½ E_D ‖W x − y‖² = ½ tr(Δ Σ Δᵀ) + const``. Other common forms: ``mean_b ‖f − y‖²``
(no ½) is ``loss_scale = 2``; ``jnp.mean((f − y)²)`` over all B·n_d entries (what
``optax.squared_error(...).mean()`` gives) is ``loss_scale = 2 / n_d``; ``optax.l2_loss(...)
.mean()`` is ``loss_scale = 1 / n_d``. The loss Hessian with respect to one example's output is
``(loss_scale / N) I``, so the Gauss–Newton matrix is ``H₊ = (loss_scale / N) Σ_b J_bᵀ J_b``,
``J_b = ∂f(x_b)/∂θ``.

K-FAC statistics
----------------
For layer i the Gauss–Newton diagonal block is ``(loss_scale/N) Σ_b (J_{s_i,b}ᵀ J_{s_i,b}) ⊗
(ã_{i-1,b} ã_{i-1,b}ᵀ)`` with ``J_{s_i,b} = ∂f(x_b)/∂s_{i,b}`` (``n_d × n_i``) the backpropagated
output Jacobian and ``ã = [a; 1]`` (the 1 only for layers with a bias). K-FAC replaces the
mean of Kronecker products by the Kronecker product of means:

    G_i = (loss_scale / N) Σ_b J_{s_i,b}ᵀ J_{s_i,b}      (n_i × n_i, output side)
    A_i = (1 / B) Σ_b ã_{i-1,b} ã_{i-1,b}ᵀ               (input side; bias coordinate last)
    H_i ≈ G_i ⊗ A_i,  i.e.  H_i vec(V) ≈ vec(G_i V A_i)  for V of shape (n_i, n_{i-1}[+1]).

``G_i`` comes from the Gauss–Newton matrix (n_d backward passes of one-hot output cotangents,
the exact "ggn_exact" statistic), not from per-example loss gradients (the empirical Fisher):
it does not depend on the targets. For a deep linear network ``J_{s_i,b} = A_i`` is the same
for every example and ``ã = B_i x``, so ``G_i ⊗ A_i`` *is* the exact block
``(A_iᵀ A_i) ⊗ (B_i Σ B_iᵀ)`` (DESIGN.md), for any input covariance Σ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from curvdyn._precision import default_float, resolve_dtype
from curvdyn.optim import _checks
from curvdyn.optim.layouts import dense_layers, equinox_activations, rebuild_layers

Layer = jax.Array | Mapping[str, jax.Array]
#: MLP parameters: curvdyn's tuple of layers, a flax-style dict or an equinox MLP (layouts).
Params = Any

__all__ = ["ACTIVATIONS", "MLP", "KFACStatistics", "dense_layers", "kfac_statistics", "rebuild_layers"]

#: Activation names accepted by :class:`MLP` (a callable works too).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "linear": lambda s: s,
    "identity": lambda s: s,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "gelu": jax.nn.gelu,
    "softplus": jax.nn.softplus,
}


def _resolve_activation(act: str | Callable, name: str) -> Callable[[jax.Array], jax.Array]:
    if isinstance(act, str):
        try:
            return ACTIVATIONS[act.lower()]
        except KeyError:
            raise ValueError(f"unknown {name} {act!r}; known: {sorted(ACTIVATIONS)} or a callable") from None
    if not callable(act):
        raise TypeError(f"{name} must be a name or a callable, got {act!r}")
    return act


@dataclasses.dataclass(frozen=True)
class MLP:
    """A dense MLP ``f(x) = φ_d(s_d)``, ``s_i = a_{i-1} w_iᵀ + b_i``, ``a_i = φ_i(s_i)``.

    Attributes:
      activation: hidden activation ``φ_1 .. φ_{d-1}``: a name from :data:`ACTIVATIONS`
        (``"linear"``, ``"tanh"``, ``"relu"``, ...) or a callable acting elementwise.
      output_activation: ``φ_d`` (default ``"linear"``). The squared loss is taken on
        ``φ_d(s_d)``, and ``G_d`` includes its Jacobian.

    ``MLP("linear")`` is the deep linear network of the paper. Parameters are passed to every
    method (the object holds none): see the module docstring for their layout.
    """

    activation: str | Callable[[jax.Array], jax.Array]
    output_activation: str | Callable[[jax.Array], jax.Array] = "linear"

    def __post_init__(self) -> None:
        _resolve_activation(self.activation, "activation")
        _resolve_activation(self.output_activation, "output_activation")

    def _activations(self, depth: int) -> tuple[Callable, ...]:
        hidden = _resolve_activation(self.activation, "activation")
        last = _resolve_activation(self.output_activation, "output_activation")
        return (hidden,) * (depth - 1) + (last,)

    def forward(
        self,
        params: Params,
        inputs: jax.Array,
        probes: Sequence[jax.Array] | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """Outputs ``f(x)`` (B, n_d) and the layer inputs ``(a_0, ..., a_{d-1})``.

        ``probes`` (optional, one ``(B, n_i)`` array per layer) are added to the
        pre-activations ``s_i``; differentiating with respect to them at zero gives the
        backpropagated quantities ``∂f/∂s_i`` of :func:`kfac_statistics`.
        """
        layers = dense_layers(params)
        x = jnp.asarray(inputs)
        if x.ndim != 2 or x.shape[1] != jnp.shape(layers[0][0])[1]:
            raise ValueError(f"inputs must have shape (batch, n_0) = (B, {jnp.shape(layers[0][0])[1]}), got {x.shape}")
        acts = self._activations(len(layers))
        a = x
        layer_inputs = []
        for i, ((w, b), act) in enumerate(zip(layers, acts)):
            layer_inputs.append(a)
            s = a @ w.T
            if b is not None:
                s = s + b
            if probes is not None:
                s = s + probes[i]
            a = act(s)
        return a, tuple(layer_inputs)

    def __call__(self, params: Params, inputs: jax.Array) -> jax.Array:
        """``f(x)`` for ``inputs`` of shape ``(B, n_0)``: shape ``(B, n_d)``."""
        return self.forward(params, inputs)[0]

    def init(
        self,
        key: jax.Array,
        widths: Sequence[int],
        *,
        bias: bool = True,
        scale: float = 1.0,
        dtype: Any = None,
    ) -> Params:
        """Random parameters for widths ``(n_0, ..., n_d)``.

        ``w_i ~ N(0, scale² / n_{i-1})`` (LeCun normal for ``scale = 1``), ``b_i = 0``. Returns a
        tuple of ``{"w", "b"}`` dicts, or of bare weight matrices when ``bias=False``. ``dtype``
        defaults to JAX's default float (float32, or float64 in 64-bit mode), as in flax/optax;
        an explicit float64 needs 64-bit mode.
        """
        widths = tuple(int(n) for n in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths must hold at least two positive sizes (n_0, ..., n_d), got {widths}")
        scale = _checks.check_positive(scale, "scale")
        dtype = resolve_dtype(dtype=default_float() if dtype is None else dtype, what="MLP.init")
        return _init_jit(key, widths, bool(bias), scale, jnp.dtype(dtype))

    def loss(
        self,
        params: Params,
        inputs: jax.Array,
        targets: jax.Array,
        *,
        reduction: str = "mean",
        loss_scale: float = 1.0,
    ) -> jax.Array:
        """``L = loss_scale · (1/N) Σ_b ½ ‖f(x_b) − y_b‖²`` (N = B for ``"mean"``, 1 for ``"sum"``)."""
        _checks.check_reduction(reduction)
        resid = self(params, inputs) - targets
        total = 0.5 * jnp.sum(resid * resid)
        return loss_scale * (total / resid.shape[0] if reduction == "mean" else total)


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _init_jit(key, widths, bias, scale, dtype):
    keys = jax.random.split(key, len(widths) - 1)
    out = []
    for k, n_in, n_out in zip(keys, widths[:-1], widths[1:]):
        w = scale * jax.random.normal(k, (n_out, n_in), dtype=dtype) / jnp.sqrt(n_in)
        out.append({"w": w, "b": jnp.zeros((n_out,), dtype=dtype)} if bias else w)
    return tuple(out)


class KFACStatistics(NamedTuple):
    """Per-layer Kronecker factors of the Gauss–Newton diagonal blocks of one batch.

    Attributes:
      output_factors: ``(G_1, ..., G_d)``, ``G_i`` of shape ``(n_i, n_i)``.
      input_factors: ``(A_1, ..., A_d)``, ``A_i`` of shape ``(m_i, m_i)`` with
        ``m_i = n_{i-1} + 1`` for a layer with a bias (homogeneous coordinate last) and
        ``n_{i-1}`` without.

    ``H_i ≈ G_i ⊗ A_i`` acting as ``V ↦ G_i V A_i`` on ``V = [∇w_i | ∇b_i]`` (module docstring).
    """

    output_factors: tuple[jax.Array, ...]
    input_factors: tuple[jax.Array, ...]


def _as_mlp(model: Any) -> MLP:
    """The :class:`MLP` that computes like ``model`` (a curvdyn MLP, or an equinox MLP's activations)."""
    if isinstance(model, MLP):
        return model
    activations = equinox_activations(model)
    if activations is not None:
        return MLP(activations[0], output_activation=activations[1])
    raise TypeError(f"model must be a curvdyn.optim.MLP or an equinox.nn.MLP, got {type(model).__name__}")


def kfac_statistics(
    model: Any,
    params: Params,
    inputs: jax.Array,
    *,
    reduction: str = "mean",
    loss_scale: float = 1.0,
) -> KFACStatistics:
    """The K-FAC factors ``G_i`` (Gauss–Newton, output side) and ``A_i`` (input side) of a batch.

    Args:
      model: the :class:`MLP` (its activations), or an ``equinox.nn.MLP`` (its ``activation``
        and ``final_activation``; elementwise, as equinox's are).
      params: its parameters in any layout (:mod:`curvdyn.optim.layouts`): curvdyn's tuple, a
        flax-style dict (kernels ``(n_in, n_out)``), or the equinox MLP itself (or its arrays).
      inputs: the batch ``x``, shape ``(B, n_0)``.
      reduction, loss_scale: the squared-loss convention
        ``L = loss_scale · (1/N) Σ_b ½ ‖f(x_b) − y_b‖²`` (module docstring); they scale ``G_i``.

    Returns:
      :class:`KFACStatistics` with ``G_i = (loss_scale/N) Σ_b J_{s_i,b}ᵀ J_{s_i,b}`` and
      ``A_i = (1/B) Σ_b ã_{i-1,b} ã_{i-1,b}ᵀ``.

    Cost: one forward pass and ``n_d`` backward passes (one per output coordinate, all examples
    at once; this assumes the examples do not interact, true for an MLP).

    Raises:
      ValueError: malformed parameters or inputs, bad ``reduction``/``loss_scale``, or
        non-finite values (checked outside ``jit``).
    """
    model = _as_mlp(model)
    _checks.check_reduction(reduction)
    loss_scale = _checks.check_positive(loss_scale, "loss_scale")
    layers = dense_layers(params)
    x = jnp.asarray(inputs)
    _checks.check_finite_tree((params, x), "params/inputs of kfac_statistics")
    if x.ndim != 2 or x.shape[1] != jnp.shape(layers[0][0])[1]:
        raise ValueError(f"inputs must have shape (batch, n_0) = (B, {jnp.shape(layers[0][0])[1]}), got {x.shape}")
    # the arrays only, in curvdyn's layout: any layout shares one compiled function
    plain = tuple(w if b is None else {"w": w, "b": b} for w, b in layers)
    return _statistics_jit(model, plain, x, reduction, loss_scale)


@partial(jax.jit, static_argnums=(0, 3, 4))
def _statistics_jit(model: MLP, params: Params, x: jax.Array, reduction: str, loss_scale: float) -> KFACStatistics:
    layers = dense_layers(params)
    batch = x.shape[0]
    dtype = jnp.result_type(*[w for w, _ in layers], x)
    probes = tuple(jnp.zeros((batch, jnp.shape(w)[0]), dtype=dtype) for w, _ in layers)

    def outputs(pr):
        return model.forward(params, x, pr)

    out, pullback, layer_inputs = jax.vjp(outputs, probes, has_aux=True)
    n_out = out.shape[1]
    cotangents = jnp.broadcast_to(jnp.eye(n_out, dtype=out.dtype)[:, None, :], (n_out, batch, n_out))
    (backprop,) = jax.vmap(pullback)(cotangents)  # per layer: (n_d, B, n_i), [k, b] = J_{s_i,b}ᵀ e_k
    norm = batch if reduction == "mean" else 1
    g_factors = tuple(loss_scale / norm * jnp.einsum("kbi,kbj->ij", ds, ds) for ds in backprop)
    a_factors = []
    for (_, b), a in zip(layers, layer_inputs):
        if b is not None:
            a = jnp.concatenate([a, jnp.ones((batch, 1), dtype=a.dtype)], axis=1)
        a_factors.append(a.T @ a / batch)
    return KFACStatistics(output_factors=g_factors, input_factors=tuple(a_factors))
