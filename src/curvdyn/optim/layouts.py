"""Where the dense layers of an MLP live in a parameter pytree, in either kernel layout.

curvdyn's optimizers work on dense layers ``s_i = a_{i-1} w_iᵀ + b_i`` with ``w_i`` of shape
``(n_i, n_{i-1})`` (``(n_out, n_in)``). Parameters may hold them in any of these layouts,
recognized from the structure:

* **curvdyn**: a tuple or list of layers, each a matrix ``w`` ``(n_out, n_in)`` or a mapping
  ``{"w": w, "b": b}`` (``"b"`` optional) — a curvdyn network ``ws`` is one as it is;
* **flax** (linen ``nn.Dense``): ``{"params": {"Dense_0": {"kernel": k, "bias": b}, ...}}`` or the
  inner mapping, kernels ``k`` of shape ``(n_in, n_out)`` (so ``w = kᵀ``);
* **equinox**: an ``equinox.nn.MLP`` (the module itself, ``eqx.filter(model, eqx.is_array)`` or a
  gradient from ``eqx.filter_grad``), layers ``eqx.nn.Linear`` with ``weight`` ``(n_out, n_in)``.

Layer order: the sequence order; in a mapping, by the number at the end of the names
(``Dense_2`` before ``Dense_10``) when every name ends in one, else the mapping's own order
(flax's creation order). Consecutive layers must chain (``n_in`` of a layer is ``n_out`` of the
one before), which catches most misreadings. A mapping of ``{"w", "b"}`` layers (haiku's
``(n_in, n_out)`` convention under curvdyn's names) is refused as ambiguous: pass a tuple.

:func:`dense_layers` returns the layers as ``(w, b)`` pairs in the ``(n_out, n_in)`` layout;
:func:`rebuild_layers` writes such pairs back into a pytree of the same structure (gradients,
updates), transposing back where the layout stores kernels ``(n_in, n_out)``.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.tree_util import DictKey, GetAttrKey, SequenceKey

Pair = tuple[Any, Any]  # (w (n_out, n_in), b (n_out,) or None)


@dataclasses.dataclass(frozen=True)
class _Slot:
    """Where one dense layer's arrays are: key paths of the kernel and the bias (or None)."""

    kernel: tuple
    bias: tuple | None
    transposed: bool  # the stored kernel is (n_in, n_out)


def _get(tree: Any, path: tuple) -> Any:
    for key in path:
        if isinstance(key, DictKey):
            tree = tree[key.key]
        elif isinstance(key, SequenceKey):
            tree = tree[key.idx]
        else:
            tree = getattr(tree, key.name)
    return tree


def _natural_order(names: Sequence[Any]) -> list[Any]:
    """Mapping keys in the order of their trailing numbers when all have one, else as given."""
    numbers = [re.search(r"(\d+)$", str(n)) for n in names]
    if not all(numbers):
        return list(names)
    keys = [int(m.group(1)) for m in numbers if m is not None]
    return [n for _, n in sorted(zip(keys, names), key=lambda p: p[0])]


def _is_equinox_mlp(params: Any) -> bool:
    eqx = sys.modules.get("equinox")  # an equinox module exists only if equinox was imported
    return eqx is not None and isinstance(params, eqx.nn.MLP)


def _slots(params: Any) -> tuple[str, tuple[_Slot, ...]]:
    """The layout's name and the slots of its dense layers, in order (no shape checks)."""
    if isinstance(params, (tuple, list)):
        if len(params) == 0:
            raise TypeError("MLP params must hold at least one dense layer, got an empty sequence")
        slots = []
        for i, layer in enumerate(params, start=1):
            here: tuple = (SequenceKey(i - 1),)
            if isinstance(layer, Mapping):
                extra = set(layer) - {"w", "b"}
                if "w" not in layer or extra:
                    raise ValueError(
                        f"layer {i} must be a weight matrix or a mapping with key 'w' (and optionally "
                        f"'b'), got keys {sorted(layer)}"
                    )
                bias = here + (DictKey("b"),) if layer.get("b") is not None else None
                slots.append(_Slot(here + (DictKey("w"),), bias, False))
            else:
                slots.append(_Slot(here, None, False))
        return "curvdyn", tuple(slots)
    if _is_equinox_mlp(params):
        if getattr(params, "scan", False):
            raise ValueError("an equinox MLP built with scan=True stacks its layers; build it with scan=False")
        slots = []
        for i, layer in enumerate(params.layers):
            here = (GetAttrKey("layers"), SequenceKey(i))
            bias = here + (GetAttrKey("bias"),) if getattr(layer, "bias", None) is not None else None
            slots.append(_Slot(here + (GetAttrKey("weight"),), bias, False))
        return "equinox", tuple(slots)
    if isinstance(params, Mapping):
        prefix: tuple = ()
        inner = params
        if set(params) == {"params"} and isinstance(params["params"], Mapping):
            prefix, inner = (DictKey("params"),), params["params"]
        if not inner or not all(isinstance(v, Mapping) for v in inner.values()):
            raise TypeError(
                "a mapping of parameters must hold one mapping per dense layer, flax-style "
                '{"params": {"Dense_0": {"kernel": (n_in, n_out), "bias": (n_out,)}, ...}}'
            )
        slots = []
        for name in _natural_order(list(inner)):
            layer = inner[name]
            here = prefix + (DictKey(name),)
            if set(layer) == {"w"} or set(layer) == {"w", "b"}:
                raise ValueError(
                    f"layer {name!r}: a mapping of {{'w', 'b'}} layers is ambiguous (curvdyn stores w as "
                    "(n_out, n_in), haiku as (n_in, n_out)); pass a tuple of layers (curvdyn layout) or "
                    "name the kernels 'kernel' ((n_in, n_out), flax)"
                )
            if "kernel" not in layer or set(layer) - {"kernel", "bias"}:
                raise ValueError(f"layer {name!r} must hold 'kernel' (and optionally 'bias'), got keys {sorted(layer)}")
            bias = here + (DictKey("bias"),) if layer.get("bias") is not None else None
            slots.append(_Slot(here + (DictKey("kernel"),), bias, True))
        return "flax", tuple(slots)
    raise TypeError(
        "MLP params must be a tuple or list of dense layers (curvdyn: a weight matrix (n_out, n_in) or "
        '{"w": ..., "b": ...}), a flax-style {"params": {"Dense_0": {"kernel": ..., "bias": ...}}} or an '
        f"equinox.nn.MLP, got {type(params).__name__}"
    )


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic)) or hasattr(x, "aval")


