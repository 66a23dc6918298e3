"""Tasks: a target map ``W*`` and an input covariance ``Σ``; from data; student–teacher.

The loss of a task is ``L = ½ tr(Δ Σ Δᵀ)`` with ``Δ = W − W*`` (paper eq. 1). A task built
from samples ``X (n_0 × P)``, ``Y (n_d × P)`` has ``Σ = X Xᵀ / P`` and
``W* = Y Xᵀ Σ⁺ / P``; its loss differs from the data loss ``(1/2P) Σ_μ ‖W x^μ − y^μ‖²`` by the
constant ``loss_offset = ½ tr(Y Yᵀ)/P − ½ tr(W* Σ W*ᵀ)``, which the task stores.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from curvdyn._precision import resolve_dtype
from curvdyn._validate import check_count, check_positive, check_real
from curvdyn.init import haar_orthogonal

# Relative tolerances for accepting a user's covariance: asymmetry and negative eigenvalues
# beyond round-off are errors, not something to silently symmetrize or clip.
_SYMMETRY_RTOL = 1e-10
_PSD_RTOL = 1e-10


def _finite_matrix(x, name: str) -> np.ndarray:
    arr = np.asarray(check_real(x, name), dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite entries (NaN or inf)")
    return arr


def _finite_scalar(value, name: str) -> float:
    value = check_real(value, name)
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root ``S = Σ^{1/2}`` of a PSD matrix.

    Eigenvalues at or below the eigensolver's round-off level (``n · eps · λ_max``) are set to
    zero: they are not resolved, and their square roots (``~√eps``) would put spurious singular
    values into ``Ĵ = (I ⊗ S) J`` that the exactness diagnostics would rightly flag.
    """
    evals, evecs = np.linalg.eigh(cov)
    floor = cov.shape[0] * np.finfo(np.float64).eps * max(float(evals[-1]), 0.0)
    return (evecs * np.sqrt(np.where(evals > floor, evals, 0.0))) @ evecs.T


