"""Choosing a method: static (shapes only), so it is resolved before tracing."""

from __future__ import annotations

#: Exact methods for the full H₊ (``cg`` is exact to its stated tolerance, damped rules only;
#: ``krylov`` to its checked tolerance, every full rule, with a fallback to ``mapspace``).
FULL_METHODS = ("dense", "mapspace", "kronsum", "balanced", "balanced-checked", "cg", "krylov")

#: ``auto`` takes the matrix-free ``krylov`` path from this map size ``n_d n_0`` on (measured
#: crossover against the eigh path, benchmarks/README.md, "Matrix-free exact directions": even
#: for the fractional powers at n_d n_0 = 256 on Xavier weights, krylov 10–89× faster from 1024).
KRYLOV_MIN_MAP = 400
BLOCK_METHODS = ("dense", "mapspace", "kronecker")


def choose_full_method(widths: tuple[int, ...], identity_cov: bool) -> str:
    """The fastest exact method for the full ``H₊`` at these widths, from shapes alone.

    ``kronsum`` for d = 2 with Σ = I (O(N³)); a narrow bottleneck (fewer parameters than the
    map has entries, ``P < n_d n_0``): ``dense``, the smaller eigenproblem; otherwise ``krylov``
    (matrix-free, O(iterations · d N³)) from ``n_d n_0 ≥`` :data:`KRYLOV_MIN_MAP` on, ``mapspace``
    (size ``n_d n_0``) below.
    :meth:`curvdyn.rules.Rule.resolve_method` wraps ``mapspace``/``dense`` in the run-time
    shared-basis check (``balanced-checked``) for ``auto``.
    """
    d = len(widths) - 1
    n_map = widths[0] * widths[-1]
    n_par = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    if d == 2 and identity_cov:
        return "kronsum"
    if n_map > n_par:
        return "dense"
    return "krylov" if n_map >= KRYLOV_MIN_MAP else "mapspace"


def choose_block_method(widths: tuple[int, ...]) -> str:
    """The cheaper of the layer-factor and map-Gram block methods (cubic eigen cost)."""
    d = len(widths) - 1
    layer_cost = sum(a**3 + b**3 for a, b in zip(widths[:-1], widths[1:]))
    map_cost = d * (widths[0] ** 3 + widths[-1] ** 3)
    return "mapspace" if map_cost < layer_cost else "kronecker"
