"""Mode projection (§4, Fig. 3D) and mode values read from aligned weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curvdyn._validate import check_count, check_real, check_widths
from curvdyn.task import Task


def correlation_modes(task: Task) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SVD of the task's input–output correlation ``Σ_yx = W* Σ = U diag(s) Vᵀ``.

    For a task from data, ``W* Σ = Y Xᵀ/P`` (the data correlation of §4; the row space of
    ``Y Xᵀ`` lies in the range of Σ). Returns ``(U (n_d, r), s (r,), V (n_0, r))`` with
    ``r = min(n_d, n_0)``, ``s`` descending (Fig. 3A: the mode strengths).
    """
    corr = np.asarray(task.target) @ np.asarray(task.input_cov)
    u, s, vt = np.linalg.svd(corr, full_matrices=False)
    return u, s, vt.T


def project_modes(maps, task: Task, *, full: bool = False) -> np.ndarray:
    """Project a network's input–output correlation on the task's correlation modes (Fig. 3D).

    The network's input–output correlation is ``E[ŷ xᵀ] = W Σ``; its component on mode k of
    ``Σ_yx = W* Σ`` (:func:`correlation_modes`) is ``c_k = u_kᵀ W Σ v_k``. For the task
    itself ``c_k = s_k``; for Σ = I and aligned weights ``c_k`` is the map's mode value σ̄_k.
    Each ``c_k`` is invariant under the SVD's sign choice (u_k, v_k → −u_k, −v_k); within a
    degenerate singular value only the block as a whole is basis-independent.

    Args:
      maps: ``W`` of shape ``(n_d, n_0)``, or with leading axes ``(..., n_d, n_0)`` (e.g. a
        trajectory's ``traj.map`` of shape ``(T, n_d, n_0)``).
      task: the task defining Σ and ``Σ_yx``.
      full: return the whole matrix ``Uᵀ W Σ V`` (``(..., r, r)``) instead of its diagonal.

    Returns:
      ``(..., r)`` components (or ``(..., r, r)``).
    """
    u, _, v = correlation_modes(task)
    w = np.asarray(check_real(maps, "maps"), dtype=np.float64)
    if w.shape[-2:] != tuple(task.target.shape):
        raise ValueError(f"maps must end in shape {tuple(task.target.shape)}, got {w.shape}")
    proj = np.einsum("ak,...ab,bc,cl->...kl", u, w, np.asarray(task.input_cov), v)
    return proj if full else np.diagonal(proj, axis1=-2, axis2=-1).copy()


def aligned_bases(target, widths: Sequence[int], r: int | None = None) -> tuple[np.ndarray, ...]:
    """The bases ``U_0, ..., U_d`` of :func:`curvdyn.init_aligned` with ``key=None``.

    ``U_0 = R*`` and ``U_d = L*`` (the target's right/left singular vectors, first r) and the
    first r coordinate axes for the hidden layers; ``w_i = U_i diag(σ_i) U_{i−1}ᵀ``.
    """
    target = np.asarray(check_real(target, "target"), dtype=np.float64)
    if target.ndim != 2:
        raise ValueError(f"target must be a matrix, got shape {target.shape}")
    widths = check_widths(widths)
    r = min(min(widths), min(target.shape)) if r is None else check_count(r, "r")
    left, _, right_t = np.linalg.svd(target)
    d = len(widths) - 1
    return (right_t.T[:, :r],) + tuple(np.eye(widths[i])[:, :r] for i in range(1, d)) + (left[:, :r],)


def layer_mode_values(weights, bases: Sequence) -> np.ndarray:
    """Per-layer mode values ``σ_{i,k} = u_{i,k}ᵀ w_i u_{i−1,k}`` of aligned weights.

    Args:
      weights: ``(w_1, ..., w_d)``, each ``(..., n_i, n_{i−1})`` (e.g. ``traj.weights``).
      bases: ``(U_0, ..., U_d)``, ``U_i`` of shape ``(n_i, r)`` (:func:`aligned_bases`).

    Returns:
      ``(..., r, d)`` — the layout of :class:`ModeTrajectory` ``.sigmas``.
    """
    if len(bases) != len(weights) + 1:
        raise ValueError(f"need d + 1 = {len(weights) + 1} bases, got {len(bases)}")
    bases = [np.asarray(check_real(u, f"bases[{i}]")) for i, u in enumerate(bases)]
    vals = [
        np.einsum("ak,...ab,bk->...k", bases[i + 1], np.asarray(check_real(w, f"layer w_{i + 1}")), bases[i])
        for i, w in enumerate(weights)
    ]
    return np.stack(vals, axis=-1)
