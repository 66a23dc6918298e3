"""Writing and reading curvdyn's result files: each written whole or not at all, each saying
which run made it.

**Atomic writes.** Every file curvdyn writes goes through :func:`atomic_write`: the bytes go to
a temporary file in the target's own directory (``.NAME.<random>.curvdyn-tmp``), which is
flushed and fsynced and then moved over the target with ``os.replace`` (atomic within one
file system); the directory is fsynced too where the platform allows, so the rename itself
survives a crash. On any error the temporary file is removed and the old file is untouched. A
process killed at any moment — SIGKILL included — leaves the old complete file or the new
complete file, never a mixture; at worst a stray ``*.curvdyn-tmp`` file, which nothing reads
(``curvdyn reproduce`` removes its own leftovers in its output directory).

**The run record.** :func:`run_record` builds the one description of a run that every result
file carries: a run id, the seeds, the resolution, the versions of curvdyn and its numeric
dependencies, the platform, and the JAX settings that change random draws or numerics
(:data:`JAX_SETTINGS`). ``.npz`` files hold it as the JSON string entry ``__run__``
(:func:`save_npz` / :func:`load_npz`); JSON files under the key ``"run"``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import importlib.metadata
import json
import math
import os
import platform
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from curvdyn._version import __version__

#: Suffix of the temporary files of :func:`atomic_write` (never read; safe to delete).
TMP_SUFFIX = ".curvdyn-tmp"
#: The entry of a curvdyn ``.npz`` file that holds its run record (a JSON string).
RECORD_KEY = "__run__"
#: Version of the run record's layout (bumped when a field changes meaning).
RECORD_FORMAT = "curvdyn-run/1"
#: The JAX settings that change random draws (``prng_impl``, ``threefry_partitionable``) or
#: numerics (``enable_x64``); recorded in every run record and carried into worker processes.
JAX_SETTINGS = ("jax_default_prng_impl", "jax_threefry_partitionable", "jax_enable_x64")
#: The distributions whose versions a run record lists (besides curvdyn and Python).
VERSIONED = ("jax", "jaxlib", "diffrax", "optax", "numpy", "scipy", "matplotlib")
RESOLUTIONS = ("quick", "default")
_RECORD_KEYS = ("format", "run_id", "seeds", "resolution", "created", "versions", "platform", "jax_config")


class RecordError(ValueError):
    """A result file has no run record, or one that is not valid."""


# ---------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------


@functools.cache
def _file_mode() -> int:
    """The permissions a plainly created file gets (0o666 minus the umask).

    ``mkstemp`` creates its file 0o600; the result should look like any other file the user
    writes. Linux reports the umask in /proc; elsewhere it is read by setting it back at once.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX); silently skipped where not possible."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", *, encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on success move it over ``path``.

    ``with atomic_write(p, "w", encoding="utf-8") as fh: fh.write(text)``. The file appears at
    ``path`` only when the ``with`` block ends without an exception, flushed and fsynced; on
    any exception (``KeyboardInterrupt`` included) the temporary file is removed and ``path``
    keeps its old content (or stays absent).

    Args:
      path: the target file; its directory must exist.
      mode: ``"wb"`` (bytes) or ``"w"`` (text).
      encoding: text encoding (text mode only; default UTF-8).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    directory = path.parent
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a file")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with contextlib.suppress(OSError):  # e.g. file systems without permissions
            os.fchmod(fd, _file_mode())
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=encoding or "utf-8", newline="") if text else os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def remove_leftovers(directory) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_write` left in ``directory``.

    Only for a directory no other process is writing into (``curvdyn reproduce`` calls it
    under its output-directory lock). Returns the removed paths.
    """
    removed = []
    for p in Path(directory).glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


# ---------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serializable: {type(obj).__name__}")


def _finite_json(obj):
    """Replace non-finite floats by strings so the text is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_json(v) for v in obj]
    return obj


def json_text(obj, *, indent: int | None = 2, strict: bool = True) -> str:
    """JSON text, UTF-8 characters kept.

    ``strict`` (for ``.json`` files other programs read): non-finite floats become the strings
    ``"nan"``, ``"inf"``, ``"-inf"``. Not strict (for curvdyn's own entries in ``.npz`` files):
    Python's ``NaN``/``Infinity`` literals, which ``json.loads`` reads back as floats, so a
    configuration such as SGD's ``q = inf`` survives the round trip unchanged.
    """
    if not strict:
        return json.dumps(obj, default=_json_default, indent=indent, ensure_ascii=False)
    plain = json.loads(json.dumps(obj, default=_json_default))
    return json.dumps(_finite_json(plain), indent=indent, ensure_ascii=False, allow_nan=False)


def write_json(path, obj) -> None:
    """Write ``obj`` as pretty-printed strict JSON (see :func:`json_text`), atomically."""
    write_text(path, json_text(obj) + "\n")


def read_json(path):
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------


def save_figure(fig, path, *, format: str | None = None, **savefig_kwargs) -> None:
    """``fig.savefig`` into a file handle of :func:`atomic_write` (format from the suffix if not given).

    Matplotlib cannot infer the format from a handle, hence the explicit one.
    """
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".")).lower()
    if not fmt:
        raise ValueError(f"cannot tell the image format of {path}: give format= or a suffix")
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format=fmt, **savefig_kwargs)


# ---------------------------------------------------------------------------------------
# the run record
# ---------------------------------------------------------------------------------------


def new_run_id() -> str:
    """A fresh run id: UTC time of creation and 8 random hex digits, e.g. ``20250101T120000Z-3f9a2c1b``."""
    now = _dt.datetime.now(_dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


@functools.cache
def versions() -> dict[str, str | None]:
    """The versions of curvdyn, Python and :data:`VERSIONED` (``None`` for one not installed)."""
    out: dict[str, str | None] = {"curvdyn": __version__, "python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def jax_settings() -> dict[str, Any]:
    """The current values of :data:`JAX_SETTINGS` in this process."""
    import jax

    return {name: getattr(jax.config, name) for name in JAX_SETTINGS}


def run_record(*, seeds, resolution: str | None, run_id: str | None = None, created: str | None = None) -> dict:
    """The record of one run, carried by every file the run writes.

    Args:
      seeds: the seed or seeds the run's results come from (stored as a list of ints, so that
        one figure can hold several seeds).
      resolution: ``"quick"``, ``"default"``, or ``None`` where it does not apply (a single
        simulation).
      run_id: the run's id (default: a fresh :func:`new_run_id`).
      created: ISO time the run started (default: now, UTC).

    Returns:
      ``{"format", "run_id", "seeds", "resolution", "created", "versions", "platform",
      "jax_backend", "jax_config"}``; ``versions`` holds curvdyn, python and :data:`VERSIONED`,
      ``jax_config`` the values of :data:`JAX_SETTINGS`.
    """
    import jax

    if seeds is None:
        seeds = []
    elif isinstance(seeds, int | np.integer):
        seeds = [seeds]
    seeds = [_as_seed(s) for s in seeds]
    if resolution is not None and resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS} or None, got {resolution!r}")
    return {
        "format": RECORD_FORMAT,
        "run_id": run_id or new_run_id(),
        "seeds": seeds,
        "resolution": resolution,
        "created": created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": dict(versions()),
        "platform": platform.platform(),
        "jax_backend": jax.default_backend(),
        "jax_config": jax_settings(),
    }


def _as_seed(s) -> int:
    if isinstance(s, bool) or int(s) != s or s < 0:
        raise ValueError(f"seeds must be non-negative integers, got {s!r}")
    return int(s)


def check_record(record, where: str = "the file") -> dict:
    """``record`` if it is a valid run record, else :class:`RecordError` naming ``where``."""
    if not isinstance(record, dict):
        raise RecordError(f"{where} has no run record")
    missing = [k for k in _RECORD_KEYS if k not in record]
    if missing:
        raise RecordError(f"{where} has an incomplete run record (missing {', '.join(missing)})")
    if not isinstance(record["seeds"], list) or not isinstance(record["run_id"], str) or not record["run_id"]:
        raise RecordError(f"{where} has an invalid run record (run_id {record['run_id']!r}, seeds {record['seeds']!r})")
    return record


def seeds_text(record: Mapping | None) -> str:
    """The seeds of a record as the report prints them (``"0"``, ``"0, 1, 2"``, ``"?"``)."""
    if not record or not record.get("seeds"):
        return "?"
    return ", ".join(str(s) for s in record["seeds"])


# ---------------------------------------------------------------------------------------
# .npz files with a record
# ---------------------------------------------------------------------------------------


def save_npz(path, arrays: Mapping[str, Any], *, record: dict | None, compress: bool = True, **json_entries) -> None:
    """Write ``arrays`` (plain arrays, no pickles) and the run record as one ``.npz``, atomically.

    Args:
      path: the file (written exactly there; no suffix is added).
      arrays: name → array; names must not start with ``"__"`` (reserved for curvdyn's entries).
      record: the run record (:func:`run_record`), stored as the JSON string ``__run__``;
        ``None`` writes none.
      compress: ``np.savez_compressed`` (default) or ``np.savez``.
      json_entries: further JSON documents, each stored as a string entry ``__<name>__``
        (non-finite floats kept as such: see :func:`json_text`).
    """
    entries: dict[str, Any] = {}
    for key, value in arrays.items():
        if not isinstance(key, str) or not key or key.startswith("__"):
            raise ValueError(f"array names must be non-empty strings not starting with '__', got {key!r}")
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"{key!r} is not a plain numeric/string array (dtype object)")
        entries[key] = arr
    if record is not None:
        entries[RECORD_KEY] = np.array(json_text(check_record(record), indent=None, strict=False))
    for name, doc in json_entries.items():
        entries[f"__{name}__"] = np.array(json_text(doc, indent=None, strict=False))
    writer = np.savez_compressed if compress else np.savez
    with atomic_write(path, "wb") as fh:
        writer(fh, **entries)


def load_npz(path, *, require_record: bool = True) -> tuple[dict[str, np.ndarray], dict | None, dict]:
    """Read a file written by :func:`save_npz`.

    Returns:
      ``(arrays, record, json_entries)``: the arrays without curvdyn's entries, the run record
      (checked; ``None`` only when absent and ``require_record=False``), and the other JSON
      entries by name (``__metadata__`` → ``"metadata"``).

    Raises:
      FileNotFoundError: no such file.
      ValueError: not a readable ``.npz`` file; :class:`RecordError` when the record is
        missing (and required) or invalid.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            contents = {k: f[k] for k in f.files}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # zipfile.BadZipFile, zlib.error, EOFError, ValueError: a damaged file
        raise ValueError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})") from exc
    arrays = {k: v for k, v in contents.items() if not k.startswith("__")}
    docs = {}
    for key in contents:
        if key.startswith("__") and key.endswith("__") and key != RECORD_KEY:
            docs[key[2:-2]] = _json_entry(contents[key], path, key)
    record = None
    if RECORD_KEY in contents:
        record = check_record(_json_entry(contents[RECORD_KEY], path, RECORD_KEY), str(path))
    elif require_record:
        raise RecordError(
            f"{path} has no run record ({RECORD_KEY}): it was not written by this version of curvdyn; re-run to make it"
        )
    return arrays, record, docs


def _json_entry(value: np.ndarray, path: Path, key: str):
    try:
        return json.loads(str(value))
    except ValueError as exc:
        raise ValueError(f"{path}: entry {key} is not valid JSON ({exc})") from exc
