"""Claims over seeds: the one place where per-seed claims become a verdict.

Every claim of an experiment is measured on each seed's data
(:class:`curvdyn.experiments.base.Claim`, one per seed). :func:`aggregate` gathers them by key
into a :class:`ClaimStats`: on how many seeds it passes (k of N), the median and the 5–95 %
range of the measured value, the failing seeds and the verdict. The report (``report.md``,
``report.html``, ``report.json``), each figure's ``claims.json`` and the command line's
summary all read these objects; none restates the rule.

The verdict (:func:`verdict`):

* one seed: the claim's own ``PASS``, ``FAIL`` or ``DISAGREES`` (a documented deviation), as
  in a single-seed run;
* several seeds:

  - ``REPRODUCED``: it passes on every seed, or on at least the fraction of seeds the claim
    itself states (``Claim.min_pass_fraction``, with its reason ``Claim.fraction_reason``);
  - ``DISAGREES``: otherwise, when the claim carries a documented known deviation;
  - ``FAIL``: it passes on no seed;
  - ``SEED-DEPENDENT``: it passes on some seeds only (the failing seeds are listed).

``reproduce --check`` fails on every verdict other than ``PASS``, ``REPRODUCED`` and
``DISAGREES`` (:attr:`ClaimStats.blocking`).

The quantiles are :func:`numpy.quantile`'s default (linear interpolation between order
statistics, "type 7") over the finite measured values; a non-finite measurement always fails
its claim (:func:`curvdyn.experiments.base.at_most` etc.) and is left out of the quantiles.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from curvdyn.experiments.base import Claim

#: The quantiles of the measured value the report shows: 5 %, median, 95 %.
QUANTILES = (0.05, 0.5, 0.95)

PASS, FAIL, DISAGREES = "PASS", "FAIL", "DISAGREES"
REPRODUCED, SEED_DEPENDENT = "REPRODUCED", "SEED-DEPENDENT"
#: Verdicts that do not fail ``reproduce --check``.
NOT_BLOCKING = (PASS, REPRODUCED, DISAGREES)
#: Verdicts that count as the claim holding.
HOLDS = (PASS, REPRODUCED)


def quantiles(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """``(q05, median, q95)`` of the finite ``values`` (``numpy.quantile``, linear), ``None`` if none is finite."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return None, None, None
    q = np.quantile(arr, QUANTILES)
    return float(q[0]), float(q[1]), float(q[2])


def verdict(n_passed: int, n_seeds: int, *, known_deviation: str = "", min_pass_fraction: float = 1.0) -> str:
    """The verdict of a claim that passed on ``n_passed`` of ``n_seeds`` seeds (see the module docstring).

    With one seed this is also :attr:`Claim.verdict` (which calls it).
    """
    if n_seeds < 1 or not 0 <= n_passed <= n_seeds:
        raise ValueError(f"need 0 <= n_passed <= n_seeds and n_seeds >= 1, got {n_passed} of {n_seeds}")
    if n_seeds == 1:
        return PASS if n_passed else (DISAGREES if known_deviation else FAIL)
    if n_passed == n_seeds or n_passed >= min_pass_fraction * n_seeds - 1e-12:
        return REPRODUCED
    if known_deviation:
        return DISAGREES
    return FAIL if n_passed == 0 else SEED_DEPENDENT


