"""The state of a ``curvdyn reproduce`` output directory: its lock and its manifest.

**Lock** (``OUT/curvdyn.lock``). One run writes into a directory at a time. :class:`DirectoryLock`
holds an exclusive ``flock`` on the lock file for the whole run (the kernel drops it when the
process dies, however it dies) and writes into the file who holds it: pid, host, start time,
command, run id. A second run is refused with :class:`DirectoryBusy` naming the holder. A lock
file whose ``flock`` is free was left by a process that is gone: it is taken over with a
notice (logged as a warning on the ``curvdyn`` logger). Where the file system has no
``flock``, a lock file is held when its pid is alive on this host.

**Manifest** (``OUT/manifest.json``, written atomically after every change). It says whether
the directory is one complete run::

    {"format": "curvdyn-manifest/1",
     "status": "in-progress" | "complete" | "interrupted" | "failed",
     "run": {...the run record of the last run (curvdyn.io.run_record)...},
     "command": "...", "pid": ..., "host": "...", "started": "...", "ended": "..." | null,
     "planned": ["fig1", ...],                       # the figures the last run set out to write
     "figures": {"fig1": {"status": ..., "run_id": ..., "seeds": [...], "resolution": ...}, ...}}

``status`` is ``in-progress`` while a run works (and stays so if the run is killed: then no
process holds the lock), ``complete`` when every planned figure was written, ``failed`` when
an experiment raised, ``interrupted`` after Ctrl-C or SIGTERM. Each figure's entry has the
same vocabulary: ``in-progress`` means the last run was (re)writing its files, so what is on
disk may be older or partly rewritten; only ``complete`` entries are whole results of the run
named by their ``run_id``. Figures the last run did not plan keep the entries of the runs that
wrote them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import json
import logging
import os
import socket
from pathlib import Path

from curvdyn import io

LOCK_FILE = "curvdyn.lock"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "curvdyn-manifest/1"
STATUSES = ("in-progress", "complete", "interrupted", "failed")

_log = logging.getLogger("curvdyn")


class DirectoryBusy(RuntimeError):
    """Another live process holds the output directory's lock."""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def holder_text(info: dict | None) -> str:
    """``pid 123 on host h, started <time>, command `...``` for a lock's content."""
    if not info:
        return "an unidentified process (the lock file is empty or unreadable)"
    text = f"pid {info.get('pid')} on host {info.get('host')}, started {info.get('started')}"
    if info.get("command"):
        text += f", command `{info['command']}`"
    return text


class DirectoryLock:
    """An exclusive lock on an output directory, held from :meth:`acquire` to :meth:`release`.

    Use as ``with DirectoryLock(out, command=..., run_id=...):``. Raises
    :class:`DirectoryBusy` when another live process holds it.
    """

    def __init__(self, directory, *, command: str = "", run_id: str = ""):
        self.path = Path(directory) / LOCK_FILE
        self.info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _now(),
            "command": command,
            "run_id": run_id,
        }
        self._fd: int | None = None
        self.took_over: dict | None = None

    # -- reading the holder ------------------------------------------------------------------

    def read_holder(self) -> dict | None:
        """The content of the lock file (``None`` if absent, empty or unreadable)."""
        for _ in range(3):  # the holder rewrites it in place once, right after locking
            try:
                text = self.path.read_text(encoding="utf-8")
            except OSError:
                return None
            try:
                return json.loads(text) if text.strip() else None
            except ValueError:
                continue
        return None

    # -- acquire / release -------------------------------------------------------------------

    def acquire(self) -> DirectoryLock:
        try:
            import fcntl
        except ImportError:  # not POSIX
            return self._acquire_without_flock()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise DirectoryBusy(self._busy_message(self.read_holder())) from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    os.close(fd)
                    raise
                os.close(fd)
                return self._acquire_without_flock()
            # The previous holder may have unlinked the file between our open and flock.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        previous = self.read_holder()
        if previous and previous.get("pid") != self.info["pid"]:
            self.took_over = previous
            _log.warning(
                "curvdyn: taking over the stale lock %s of %s, which is no longer running",
                self.path,
                holder_text(previous),
            )
        data = (json.dumps(self.info) + "\n").encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
        return self

    def _acquire_without_flock(self) -> DirectoryLock:
        """For file systems without flock: the lock is held while its pid lives on this host."""
        previous = self.read_holder()
        if previous:
            here = previous.get("host") == self.info["host"]
            if not here or pid_alive(int(previous.get("pid", -1))):
                raise DirectoryBusy(self._busy_message(previous))
            self.took_over = previous
            _log.warning(
                "curvdyn: taking over the stale lock %s of %s, which is no longer running",
                self.path,
                holder_text(previous),
            )
        io.write_json(self.path, self.info)
        return self

    def _busy_message(self, holder: dict | None) -> str:
        return (
            f"{self.path.parent} is being written by another curvdyn run ({holder_text(holder)}); "
            "wait for it to end or choose another --out"
        )

    def release(self) -> None:
        if self._fd is None:
            if self.read_holder() == self.info:  # the no-flock variant
                with contextlib.suppress(OSError):
                    self.path.unlink()
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still locked: a waiting process then re-checks the inode
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------------------------------
# the manifest
# ---------------------------------------------------------------------------------------


