"""Checks of options and array arguments shared by the whole package: one message per kind of mistake.

Scalars: :func:`check_nonneg`, :func:`check_positive`, :func:`check_unit_interval`, :func:`check_q`,
:func:`check_count`.
Arrays: :func:`check_real` (every public function that takes arrays calls it: complex input
is refused, never silently cut to its real part). Widths: :func:`check_widths`.

Every check of curvdyn calls these: the library's arguments, the optimizers' hyperparameters
(:mod:`curvdyn.optim._checks` adds only the traced-value cases), the experiments' settings and
the command line's argument types.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def _is_complex(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    if dtype is not None:
        return np.issubdtype(np.dtype(dtype), np.complexfloating)
    return isinstance(value, complex)


def _is_extended_float(dtype: np.dtype) -> bool:
    """bfloat16 and the other ``ml_dtypes`` floats (numpy kind ``V``) that JAX computes in."""
    import jax.numpy as jnp

    try:
        return bool(jnp.issubdtype(dtype, jnp.floating))
    except TypeError:
        return False


def _number(value: Any, name: str, expected: str) -> float:
    if _is_complex(value):
        raise TypeError(f"{name} must be a real number{expected}, got the complex value {value!r}")
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a number{expected}, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number{expected}, got {value!r}") from None


def check_number(value: Any, name: str) -> float:
    """A real number as a float (NaN and inf allowed), ``TypeError`` otherwise (complex included)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return _number(value, name, "")


def check_finite(value: Any, name: str) -> float:
    """A finite real number (``TypeError`` if not a real number, ``ValueError`` if not finite)."""
    value = _number(value, name, "")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_nonneg(value: Any, name: str) -> float:
    """A finite number ≥ 0 (``TypeError`` if not a real number, ``ValueError`` otherwise)."""
    value = _number(value, name, "")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def check_positive(value: Any, name: str) -> float:
    """A finite number > 0 (``TypeError`` if not a real number, ``ValueError`` otherwise)."""
    value = check_nonneg(value, name)
    if value == 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_unit_interval(value: Any, name: str) -> float:
    """A number in ``[0, 1)`` (a decay factor, a relative cutoff)."""
    value = check_nonneg(value, name)
    if value >= 1:
        raise ValueError(f"{name} must lie in [0, 1), got {value}")
    return value


def check_q(q: Any) -> float:
    """The correction order ``q ≥ 1`` (``math.inf`` allowed: the plain gradient)."""
    q = _number(q, "q", " >= 1")
    if math.isnan(q) or q < 1:
        raise ValueError(
            f"q must be >= 1 (q = 1 is NGD / K-FAC, q = 2 sqrt-NGD, q = inf SGD, the plain gradient), got {q}"
        )
    return q


def check_count(value: Any, name: str, minimum: int = 1) -> int:
    """An integer ≥ ``minimum`` (integral floats such as ``3.0`` accepted; ``2.5``, ``True`` refused)."""
    ok = not isinstance(value, (bool, np.bool_, str, bytes)) and not _is_complex(value)
    if ok:
        try:
            ok = float(value) == int(value) and int(value) >= minimum
        except (TypeError, ValueError, OverflowError):
            ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_widths(widths: Any) -> tuple[int, ...]:
    """Layer widths ``(n_0, ..., n_d)``: a sequence of at least two positive integers.

    Raises:
      ValueError: fewer than two widths, or a width that is not a positive integer (``2.5`` is
        refused, not truncated to 2).
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, (Sequence, np.ndarray)):
        raise ValueError(f"widths must be a sequence (n_0, ..., n_d) of positive integers, got {widths!r}")
    if len(widths) < 2:
        raise ValueError(f"widths must list n_0, ..., n_d with d >= 1 (at least two), got {tuple(widths)}")
    out = []
    for i, n in enumerate(widths):
        try:
            out.append(check_count(n, f"n_{i}"))
        except ValueError:
            raise ValueError(f"every width must be a positive integer, got n_{i} = {n!r} in {tuple(widths)}") from None
    return tuple(out)


def check_real(value: Any, name: str) -> Any:
    """``value`` as an array of real numbers (JAX arrays and tracers pass through unchanged).

    Anything that is not already an array goes through ``numpy.asarray``. Integer and boolean
    arrays pass (callers cast them to floating point); the dtype check is static, so this works
    under ``jax.jit``.

    Raises:
      TypeError: the array is complex (its imaginary part would be dropped silently by a cast
        to float), or not numeric at all (strings, objects).
    """
    if not hasattr(value, "dtype") or not hasattr(value, "shape"):
        try:
            value = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a numeric array: {exc}") from None
    dtype = np.dtype(value.dtype)
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(
            f"{name} is complex ({dtype}); curvdyn works with real arrays only. Pass the real part "
            f"explicitly (x.real) if that is what you mean"
        )
    if dtype.kind not in "biuf" and not _is_extended_float(dtype):
        raise TypeError(f"{name} must be a numeric array, got dtype {dtype}")
    return value
