"""Progress display: only on a terminal, so redirected logs get no bars or control codes.

Every progress bar of curvdyn (the experiments' loops, ``reproduce``'s experiment bar, diffrax's
progress meter inside :func:`curvdyn.simulate`) asks :func:`stderr_is_terminal` here first.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def stderr_is_terminal() -> bool:
    """Whether standard error is an interactive terminal (False when redirected or closed)."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def progress_bar(iterable: Iterable[T], *, enabled: bool, desc: str, total: int | None = None, leave: bool = False):
    """A tqdm bar over ``iterable`` on standard error when ``enabled`` and it is a terminal, else
    the plain iterable (nothing printed)."""
    if not (enabled and stderr_is_terminal()):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=leave, file=sys.stderr, dynamic_ncols=True)