@dataclasses.dataclass(frozen=True)
class ClaimStats:
    """One claim measured on several seeds.

    Attributes:
      key, statement, known_deviation, min_pass_fraction, fraction_reason: the claim's (the same
        on every seed).
      threshold: the pass criterion in words; a bound computed from each seed's own numerics
        (e.g. a round-off level ε·κ) can differ between seeds: then ``"per seed: ..."``, and
        ``thresholds`` lists each.
      detail: the first seed's detail text.
      seeds: the seeds it was measured on, in run order; measured, passed: per seed.
    """

    key: str
    statement: str
    threshold: str
    detail: str
    known_deviation: str
    min_pass_fraction: float
    fraction_reason: str
    seeds: tuple[int, ...]
    measured: tuple[float, ...]
    passed: tuple[bool, ...]
    thresholds: tuple[str, ...] = ()

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def n_passed(self) -> int:
        return sum(self.passed)

    @property
    def failing_seeds(self) -> list[int]:
        return [s for s, ok in zip(self.seeds, self.passed) if not ok]

    @property
    def q05(self) -> float | None:
        return quantiles(self.measured)[0]

    @property
    def median(self) -> float | None:
        return quantiles(self.measured)[1]

    @property
    def q95(self) -> float | None:
        return quantiles(self.measured)[2]

    @property
    def verdict(self) -> str:
        return verdict(
            self.n_passed,
            self.n_seeds,
            known_deviation=self.known_deviation,
            min_pass_fraction=self.min_pass_fraction,
        )

    @property
    def holds(self) -> bool:
        """PASS or REPRODUCED."""
        return self.verdict in HOLDS

    @property
    def blocking(self) -> bool:
        """A verdict that ``reproduce --check`` fails on (FAIL or SEED-DEPENDENT)."""
        return self.verdict not in NOT_BLOCKING

    def as_dict(self) -> dict:
        """The JSON form (``claims.json``'s and ``report.json``'s ``summary`` entries)."""
        q05, median, q95 = quantiles(self.measured)
        return {
            "key": self.key,
            "statement": self.statement,
            "threshold": self.threshold,
            "verdict": self.verdict,
            "n_passed": self.n_passed,
            "n_seeds": self.n_seeds,
            "median": median,
            "q05": q05,
            "q95": q95,
            "failing_seeds": self.failing_seeds,
            "seeds": list(self.seeds),
            "measured": [float(m) if math.isfinite(m) else None for m in self.measured],
            "passed": list(self.passed),
            "thresholds": list(self.thresholds),
            "known_deviation": self.known_deviation,
            "min_pass_fraction": self.min_pass_fraction,
            "fraction_reason": self.fraction_reason,
            "detail": self.detail,
        }


def aggregate(by_seed: Mapping[int, Sequence[Claim]] | Sequence[tuple[int, Sequence[Claim]]]) -> list[ClaimStats]:
    """Gather per-seed claims by key, in the first seed's order (keys first seen later follow).

    Args:
      by_seed: seed → the claims measured on that seed's data (in run order).

    A claim a seed's data does not make (its function returned ``None`` there) is measured on
    the other seeds only: its ``seeds`` are those it was measured on.

    Raises:
      ValueError: a key twice on one seed, or a claim whose statement, known deviation or stated
        fraction differ between seeds (the claim would not be one claim).
    """
    items = list(by_seed.items()) if isinstance(by_seed, Mapping) else list(by_seed)
    order: list[str] = []
    rows: dict[str, list[tuple[int, Claim]]] = {}
    for seed, claims in items:
        seen = set()
        for c in claims:
            if c.key in seen:
                raise ValueError(f"claim {c.key!r} appears twice on seed {seed}")
            seen.add(c.key)
            if c.key not in rows:
                rows[c.key] = []
                order.append(c.key)
            rows[c.key].append((int(seed), c))
    out = []
    for key in order:
        first = rows[key][0][1]
        for seed, c in rows[key][1:]:
            for field in ("statement", "known_deviation", "min_pass_fraction", "fraction_reason"):
                if getattr(c, field) != getattr(first, field):
                    raise ValueError(
                        f"claim {key!r}: its {field} differs between seeds ({seed}: {getattr(c, field)!r})"
                    )
        out.append(
            ClaimStats(
                key=key,
                statement=first.statement,
                threshold=_threshold_text([c.threshold for _, c in rows[key]], [s for s, _ in rows[key]]),
                detail=first.detail,
                known_deviation=first.known_deviation,
                min_pass_fraction=first.min_pass_fraction,
                fraction_reason=first.fraction_reason,
                seeds=tuple(s for s, _ in rows[key]),
                measured=tuple(float(c.measured) for _, c in rows[key]),
                passed=tuple(bool(c.passed) for _, c in rows[key]),
                thresholds=tuple(c.threshold for _, c in rows[key]),
            )
        )
    return out


def _threshold_text(thresholds: list[str], seeds: list[int]) -> str:
    if len(set(thresholds)) == 1:
        return thresholds[0]
    return "per seed: " + "; ".join(f"{s}: {t}" for s, t in zip(seeds, thresholds))


def summary(stats: Sequence[ClaimStats]) -> dict[str, int]:
    """Counts by verdict: ``n_claims``, ``n_passed`` (PASS or REPRODUCED), ``n_failed`` (blocking),
    ``n_seed_dependent``, ``n_deviations``."""
    return {
        "n_claims": len(stats),
        "n_passed": sum(s.holds for s in stats),
        "n_failed": sum(s.blocking for s in stats),
        "n_seed_dependent": sum(s.verdict == SEED_DEPENDENT for s in stats),
        "n_deviations": sum(s.verdict == DISAGREES for s in stats),
    }
