"""Worker processes that live and die with their parent, and leave Ctrl-C to it.

``curvdyn reproduce --jobs N`` runs experiments in spawned processes. Three rules:

* A worker dies with its parent, however the parent dies (SIGKILL included): on Linux the
  kernel sends it SIGKILL when the parent goes (``prctl(PR_SET_PDEATHSIG)``); and everywhere a
  watchdog thread polls ``os.getppid()`` and ends the worker once it changes. Both, because
  the death signal follows the *thread* that spawned the worker, not the process, and exists
  on Linux only.
* Workers never see Ctrl-C: the parent blocks SIGINT while it spawns them (the blocked mask
  is inherited, so no KeyboardInterrupt can hit a worker while it starts) and the worker then
  ignores it. The parent alone handles SIGINT and terminates them.
* The parent waits for its workers in short slices (:func:`as_completed`), so that a Ctrl-C
  is acted on at once even when the kernel hands SIGINT to one of XLA's threads rather than
  the main thread (Python runs signal handlers in the main thread only, and an untimed wait
  there is woken only by a signal delivered to that thread).
* A worker computes with its parent's JAX settings (:data:`curvdyn.io.JAX_SETTINGS`:
  ``jax_enable_x64`` and the PRNG settings), which spawned processes do not inherit.
* The workers of one pool can share one on-disk XLA compilation cache
  (:func:`share_compilations`): every worker meets the same programs (each experiment's first
  seed in each worker), and with the cache only the first to meet one compiles it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

#: Seconds between the watchdog's checks of the parent.
WATCHDOG_PERIOD_S = 0.2
#: Longest wait of the parent's main thread before it looks at pending signals again.
WAIT_SLICE_S = 0.2
_PR_SET_PDEATHSIG = 1
#: JAX's option of the persistent compilation cache's directory (read by name: JAX's typed
#: config does not declare it as an attribute).
_CACHE_DIR_OPTION = "jax_compilation_cache_dir"


def _set_parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent (thread) exits; False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # the parent is gone: stop at once, write nothing more
        time.sleep(WATCHDOG_PERIOD_S)


def start_worker(parent_pid: int, jax_settings: dict[str, Any], compilation_cache_dir: str | None = None) -> None:
    """The initializer of every worker process (see the module docstring).

    Args:
      parent_pid: the process the worker lives and dies with.
      jax_settings: JAX options to set first (name → value).
      compilation_cache_dir: a directory the pool's workers share as their XLA compilation
        cache (:func:`share_compilations`); ``None``: none.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="curvdyn-parent-watchdog", daemon=True).start()
    import jax

    for name, value in jax_settings.items():
        jax.config.update(name, value)
    if compilation_cache_dir is not None and not getattr(jax.config, _CACHE_DIR_OPTION):
        share_compilations(compilation_cache_dir)


def share_compilations(directory: str) -> None:
    """Keep this process's XLA compilations in ``directory`` and load those found there.

    JAX's persistent compilation cache: a program another process compiled is loaded instead of
    compiled again. The loaded executable is the one the other process compiled, so results are
    bit-identical to compiling it here. Every program is kept (no minimum compile time or
    size): the many small op-by-op programs of eager code add up as well. Call it before this
    process compiles anything; a cache directory the user configured (``JAX_COMPILATION_CACHE_DIR``)
    is left in place by :func:`start_worker`.
    """
    import jax

    jax.config.update(_CACHE_DIR_OPTION, directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@contextlib.contextmanager
def sigint_blocked():
    """Block SIGINT in the calling thread (a Ctrl-C meanwhile is delivered when the block ends).

    Processes started inside inherit the blocked mask. A no-op where signal masks do not exist.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def stop_signals_ignored():
    """Ignore SIGINT and SIGTERM while the block runs (a clean-up that a second Ctrl-C must not
    cut short); main thread only, elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def terminate(pool, timeout_s: float = 5.0) -> None:
    """Stop a ``ProcessPoolExecutor`` now: cancel what has not started, terminate the workers.

    Before Python 3.14 (``terminate_workers``) the executor has no public way to stop running
    workers; its ``_processes`` mapping is the documented-by-use way to reach them.
    """
    procs = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    deadline = time.monotonic() + timeout_s
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)


def as_completed(futures: Iterable[Future], slice_s: float = WAIT_SLICE_S) -> Iterator[Future]:
    """The futures as they finish, like :func:`concurrent.futures.as_completed`, waiting at most
    ``slice_s`` at a time so that the main thread runs a pending Ctrl-C handler within that time.

    A process-directed SIGINT goes to any thread that does not block it; XLA's thread pools do
    not. The Python handler only sets a flag then, and the main thread, blocked in an untimed
    wait, would act on it only when the next future finishes (measured: 25 s late, with a
    figure that took 25 s).
    """
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=slice_s, return_when=FIRST_COMPLETED)
        yield from done