@jax.tree_util.register_pytree_node_class
class Task:
    """A regression task: target map ``W*`` (n_d × n_0) and input covariance ``Σ`` (n_0 × n_0).

    Attributes:
      target: ``W*``, shape ``(n_d, n_0)``.
      input_cov: ``Σ``, shape ``(n_0, n_0)``, symmetric PSD (identity when omitted).
      sqrt_cov: ``S = Σ^{1/2}``, the symmetric square root used by the map-space identity.
      identity_cov: whether ``Σ = I`` exactly (enables cheaper paths).
      loss_offset: constant by which the data loss exceeds ``L`` (0 unless built from data).

    The arrays have dtype ``dtype``; ``None`` follows the inputs: float32 arrays give a float32
    task, anything else (float64 arrays, lists, Python numbers) float64, which needs JAX's 64-bit
    mode (see :mod:`curvdyn`). The checks and ``Σ^{1/2}`` are computed in float64 (NumPy) either way.

    Raises:
      TypeError: ``target`` or ``input_cov`` is complex or not numeric.
      ValueError: shapes do not match, entries are not finite, ``Σ`` is not symmetric PSD, or
        ``dtype`` is not a floating type.
      curvdyn.Float64DisabledError: a float64 task while 64-bit mode is off.
    """

    def __init__(self, target, input_cov=None, *, loss_offset: float = 0.0, dtype=None):
        dtype = resolve_dtype(target, input_cov, dtype=dtype, what="Task")
        target = _finite_matrix(target, "target")
        _n_out, n_in = target.shape
        if input_cov is None:
            cov = np.eye(n_in)
            identity = True
        else:
            cov = _finite_matrix(input_cov, "input_cov")
            if cov.shape != (n_in, n_in):
                raise ValueError(
                    f"input_cov must have shape (n_0, n_0) = ({n_in}, {n_in}) to match target "
                    f"of shape {target.shape}, got {cov.shape}"
                )
            scale = max(float(np.max(np.abs(cov))), np.finfo(float).tiny)
            asym = float(np.max(np.abs(cov - cov.T)))
            if asym > _SYMMETRY_RTOL * scale:
                raise ValueError(
                    f"input_cov is not symmetric (max |Σ − Σᵀ| = {asym:.3g}); "
                    "an input covariance must be symmetric positive semi-definite"
                )
            cov = 0.5 * (cov + cov.T)
            min_eig = float(np.linalg.eigvalsh(cov)[0])
            if min_eig < -_PSD_RTOL * scale:
                raise ValueError(
                    f"input_cov is not positive semi-definite (smallest eigenvalue {min_eig:.3g}); "
                    "an input covariance must be symmetric positive semi-definite"
                )
            identity = bool(np.array_equal(cov, np.eye(n_in)))
        loss_offset = _finite_scalar(loss_offset, "loss_offset")
        self.target = jnp.asarray(target, dtype=dtype)
        self.input_cov = jnp.asarray(cov, dtype=dtype)
        self.sqrt_cov = jnp.asarray(np.eye(n_in) if identity else psd_sqrt(cov), dtype=dtype)
        self.identity_cov = identity
        self.loss_offset = float(loss_offset)

    # -- pytree protocol: arrays and the offset are leaves (so tasks of one shape share compiled
    # code); only the identity flag, which selects code paths, is static ---------------------
    def tree_flatten(self):
        return (self.target, self.input_cov, self.sqrt_cov, self.loss_offset), (self.identity_cov,)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.target, obj.input_cov, obj.sqrt_cov, obj.loss_offset = children
        (obj.identity_cov,) = aux
        return obj

    @property
    def output_dim(self) -> int:
        """``n_d``."""
        return int(self.target.shape[0])

    @property
    def input_dim(self) -> int:
        """``n_0``."""
        return int(self.target.shape[1])

    def __repr__(self) -> str:
        cov = "I" if self.identity_cov else "Σ"
        return f"Task(target={self.output_dim}x{self.input_dim}, input_cov={cov}, loss_offset={self.loss_offset:.6g})"

    @classmethod
    def from_data(cls, x, y, *, dtype=None) -> Task:
        """Build a task from samples: ``x`` of shape ``(n_0, P)``, ``y`` of shape ``(n_d, P)``.

        ``Σ = X Xᵀ/P``, ``W* = Y Xᵀ Σ⁺/P``; ``loss_offset = ½ tr(YYᵀ)/P − ½ tr(W* Σ W*ᵀ)``, so
        that ``loss(ws, task) + task.loss_offset`` equals the data loss
        ``(1/2P) Σ_μ ‖W x^μ − y^μ‖²`` exactly. The statistics are computed in float64 (NumPy);
        the task's dtype follows ``dtype`` or the samples, as in :class:`Task`.
        """
        dtype = resolve_dtype(x, y, dtype=dtype, what="Task.from_data")
        x = _finite_matrix(x, "x")
        y = _finite_matrix(y, "y")
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"x and y must have the same number of samples (columns): {x.shape[1]} vs {y.shape[1]}")
        p = x.shape[1]
        if p == 0:
            raise ValueError("x and y hold no samples")
        cov = x @ x.T / p
        cov = 0.5 * (cov + cov.T)
        corr_yx = y @ x.T / p
        target = corr_yx @ np.linalg.pinv(cov, hermitian=True)
        offset = 0.5 * np.sum(y * y) / p - 0.5 * np.trace(target @ cov @ target.T)
        return cls(target, cov, loss_offset=float(offset), dtype=dtype)


@dataclasses.dataclass(frozen=True)
class StudentTeacher:
    """A student–teacher data set (paper section 4; Lampinen & Ganguli 2018).

    ``y = W_teacher x + z`` with ``z ~ N(0, noise_std² I)``.

    Attributes:
      teacher: ``W_teacher``, shape ``(n_out, n_in)``, rank ``rank``.
      x_train, y_train: training samples, shapes ``(n_in, P)``, ``(n_out, P)``.
      train_task: ``Task.from_data(x_train, y_train)`` — the loss the student minimizes.
      test_task: the exact expected test loss: ``Task(W_teacher, I)`` with
        ``loss_offset = ½ n_out noise_std²``, i.e. ``E[½‖W x − y‖²]`` for fresh
        ``x ~ N(0, I)`` equals ``loss(ws, test_task) + test_task.loss_offset``.
      x_test, y_test: fresh test samples (``n_test`` of them; empty when ``n_test = 0``).
      noise_std, snr: the noise level and the signal-to-noise ratio (see ``student_teacher``).
    """

    teacher: jax.Array
    x_train: jax.Array
    y_train: jax.Array
    train_task: Task
    test_task: Task
    x_test: jax.Array
    y_test: jax.Array
    noise_std: float
    snr: float


