"""Checks of scalar options shared by the whole package: one message per kind of mistake."""

from __future__ import annotations

import math
from typing import Any


def _number(value: Any, name: str, expected: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number{expected}, got {value!r}") from None


def check_nonneg(value: Any, name: str) -> float:
    """A finite number ≥ 0 (``TypeError`` if not a number, ``ValueError`` otherwise)."""
    value = _number(value, name, "")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def check_positive(value: Any, name: str) -> float:
    """A finite number > 0 (``TypeError`` if not a number, ``ValueError`` otherwise)."""
    value = check_nonneg(value, name)
    if value == 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_q(q: Any) -> float:
    """The correction order ``q ≥ 1`` (``math.inf`` allowed: the plain gradient)."""
    q = _number(q, "q", " >= 1")
    if math.isnan(q) or q < 1:
        raise ValueError(
            f"q must be >= 1 (q = 1 is NGD / K-FAC, q = 2 sqrt-NGD, q = inf SGD, the plain gradient), got {q}"
        )
    return q
