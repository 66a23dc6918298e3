"""The protocol every reproducible experiment follows, and the claim record.

An experiment is a module in :mod:`curvdyn.experiments` that defines

* ``NAME``: the name on the command line (``fig1``, ``fig3``, ``relu``, ...);
* ``TITLE``: one line for the report;
* ``compute(*, quick: bool, seed: int, progress: bool) -> tuple[dict[str, np.ndarray], dict]``:
  runs the numerics and returns the raw data (NumPy arrays, float64 where it matters, under
  names that do not start with ``__``: those are curvdyn's own entries, such as the run
  record ``__run__``) and a JSON-serializable configuration (everything needed to re-run it).
  One call computes one seed; the run record (:func:`curvdyn.io.run_record`) that the runner
  stores with the data lists the seeds, so that a figure can later hold several;
* ``plot(data, config) -> matplotlib.figure.Figure``: draws the figure from the data alone;
* ``claims(data, config) -> list[Claim]``: measures the paper's claims from the data alone.

Optionally ``describe(config) -> str``: a paragraph for the report on the setup and numerics
(from the saved configuration).

``plot`` and ``claims`` read only what ``compute`` returned (after a round trip through the
saved files), so every number in the report can be recomputed from the data files.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Claim:
    """One checked statement of the paper.

    Attributes:
      key: short stable identifier, e.g. ``"conservation-sgd"``.
      statement: the claim in words, with its source (``"eq. 4"``, ``"Fig. 3"``, ...).
      measured: the measured number.
      threshold: the pass criterion in words, e.g. ``"≤ 1e-7"``.
      passed: whether the measurement meets the criterion.
      detail: optional extra context (how it was measured, where it differs from the paper).
      known_deviation: empty, or the reason — written into the experiment before the run — why
        the paper's statement is known not to hold as stated (a documented disagreement).
        A failed claim with a known deviation is reported as "DISAGREES (documented)" and
        does not fail ``reproduce --check``; every other failed claim does.
    """

    key: str
    statement: str
    measured: float
    threshold: str
    passed: bool
    detail: str = ""
    known_deviation: str = ""

    @property
    def verdict(self) -> str:
        """``"PASS"``, ``"FAIL"``, or ``"DISAGREES"`` (failed, with a documented known deviation)."""
        if self.passed:
            return "PASS"
        return "DISAGREES" if self.known_deviation else "FAIL"

    @property
    def blocking(self) -> bool:
        """A failure that ``reproduce --check`` counts: failed and not a documented deviation."""
        return not self.passed and not self.known_deviation

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["measured"] = None if not math.isfinite(self.measured) else float(self.measured)
        return out


def at_most(
    key: str, statement: str, measured: float, bound: float, detail: str = "", *, known_deviation: str = ""
) -> Claim:
    """A claim that holds when ``measured ≤ bound`` (and is finite)."""
    measured = float(measured)
    ok = bool(math.isfinite(measured) and measured <= bound)
    return Claim(key, statement, measured, f"≤ {bound:.3g}", ok, detail, known_deviation)


def at_least(
    key: str, statement: str, measured: float, bound: float, detail: str = "", *, known_deviation: str = ""
) -> Claim:
    """A claim that holds when ``measured ≥ bound`` (and is finite)."""
    measured = float(measured)
    ok = bool(math.isfinite(measured) and measured >= bound)
    return Claim(key, statement, measured, f"≥ {bound:.3g}", ok, detail, known_deviation)


def within(
    key: str, statement: str, measured: float, target: float, tol: float, detail: str = "", *, relative: bool = False
) -> Claim:
    """A claim that holds when ``|measured − target| ≤ tol`` (relative to ``|target|`` if asked)."""
    measured = float(measured)
    err = abs(measured - target) / (abs(target) if relative and target else 1.0)
    kind = "relative " if relative else ""
    return Claim(
        key,
        statement,
        measured,
        f"{target:.4g} ± {tol:.2g} ({kind}error {err:.2g})",
        bool(math.isfinite(measured) and err <= tol),
        detail,
    )
