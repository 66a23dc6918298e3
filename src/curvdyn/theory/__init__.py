"""Singular-mode theory, map dynamics, scaling laws and mode projection (paper §3, §4, S.I.).

Everything here is a formula of the paper (equation numbers refer to
``paper/curvature-corrected-learning-dynamics.txt``) made exact and executable; the full-matrix
dynamics (:func:`curvdyn.simulate`) is the ground truth these formulas are tested against.

**One singular mode** (§3.1, §3.3, S.I.2). With weights aligned to the target's singular
vectors (footnote 2, :func:`curvdyn.init_aligned`) every mode k of the map is a product of
scalars ``σ̄ = σ_1 ⋯ σ_d`` (one per layer) that evolve on their own. Notation:
``σ_Δ = σ̄ − σ̄*`` (displacement), ``j_i = ∂σ̄/∂σ_i = Π_{k≠i} σ_k`` (coupling, computed as a
product so that ``σ_i = 0`` is fine), ``‖j‖² = Σ_i j_i²``. At η = 1 the velocities are

=================  =================================================  ==========================
rule               ``σ̇_i``                                            conserved (i, i+1)
=================  =================================================  ==========================
sgd                ``−σ_Δ j_i``                            (eq. 6)    ``σ_i² − σ_{i+1}²`` (7)
ngd / q-NGD        ``−σ_Δ j_i / ‖j‖^{2/q}``          (eqs. 12, 14)    ``σ_i² − σ_{i+1}²``
damped-ngd         ``−(ε+1) σ_Δ j_i / (ε + ‖j‖²)``         (eq. 18)   ``σ_i² − σ_{i+1}²``
ngd-d              ``−σ_Δ / (d j_i)``                      (eq. 24)   ``σ_i / σ_{i+1}``
q-NGD-d            ``−d^{−1/q} σ_Δ sign(j_i)|j_i|^{1−2/q}``  (eq. 25)  ``|σ_i|^{2−2/q} − |σ_{i+1}|^{2−2/q}``
sqrt-ngd-d         ``−σ_Δ sign(j_i) / √d``                 (eq. 26)   ``|σ_i| − |σ_{i+1}|``
=================  =================================================  ==========================

Eq. (18) written with ``a = ε/‖j‖`` equals the damped form in the table (DESIGN.md). A block
rule's factor ``d^{−1/q}`` is ``rule.layer_scales(d)`` (the per-layer rates η_i when given).
Every rule applies a function ``f`` of the curvature eigenvalue the mode sees — ``κ = ‖j‖²``
for the full rules, ``κ_i = j_i²`` for layer i of a block rule — to the gradient ``σ_Δ j_i``:
``σ̇_i = −η s_i f(κ) σ_Δ j_i`` with ``f(κ) = κ^{−1/q}`` (q-NGD; 1 for SGD),
``(ε+1)/(ε+κ)`` (damped) or ``(κ+λ)^{−1/q}`` (Levenberg–Marquardt shift λ). Where ``κ = 0`` the
pseudo-inverse convention of the full-matrix rules gives ``f = 0``. A mode is *inactive*
(footnote 3) when every ``j_i`` vanishes — at least two of its ``σ_i`` are zero, e.g. a mode
cut by a bottleneck — and then it is frozen under every rule. (With exactly one zero factor
the mode has ``σ̄ = 0`` but is still active: ``j_i ≠ 0`` for the zero layer.)

**Map dynamics** (§3.2). ``σ̄̇ = Σ_i σ̇_i j_i`` (eq. 19) gives, for q-NGD,
``σ̄̇ = −η σ_Δ ‖j‖^{2(1−1/q)}`` (eq. 20); for balanced weights (``σ_i = σ̄^{1/d}``)
``σ̄̇ = −η̄ (σ̄ − σ̄*) σ̄^p`` (eq. 21) with stiffness ``p = 2(d−1)(q−1)/(dq)`` and depth-calibrated
rate ``η̄ = η d^{1−1/q}``. :func:`map_solution` solves eq. (21) exactly for every p ≥ 0.

**Scaling laws** (S.I.3): ``‖ẇ‖/√L ∝ α^{(d−1)(1−2/q)}``, ``|L̇/L| ∝ α^{(d−1)(2−2/q)}``.

**Mode projection** (§4, Fig. 3D): the network's input–output correlation ``W Σ`` projected on
the singular vectors of the task's ``Σ_yx = W* Σ`` (= ``Y Xᵀ/P`` for a data task).

``q = math.inf`` means SGD throughout.
"""

from curvdyn.theory.map_dynamics import (
    balanced_map_velocity,
    depth_calibrated_rate,
    effective_depth,
    half_max_time,
    map_solution,
    map_time,
    stiffness,
)
from curvdyn.theory.mode_simulation import ModeTrajectory, simulate_modes
from curvdyn.theory.modes import (
    constant_of_motion,
    coupling,
    coupling_norm,
    is_active,
    map_velocity,
    mode_velocity,
)
from curvdyn.theory.projection import aligned_bases, correlation_modes, layer_mode_values, project_modes
from curvdyn.theory.scaling import (
    balanced_update_rates,
    measure_scaling_exponents,
    measure_update_rates,
    scaling_curve,
    scaling_exponents,
)

__all__ = [
    "ModeTrajectory",
    "aligned_bases",
    "balanced_map_velocity",
    "balanced_update_rates",
    "constant_of_motion",
    "correlation_modes",
    "coupling",
    "coupling_norm",
    "depth_calibrated_rate",
    "effective_depth",
    "half_max_time",
    "is_active",
    "layer_mode_values",
    "map_solution",
    "map_time",
    "map_velocity",
    "measure_scaling_exponents",
    "measure_update_rates",
    "mode_velocity",
    "project_modes",
    "scaling_curve",
    "scaling_exponents",
    "simulate_modes",
    "stiffness",
]
