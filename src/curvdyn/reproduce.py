"""Run the paper's experiments and write figures, raw data, claims and the report.

For each experiment (a module following :mod:`curvdyn.experiments.base`) the runner

1. calls ``compute(quick=..., seed=..., progress=...)``;
2. saves ``<out>/<name>/data.npz`` (the raw arrays) and ``<out>/<name>/config.json`` (the
   experiment's configuration plus the package version, seed, quick flag and wall time);
3. reloads both files, and from the reloaded data alone
4. draws ``<out>/<name>/<name>.png`` (and ``.pdf``/``.svg`` if asked) and measures the
   claims, saved as ``<out>/<name>/claims.json``.

Then :mod:`curvdyn.report` writes ``<out>/report.md``, ``<out>/report.html`` and
``<out>/report.json``. Every number in the report is recomputable from the data files:
:func:`recompute_claims` does exactly that.

With ``replot=True`` the first two steps are skipped and the saved files are used as they are
(re-plotting and re-checking someone else's data).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import math
import multiprocessing
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from curvdyn import experiments
from curvdyn._version import __version__
from curvdyn.experiments.base import Claim

FORMATS = ("png", "pdf", "svg")
DATA_FILE = "data.npz"
CONFIG_FILE = "config.json"
CLAIMS_FILE = "claims.json"
PNG_DPI = 130


@dataclasses.dataclass
class ExperimentResult:
    """The outcome of one experiment.

    Attributes:
      name, title: the experiment's ``NAME`` and ``TITLE``.
      claims: the measured claims (empty if the experiment failed before measuring).
      error: the error message (with traceback) when a step raised, else ``None``.
      timings: seconds spent in ``compute`` (from ``config.json``), ``plot`` and ``claims``.
      files: the files written, relative to the output directory.
      meta: the saved ``config.json`` (``None`` if it was never written).
      description: the experiment's own account of its setup and numerics (its optional
        ``describe(config)``), shown in the report.
    """

    name: str
    title: str
    claims: list[Claim]
    error: str | None
    timings: dict
    files: list[str]
    meta: dict | None
    description: str = ""

    @property
    def ok(self) -> bool:
        """No error and no failed claim other than documented deviations from the paper."""
        return self.error is None and not any(c.blocking for c in self.claims)


@dataclasses.dataclass
class Run:
    """A whole reproduction: its results and the run's own settings."""

    results: list[ExperimentResult]
    out: Path
    quick: bool
    seed: int
    formats: tuple[str, ...]
    replot: bool
    wall_time_s: float
    started: str
    command: str

    @property
    def claims(self) -> list[Claim]:
        return [c for r in self.results for c in r.claims]

    @property
    def n_failed(self) -> int:
        """Failed claims (documented deviations excluded) plus experiments that raised."""
        return sum(c.blocking for c in self.claims) + sum(r.error is not None for r in self.results)

    @property
    def ok(self) -> bool:
        return self.n_failed == 0


# ---------------------------------------------------------------------------------------
# data files
# ---------------------------------------------------------------------------------------


def save_data(path: Path, data: dict) -> None:
    """Write an experiment's data dict as one ``.npz`` (plain arrays, no pickles)."""
    if not isinstance(data, dict) or not data:
        raise TypeError("compute() must return a non-empty dict of arrays as its data")
    arrays = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key or key.startswith("__"):
            raise ValueError(f"data keys must be non-empty strings not starting with '__', got {key!r}")
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"data[{key!r}] is not a plain numeric/string array (dtype object)")
        arrays[key] = arr
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def load_data(path: Path) -> dict[str, np.ndarray]:
    """Read a file written by :func:`save_data`."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serializable: {type(obj).__name__}")


def _finite_json(obj):
    """Replace non-finite floats by strings so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    return obj


