"""Which floating dtype a computation runs in, and the one error when float64 is asked for but off.

curvdyn never changes JAX's configuration. Its exact paths compute in float64 by default, which
JAX provides only in 64-bit mode (``jax.config.update("jax_enable_x64", True)``, or inside
``with jax.enable_x64(True):``). Without it ``jnp.asarray(np.float64 array)`` silently gives
float32, so every place where curvdyn would create float64 arrays asks this module first:

* :func:`input_dtype` — the floating dtype an input asks for (its own floating dtype; float64 for
  Python numbers, lists, integer and boolean arrays);
* :func:`resolve_dtype` — the dtype of a computation from an explicit ``dtype=`` or its inputs;
* :func:`require_float64` — raises :class:`Float64DisabledError` when float64 is requested while
  64-bit mode is off. Every such error comes from here, with the same advice.

This module imports only NumPy at import time (JAX when first asked), so importing curvdyn stays
cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_FLOAT64 = np.dtype(np.float64)


class Float64DisabledError(RuntimeError):
    """A float64 computation was requested while JAX's 64-bit mode (``jax_enable_x64``) is off."""


def x64_enabled() -> bool:
    """Whether JAX computes in float64 when asked to (``jax_enable_x64``, global or in a context)."""
    import jax

    return jax.dtypes.canonicalize_dtype(np.float64) == _FLOAT64


def require_float64(what: str) -> None:
    """Raise :class:`Float64DisabledError` unless JAX's 64-bit mode is on.

    Args:
      what: the computation that needs float64, for the message (e.g. ``"Task"``).
    """
    if x64_enabled():
        return
    raise Float64DisabledError(
        f"{what} computes in float64, but JAX's 64-bit mode is off (jax_enable_x64 = False), so JAX "
        "would silently compute in float32. curvdyn does not change JAX's configuration for you: "
        'turn float64 on at the start of your program with jax.config.update("jax_enable_x64", True) '
        "(or set JAX_ENABLE_X64=1, or work inside `with jax.enable_x64(True):`), or ask for float32 "
        "explicitly: pass dtype=jnp.float32 (Task, Task.from_data, student_teacher, the initializers), "
        "float32 arrays, or cast with curvdyn.astype(ws, task, jnp.float32)."
    )


def input_dtype(x: Any) -> np.dtype:
    """The floating dtype an input asks for.

    Arrays (NumPy or JAX, including tracers) with a floating dtype ask for that dtype; Python
    numbers, nested lists and integer or boolean arrays ask for float64 (curvdyn's default).
    Complex and other non-real inputs are returned as their own dtype, for the caller's checks.
    """
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(x).dtype
        except (TypeError, ValueError):
            return _FLOAT64  # not an array at all: the caller's own check reports it
    dtype = np.dtype(dtype)
    if dtype.kind in "biu":
        return _FLOAT64
    return dtype


def resolve_dtype(*inputs: Any, dtype: Any = None, what: str) -> np.dtype:
    """The floating dtype of a computation on ``inputs``, checked against JAX's mode.

    ``dtype`` when given (``None``: the promoted :func:`input_dtype` of the inputs that are not
    ``None``; float64 when there are none). A float64 result requires 64-bit mode
    (:func:`require_float64`).

    Raises:
      ValueError: ``dtype`` is not a real floating type.
      Float64DisabledError: the result is float64 and 64-bit mode is off.
    """
    if dtype is not None:
        try:
            out = np.dtype(dtype)
        except TypeError:
            raise ValueError(f"dtype must be a floating type such as jnp.float32, got {dtype!r}") from None
        if out.kind != "f":
            raise ValueError(f"dtype must be a real floating type such as jnp.float32, got {out}")
    else:
        kinds = [input_dtype(x) for x in inputs if x is not None]
        floats = [d for d in kinds if d.kind == "f"]
        out = np.result_type(*floats) if floats else _FLOAT64
    if out == _FLOAT64:
        require_float64(what)
    return out


def default_float() -> np.dtype:
    """JAX's default floating dtype now: float64 in 64-bit mode, else float32."""
    import jax

    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))