def _check_no_other_arrays(params: Any, slots: Sequence[_Slot]) -> None:
    used = {s.kernel for s in slots} | {s.bias for s in slots if s.bias is not None}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if _is_array(leaf) and tuple(path) not in used:
            raise ValueError(
                f"params hold an array outside the dense layers at {jax.tree_util.keystr(tuple(path))}; "
                "the K-FAC optimizers handle MLPs of dense layers only"
            )


def dense_layers(params: Any) -> tuple[Pair, ...]:
    """Validate an MLP's parameters (any layout of the module docstring) and return
    ``((w_1, b_1), ..., (w_d, b_d))`` with ``w_i`` of shape ``(n_i, n_{i-1})`` and ``b_i`` of
    shape ``(n_i,)`` or ``None``.

    Raises:
      TypeError: ``params`` is not one of the layouts.
      ValueError: a weight is not a matrix, a bias does not have shape ``(n_i,)``, consecutive
        layers do not chain, or the parameters hold arrays outside the dense layers.
    """
    _, slots = _slots(params)
    _check_no_other_arrays(params, slots)
    out: list[Pair] = []
    for i, slot in enumerate(slots, start=1):
        w = _get(params, slot.kernel)
        if np.ndim(w) != 2:
            what = "(n_in, n_out)" if slot.transposed else "(n_out, n_in)"
            raise ValueError(f"layer {i}: weight must have shape {what}, got shape {np.shape(w)}")
        if slot.transposed:
            w = w.T
        b = None if slot.bias is None else _get(params, slot.bias)
        if b is not None and np.shape(b) != (np.shape(w)[0],):
            raise ValueError(f"layer {i}: bias must have shape (n_out,) = ({np.shape(w)[0]},), got {np.shape(b)}")
        if out and np.shape(w)[1] != np.shape(out[-1][0])[0]:
            raise ValueError(
                f"layers do not chain: layer {i} has weight shape {np.shape(w)} (as (n_out, n_in)) but layer "
                f"{i - 1} has {np.shape(out[-1][0])}; need n_in of layer {i} == n_out of layer {i - 1}"
            )
        out.append((w, b))
    return tuple(out)


def rebuild_layers(template: Any, pieces: Sequence[Pair]) -> Any:
    """Inverse of :func:`dense_layers`: ``template``'s pytree with its dense layers replaced by
    ``pieces`` (``(w, b)`` pairs in the ``(n_out, n_in)`` layout), every other leaf kept."""
    _, slots = _slots(template)
    if len(pieces) != len(slots):
        raise ValueError(f"{len(pieces)} layers given for parameters with {len(slots)}")
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    index = {tuple(path): k for k, (path, _) in enumerate(path_leaves)}
    leaves = [leaf for _, leaf in path_leaves]
    for slot, (w, b) in zip(slots, pieces):
        leaves[index[slot.kernel]] = w.T if slot.transposed else w
        if slot.bias is not None:
            leaves[index[slot.bias]] = b
    return jax.tree_util.tree_unflatten(treedef, leaves)


def equinox_activations(model: Any) -> tuple[Any, Any] | None:
    """``(activation, final_activation)`` of an ``equinox.nn.MLP``, or ``None`` for other objects."""
    if not _is_equinox_mlp(model):
        return None
    if model.in_size == "scalar" or model.out_size == "scalar":
        raise ValueError('an equinox MLP with in_size or out_size "scalar" is not supported; use sizes >= 1')
    return model.activation, model.final_activation