def write_json(path: Path, obj) -> None:
    """Write strict JSON (non-finite floats as strings), pretty-printed, UTF-8."""
    text = json.dumps(_finite_json(json.loads(json.dumps(obj, default=_json_default))), indent=2, ensure_ascii=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def environment() -> dict:
    """The software and machine a run used (for the record)."""
    import jax
    import matplotlib

    try:
        devices = [str(d) for d in jax.devices()]
    except Exception:  # pragma: no cover - no backend at all
        devices = []
    return {
        "curvdyn": __version__,
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "jax_devices": devices,
        "jax_x64": bool(jax.config.read("jax_enable_x64")),
    }


# ---------------------------------------------------------------------------------------
# one experiment
# ---------------------------------------------------------------------------------------


def claims_from_files(module, exp_dir: Path) -> list[Claim]:
    """Measure an experiment's claims from its saved ``data.npz`` and ``config.json`` alone."""
    data = load_data(exp_dir / DATA_FILE)
    meta = read_json(exp_dir / CONFIG_FILE)
    claims = list(module.claims(data, meta["config"]))
    for c in claims:
        if not isinstance(c, Claim):
            raise TypeError(f"{module.NAME}.claims() must return Claim objects, got {type(c).__name__}")
    return claims


def recompute_claims(out: Path, name: str) -> list[Claim]:
    """The claims of experiment ``name`` recomputed from the files under ``out`` (a check)."""
    return claims_from_files(experiments.get(name), Path(out) / name)


def run_experiment(
    name: str,
    out: Path,
    *,
    quick: bool,
    seed: int,
    formats: Sequence[str] = ("png",),
    progress: bool = False,
    replot: bool = False,
) -> ExperimentResult:
    """Run one registered experiment (see the module docstring); never raises for the
    experiment's own errors — they are recorded in the result."""
    out = Path(out)
    exp_dir = out / name
    files: list[str] = []
    timings: dict = {}
    title, meta, claims, description = name, None, [], ""
    try:
        module = experiments.get(name)
        title = module.TITLE
        exp_dir.mkdir(parents=True, exist_ok=True)
        if not replot:
            start = time.perf_counter()
            data, config = module.compute(quick=quick, seed=seed, progress=progress)
            wall = time.perf_counter() - start
            meta = {
                "experiment": name,
                "title": module.TITLE,
                "curvdyn_version": __version__,
                "seed": int(seed),
                "quick": bool(quick),
                "wall_time_s": round(wall, 3),
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "environment": environment(),
                "config": config,
            }
            save_data(exp_dir / DATA_FILE, data)
            write_json(exp_dir / CONFIG_FILE, meta)
        for fname in (DATA_FILE, CONFIG_FILE):
            if not (exp_dir / fname).is_file():
                raise FileNotFoundError(f"{exp_dir / fname} is missing (run without --replot first)")
            files.append(f"{name}/{fname}")
        # From here on only the files are used.
        data = load_data(exp_dir / DATA_FILE)
        meta = read_json(exp_dir / CONFIG_FILE)
        timings["compute_s"] = meta.get("wall_time_s")
        if hasattr(module, "describe"):
            description = str(module.describe(meta["config"]))

        start = time.perf_counter()
        fig = module.plot(data, meta["config"])  # a matplotlib.figure.Figure: no pyplot state to close
        for fmt in ("png",) + tuple(f for f in formats if f != "png"):
            path = exp_dir / f"{name}.{fmt}"
            fig.savefig(path, dpi=PNG_DPI, bbox_inches="tight", metadata=_figure_metadata(fmt, name, meta))
            files.append(f"{name}/{path.name}")
        timings["plot_s"] = round(time.perf_counter() - start, 3)

        start = time.perf_counter()
        claims = claims_from_files(module, exp_dir)
        timings["claims_s"] = round(time.perf_counter() - start, 3)
        write_json(exp_dir / CLAIMS_FILE, {"experiment": name, "claims": [c.as_dict() for c in claims]})
        files.append(f"{name}/{CLAIMS_FILE}")
        error = None
    except Exception:  # the report records it; the other experiments still run
        error = traceback.format_exc()
    return ExperimentResult(name, title, claims, error, timings, files, meta, description)


def _figure_metadata(fmt: str, name: str, meta: dict) -> dict:
    text = f"curvdyn {__version__} reproduce {name} seed={meta.get('seed')} quick={meta.get('quick')}"
    if fmt == "png":
        return {"Software": "curvdyn " + __version__, "Description": text}
    if fmt == "pdf":
        return {"Creator": "curvdyn " + __version__, "Subject": text}
    return {"Description": text}


# ---------------------------------------------------------------------------------------
# the whole reproduction
# ---------------------------------------------------------------------------------------


# Each worker process computes on one thread: several processes that each start a pool of
# BLAS/XLA threads on a small machine oversubscribe its cores (measured on 2 cores: the
# eigendecomposition-heavy runs became 10–20× slower).
_SINGLE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false"


@contextlib.contextmanager
def _single_threaded_children():
    """Set the environment that spawned workers inherit (this process keeps its own threads)."""
    saved = {k: os.environ.get(k) for k in list(_SINGLE_THREAD_ENV) + ["XLA_FLAGS"]}
    try:
        os.environ.update(_SINGLE_THREAD_ENV)
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " " + _XLA_SINGLE_THREAD).strip()
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker_init() -> None:
    """Initializer of every worker process: a spawned process starts with JAX's default
    configuration (32-bit), so it switches on the float64 mode that :func:`reproduce` requires."""
    import jax

    jax.config.update("jax_enable_x64", True)