def student_teacher(
    key: jax.Array,
    n_in: int,
    n_out: int | None = None,
    *,
    rank: int = 3,
    snr: float = 10.0,
    n_train: int | None = None,
    n_test: int = 0,
    noise_std: float = 1.0,
    teacher_profile=None,
    whiten: bool = True,
    dtype=None,
) -> StudentTeacher:
    """Generate a low-rank teacher and noisy samples (paper section 4).

    SNR convention: the teacher's nonzero singular values are ``snr · noise_std · profile``
    with ``profile`` (default all ones, length ``rank``) scaling the modes; the inputs have
    unit variance per coordinate, so each teacher mode's output amplitude is ``snr`` times
    the noise standard deviation of one output coordinate. (This is the per-mode SNR of
    Lampinen & Ganguli 2018: mode strength over noise standard deviation.) The teacher's
    singular vectors are Haar-random.

    Inputs ``x ~ N(0, I)``; when ``whiten`` and ``n_train ≥ n_in`` the training inputs are
    exactly whitened (``X Xᵀ / P = I``), as in the paper.

    Args:
      key: a ``jax.random`` key; the data set is a deterministic function of it.
      n_in, n_out: input and output dimension (``n_out`` defaults to ``n_in``).
      rank: teacher rank (≤ min(n_in, n_out)).
      snr: signal-to-noise ratio as defined above (> 0).
      n_train: number of training samples ``P`` (default ``n_in``, as in the paper).
      n_test: number of fresh test samples to draw (the exact expected test loss is always
        available as ``test_task``).
      noise_std: noise standard deviation per output coordinate (> 0).
      teacher_profile: optional length-``rank`` positive relative mode strengths.
      whiten: exactly whiten the training inputs when ``n_train ≥ n_in``.
      dtype: dtype of the draws and of every array (``None``: float64, which needs JAX's 64-bit
        mode; ``jnp.float32`` draws float32 numbers, a different data set for the same key).
    """
    dtype = resolve_dtype(dtype=dtype, what="student_teacher")
    n_in = check_count(n_in, "n_in")
    n_out = n_in if n_out is None else check_count(n_out, "n_out")
    n_train = n_in if n_train is None else check_count(n_train, "n_train")
    rank = check_count(rank, "rank")
    n_test = check_count(n_test, "n_test", minimum=0)
    if rank > min(n_in, n_out):
        raise ValueError(f"rank {rank} exceeds min(n_in, n_out) = {min(n_in, n_out)}")
    snr = check_positive(snr, "snr")
    noise_std = check_positive(noise_std, "noise_std")
    if teacher_profile is None:
        profile = np.ones(rank)
    else:
        profile = np.asarray(check_real(teacher_profile, "teacher_profile"), dtype=np.float64)
    if profile.shape != (rank,) or not np.all(np.isfinite(profile)) or np.any(profile <= 0):
        raise ValueError(f"teacher_profile must hold {rank} positive numbers, got {profile}")

    k_u, k_v, k_x, k_z, k_xt, k_zt = jax.random.split(key, 6)

    def normal(k, shape) -> np.ndarray:  # drawn in dtype, then computed with in float64
        return np.asarray(jax.random.normal(k, shape, dtype=dtype), dtype=np.float64)

    u = haar_orthogonal(k_u, n_out, rank, dtype=dtype)
    v = haar_orthogonal(k_v, n_in, rank, dtype=dtype)
    teacher = (u * (snr * noise_std * profile)) @ v.T

    x = normal(k_x, (n_in, n_train))
    if whiten and n_train >= n_in:
        cov = x @ x.T / n_train
        evals, evecs = np.linalg.eigh(cov)
        x = (evecs / np.sqrt(evals)) @ evecs.T @ x
    z = noise_std * normal(k_z, (n_out, n_train))
    y = teacher @ x + z

    x_test = normal(k_xt, (n_in, n_test))
    y_test = teacher @ x_test + noise_std * normal(k_zt, (n_out, n_test))

    return StudentTeacher(
        teacher=jnp.asarray(teacher, dtype=dtype),
        x_train=jnp.asarray(x, dtype=dtype),
        y_train=jnp.asarray(y, dtype=dtype),
        train_task=Task.from_data(x, y, dtype=dtype),
        test_task=Task(teacher, None, loss_offset=0.5 * n_out * noise_std**2, dtype=dtype),
        x_test=jnp.asarray(x_test, dtype=dtype),
        y_test=jnp.asarray(y_test, dtype=dtype),
        noise_std=float(noise_std),
        snr=float(snr),
    )
