"""Diagnostics of the curvature at a point: conditioning of the kept spectrum."""

from __future__ import annotations

import math

import jax.numpy as jnp

from curvdyn.curvature._mapspace_ops import mapspace_kernel
from curvdyn.curvature.precision import effective_rcond
from curvdyn.network import Weights
from curvdyn.task import Task


def condition_number(ws: Weights, task: Task) -> float:
    """``λ_max / λ_min`` over the nonzero spectrum of ``K`` (= that of ``H₊``), a diagnostic."""
    evals = jnp.linalg.eigvalsh(mapspace_kernel(ws, task))
    top = float(evals[-1])
    nonzero = evals[evals > effective_rcond(None, evals.dtype) * top]
    return top / float(nonzero[0]) if nonzero.size else math.inf