def _run_parallel(selected: list[str], out: Path, *, jobs: int, progress: bool, **kwargs) -> list[ExperimentResult]:
    """Run experiments in ``jobs`` fresh processes (spawned: JAX does not survive a fork)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from curvdyn.experiments.common import progress as progress_bar

    results: dict[str, ExperimentResult] = {}
    context = multiprocessing.get_context("spawn")
    with (
        _single_threaded_children(),
        ProcessPoolExecutor(max_workers=min(jobs, len(selected)), mp_context=context, initializer=_worker_init) as pool,
    ):
        futures = {pool.submit(run_experiment, name, out, progress=False, **kwargs): name for name in selected}
        bar = progress_bar(as_completed(futures), enabled=progress, desc="experiments", total=len(futures), leave=True)
        for fut in bar:
            name = futures[fut]
            try:
                results[name] = fut.result()
            except Exception:  # the worker process itself died
                results[name] = ExperimentResult(name, name, [], traceback.format_exc(), {}, [], None)
            if progress and hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(f"{name} done")
    return [results[name] for name in selected]


def check_names(names: Sequence[str] | None) -> list[str]:
    """The experiments to run: all registered ones when ``names`` is empty, in figure order.

    Raises:
      ValueError: an unknown name (the message lists the registered ones).
    """
    registered = experiments.names()
    if not names:
        return list(registered)
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}; available: {', '.join(registered)}")
    wanted = set(names)
    return [n for n in registered if n in wanted]


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """Validate the image formats (PNG is always written: the report embeds it)."""
    formats = tuple(f.strip().lower().lstrip(".") for f in formats if f.strip())
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown image format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    return ("png",) + tuple(dict.fromkeys(f for f in formats if f != "png"))


def default_jobs() -> int:
    """Experiments run in parallel by default: one process per CPU core, at most 2."""
    return max(1, min(2, os.cpu_count() or 1))


def reproduce(
    names: Sequence[str] | None = None,
    *,
    out="results",
    quick: bool = False,
    seed: int = 0,
    formats: Sequence[str] = ("png",),
    progress: bool = False,
    replot: bool = False,
    jobs: int = 1,
    command: str = "",
) -> Run:
    """Run the experiments ``names`` (all when empty), then write the report.

    With ``jobs > 1`` the experiments run in that many separate processes (each experiment
    is independent and writes only its own folder); the results are the same.

    The experiments compute in float64: JAX's 64-bit mode must be on
    (``jax.config.update("jax_enable_x64", True)``; the ``curvdyn`` command does it), and worker
    processes switch it on themselves.

    Returns the :class:`Run`; its ``ok`` is False when a claim failed or an experiment raised.

    Raises:
      curvdyn.Float64DisabledError: JAX's 64-bit mode is off.
    """
    from curvdyn import report
    from curvdyn._precision import require_float64

    require_float64("curvdyn reproduce")
    from curvdyn.experiments.common import progress as progress_bar

    selected = check_names(names)
    formats = check_formats(formats)
    if int(jobs) != jobs or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    kwargs = dict(quick=quick, seed=seed, formats=formats, replot=replot)
    if jobs == 1 or len(selected) == 1:
        results = []
        bar = progress_bar(selected, enabled=progress, desc="experiments", leave=True)
        for name in bar:
            if progress and hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(name)
            results.append(run_experiment(name, out, progress=progress, **kwargs))
    else:
        results = _run_parallel(selected, out, jobs=int(jobs), progress=progress, **kwargs)
    run = Run(
        results=results,
        out=out,
        quick=quick,
        seed=seed,
        formats=formats,
        replot=replot,
        wall_time_s=round(time.perf_counter() - start, 3),
        started=started,
        command=command,
    )
    report.write_report(run)
    return run