def read_manifest(directory) -> dict | None:
    """The manifest of ``directory`` (``None`` if it has none).

    Raises:
      ValueError: the manifest exists but is not a readable curvdyn manifest.
    """
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        doc = io.read_json(path)
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or doc.get("status") not in STATUSES:
        raise ValueError(f"{path} is not a curvdyn manifest ({MANIFEST_FORMAT})")
    return doc


def figure_entry(status: str, record: dict | None) -> dict:
    """A manifest entry for one figure: its status and the run (id, seeds, resolution) of its files."""
    record = record or {}
    return {
        "status": status,
        "run_id": record.get("run_id"),
        "seeds": record.get("seeds"),
        "resolution": record.get("resolution"),
    }


@dataclasses.dataclass
class Manifest:
    """The manifest of one run into a directory, rewritten (atomically) on every change."""

    directory: Path
    doc: dict

    @classmethod
    def begin(cls, directory, *, record: dict, planned: list[str], command: str) -> Manifest:
        """Mark ``directory`` in progress for the run ``record``, its ``planned`` figures in progress.

        Entries of other figures are carried over from the previous manifest, if any.
        """
        directory = Path(directory)
        try:
            previous = read_manifest(directory)
        except ValueError:
            previous = None
        figures = dict(previous["figures"]) if previous and isinstance(previous.get("figures"), dict) else {}
        for name in planned:
            figures[name] = figure_entry("in-progress", record)
        doc = {
            "format": MANIFEST_FORMAT,
            "status": "in-progress",
            "run": record,
            "command": command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": record.get("created") or _now(),
            "ended": None,
            "planned": list(planned),
            "figures": figures,
        }
        manifest = cls(directory, doc)
        manifest.write()
        return manifest

    @property
    def path(self) -> Path:
        return self.directory / MANIFEST_FILE

    def write(self) -> None:
        io.write_json(self.path, self.doc)

    def figure(self, name: str, status: str, record: dict | None) -> None:
        """Record that figure ``name`` ended with ``status`` (``complete`` or ``failed``)."""
        if status not in STATUSES:
            raise ValueError(f"figure status must be one of {STATUSES}, got {status!r}")
        self.doc["figures"][name] = figure_entry(status, record)
        self.write()

    def finish(self, status: str) -> None:
        """End the run: the directory's ``status``; figures still in progress become ``interrupted``
        (or ``failed`` when the run failed)."""
        if status not in STATUSES or status == "in-progress":
            raise ValueError(f"a run ends complete, interrupted or failed, not {status!r}")
        left = "interrupted" if status == "interrupted" else "failed"
        for name in self.doc["planned"]:
            entry = self.doc["figures"].get(name)
            if entry and entry["status"] == "in-progress":
                entry["status"] = left
        self.doc["status"] = status
        self.doc["ended"] = _now()
        self.write()
