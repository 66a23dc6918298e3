"""Helpers shared by the experiment modules: progress bars, grids and save times, rule styles, measurements.

Nothing here is an experiment; the registry in :mod:`curvdyn.experiments` lists those.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TypeVar

import numpy as np

from curvdyn._names import STYLES, UNKNOWN_COLOR
from curvdyn._progress import progress_bar
from curvdyn._validate import check_count
from curvdyn.integrators import ODE

T = TypeVar("T")


def rule_color(name: str) -> str:
    """The colour of a rule (or digits optimizer) in every figure (:data:`curvdyn._names.STYLES`;
    grey for unknown names)."""
    style = STYLES.get(name)
    return style.color if style else UNKNOWN_COLOR


def rule_label(name: str) -> str:
    """The typeset label of a rule in figures, claims and the report (``√NGD`` for ``sqrt-ngd``;
    :data:`curvdyn._names.STYLES`), the name itself for unknown names."""
    style = STYLES.get(name)
    return style.display if style else name


@dataclasses.dataclass(frozen=True)
class Axis:
    """Grid points on one axis: ``numpy.linspace(start, stop, num)``, or with ``log``
    ``numpy.logspace(start, stop, num)`` (``start``, ``stop`` then base-10 exponents)."""

    start: float
    stop: float
    num: int
    log: bool = False

    def __post_init__(self) -> None:
        check_count(self.num, "num")

    def values(self) -> np.ndarray:
        if self.log:
            return np.logspace(self.start, self.stop, int(self.num))
        return np.linspace(self.start, self.stop, int(self.num))


def progress(iterable: Iterable[T], *, enabled: bool, desc: str, total: int | None = None, leave: bool = False):
    """A tqdm progress bar over ``iterable`` on stderr when ``enabled`` and stderr is a terminal;
    otherwise the plain iterable, printing nothing (:func:`curvdyn._progress.progress_bar`)."""
    return progress_bar(iterable, enabled=enabled, desc=desc, total=total, leave=leave)


def scalar(value) -> np.ndarray:
    """A number as a data entry: a 0-d float64 array (what ``data.npz`` gives back)."""
    return np.asarray(value, dtype=np.float64)


def log_times(t_end: float, n: int, t_min: float) -> np.ndarray:
    """``0`` followed by ``n`` log-spaced times from ``t_min`` to ``t_end`` (save times)."""
    if not (0 < t_min < t_end):
        raise ValueError(f"need 0 < t_min < t_end, got t_min={t_min}, t_end={t_end}")
    return np.concatenate([[0.0], np.logspace(np.log10(t_min), np.log10(t_end), int(n))])


def first_crossing(t: np.ndarray, y: np.ndarray, level: float) -> float:
    """The first time ``y`` reaches ``level`` from below, interpolated linearly in ``log t``.

    ``t`` must be increasing (``t[0]`` may be 0). Returns ``inf`` when ``y`` never reaches
    ``level`` and ``t[0]`` when it starts at or above it.
    """
    t, y = np.asarray(t, float), np.asarray(y, float)
    above = np.nonzero(y >= level)[0]
    if above.size == 0:
        return float("inf")
    k = int(above[0])
    if k == 0:
        return float(t[0])
    t0, t1, y0, y1 = t[k - 1], t[k], y[k - 1], y[k]
    frac = (level - y0) / (y1 - y0) if y1 != y0 else 1.0
    if t0 > 0:
        return float(np.exp(np.log(t0) + frac * (np.log(t1) - np.log(t0))))
    return float(t0 + frac * (t1 - t0))


def relative_drift(conserved: np.ndarray) -> float:
    """``max_t ‖C(t) − C(0)‖_F / ‖C(0)‖_F`` for one conserved matrix recorded as ``(T, n, n)``."""
    c = np.asarray(conserved, float)
    ref = np.linalg.norm(c[0])
    if ref == 0:
        return float("inf") if np.any(c != 0) else 0.0
    return float(np.max(np.linalg.norm(c - c[0], axis=(-2, -1))) / ref)


def random_target(key, singular_values) -> np.ndarray:
    """A square target ``W* = U diag(s) Vᵀ`` with Haar-random orthogonal ``U, V``
    (:func:`curvdyn.init.haar_orthogonal` of the two halves of ``jax.random.split(key)``).

    The singular values are ``singular_values`` (any order, repeats allowed); ``n = len(s)``.
    """
    import jax

    from curvdyn.init import haar_orthogonal

    k_u, k_v = jax.random.split(key)
    s = np.asarray(singular_values, dtype=np.float64)
    n = s.shape[0]
    u, v = haar_orthogonal(k_u, n), haar_orthogonal(k_v, n)
    return (u * s) @ v.T


# Settings shared by the singular-mode figures (fig1, fig2) for their full-matrix runs. With
# equal widths, save-time counts and ODE options, curvdyn.simulate reuses one compiled program
# per rule across those experiments in one process (a compile costs 3–7 s on 2 CPU cores).
MODE_RUN_WIDTH = 4
MODE_RUN_N_SAVE = 241
MODE_RUN_ODE = ODE(rtol=1e-10, atol=1e-12, solver="tsit5", max_steps=100_000)


def straight_map_path_invertible(w_map: np.ndarray, target: np.ndarray) -> bool:
    """Whether the straight line ``(1 − s)·target + s·w_map``, s ∈ [0, 1], avoids singular maps.

    NGD's and NGD-d's map moves on that line (``Ẇ = −η(W − W*)``, eq. 20 with p = 0). It is
    singular for some s ∈ (0, 1) exactly when ``target⁻¹ w_map`` has an eigenvalue on the
    closed negative real axis (always so when ``det w_map`` and ``det target`` differ in sign);
    there a layer is singular, where NGD-d's field is (and balanced layers freeze a mode).
    """
    eig = np.linalg.eigvals(np.linalg.solve(np.asarray(target), np.asarray(w_map)))
    return not bool(np.any((eig.real <= 0) & (np.abs(eig.imag) <= 1e-12 * np.abs(eig).max())))


def band_over_seeds(t_ref: np.ndarray, curves: list[tuple[np.ndarray, np.ndarray]], *, log_time: bool = True):
    """``(q05, median, q95)`` over seeds of curves ``(t_s, y_s)`` on the times ``t_ref``, shape (T, ...).

    Each seed's curve is interpolated (linearly, in log t with ``log_time``; ``y_s`` of shape
    (T_s, ...) along its first axis) onto ``t_ref``; outside a seed's time range its value is
    NaN and left out of the quantiles (:func:`numpy.nanquantile`, linear, as the claims table's
    5–95 % range).
    """
    t_ref = np.asarray(t_ref, dtype=np.float64)
    x_ref = np.log(t_ref) if log_time else t_ref
    stacked = []
    for t, y in curves:
        t, y = np.asarray(t, dtype=np.float64), np.asarray(y, dtype=np.float64)
        x = np.log(t) if log_time else t
        flat = y.reshape(len(t), -1)
        cols = [np.interp(x_ref, x, flat[:, j], left=np.nan, right=np.nan) for j in range(flat.shape[1])]
        stacked.append(np.stack(cols, axis=-1).reshape((len(t_ref),) + y.shape[1:]))
    arr = np.stack(stacked)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: no seed covers that time
            q = np.nanquantile(arr, [0.05, 0.5, 0.95], axis=0)
    return q[0], q[1], q[2]


def per_seed_points(ax, seeds, values: dict[str, list[float]], *, log: bool = True) -> None:
    """One marker per seed and name (rule or optimizer, in its colour), the names side by side
    at each seed, and each name's median as a short line: a figure's per-seed results."""
    names = list(values)
    x = np.arange(len(seeds), dtype=np.float64)
    width = 0.7 / max(len(names), 1)
    for i, name in enumerate(names):
        offset = (i - (len(names) - 1) / 2) * width
        y = np.asarray(values[name], dtype=np.float64)
        ax.plot(x + offset, y, "o", ms=5, color=rule_color(name), mec="k", mew=0.4, label=rule_label(name))
        finite = y[np.isfinite(y)]
        if finite.size:
            ax.hlines(np.median(finite), -0.5, len(seeds) - 0.5, color=rule_color(name), lw=0.8, ls=":")
    ax.set_xticks(x, [str(s) for s in seeds])
    ax.set_xlim(-0.5, len(seeds) - 0.5)
    ax.set_xlabel("seed (dotted: median over seeds)")
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.25, axis="y")
