"""Fig. S.I.1: scaling of the update size ‖ẇ‖/√L and the loss rate |L̇/L| with the weight scale α.

S.I.3 predicts, for balanced weights whose singular values all equal α,
``‖ẇ‖/√L ∝ α^{(d−1)(1−2/q)}`` (S.I.16) and ``|L̇/L| ∝ α^{(d−1)(2−2/q)}`` (S.I.17): exponents
``(d−1, 2(d−1))`` for SGD, ``(0, d−1)`` for √NGD and ``(−(d−1), 0)`` for NGD, shared by the
block-diagonal NGD-d and √NGD-d (:func:`curvdyn.theory.scaling_exponents`).

Setup (the S.I. leaves it open; chosen here): networks of constant width N = 8 (every
``w_i`` is 8 × 8), depths d ∈ {2, 3, 4} (quick: {2, 3}), a target ``W* = U Vᵀ`` with
Haar-random orthogonal U, V (all singular values 1), Σ = I, η = 1, and α on 9 log-spaced
values from 0.01 to 1 (quick: 5). For each depth and rule the update of ``α·w`` is measured
with :func:`curvdyn.theory.scaling_curve` (``‖ẇ‖/√L = η‖d‖/√L``, ``|L̇/L| = η|⟨g, d⟩|/L`` from
the rule's exact direction d) for

* balanced weights (:func:`curvdyn.init_balanced` with every singular value 1, times α), whose
  exact values are :func:`curvdyn.theory.balanced_update_rates` — the dotted lines;
* Xavier-normal weights (:func:`curvdyn.init_xavier`, times α), 10 seeds: mean ± std.

The exponents are least-squares slopes of ln Q against ln α over the α grid (per seed for the
Xavier weights, then averaged). On random weights the displacement ``Δ = α^d W₀ − W*`` turns
as α grows, which bends the curves at the large-α end (a correction of relative size
~``α^d ‖W₀‖/‖W*‖``, see :func:`curvdyn.theory.measure_scaling_exponents`).
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from typing import Any

import jax
import numpy as np
from matplotlib.figure import Figure

from curvdyn import theory
from curvdyn.experiments.base import Claim, Config, Data, at_least, at_most, measure
from curvdyn.experiments.common import Axis, random_target, rule_color, rule_label
from curvdyn.experiments.common import progress as progress_bar
from curvdyn.init import init_balanced, init_xavier
from curvdyn.network import outer_products
from curvdyn.rules import get_rule
from curvdyn.task import Task

NAME = "figS1"
TITLE = "Fig. S.I.1 — scaling of ‖ẇ‖/√L and |L̇/L| with the weight scale α: balanced vs Xavier-random weights"

RULES = ("sgd", "sqrt-ngd", "ngd", "ngd-d", "sqrt-ngd-d")
QUANTITIES = ("speed", "rate")  # ‖ẇ‖/√L (S.I.16) and |L̇/L| (S.I.17)
XAVIER_TOL = 0.1  # |exponent − prediction| allowed on random weights (the paper: "approximately")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of Fig. S.I.1.

    Attributes:
      depths: the network depths d; width: every layer's width N (``w_i`` is N × N).
      alphas: the weight scales α.
      n_seeds: the number of Xavier-normal weight draws per depth.
      eta: the learning rate η.
    """

    depths: tuple[int, ...] = (2, 3, 4)
    width: int = 8
    alphas: Axis = Axis(-2.0, 0.0, 9, log=True)
    n_seeds: int = 10
    eta: float = 1.0


DEFAULT = Settings()
QUICK = dataclasses.replace(DEFAULT, depths=(2, 3), alphas=Axis(-2.0, 0.0, 5, log=True))


def _block_condition(ws) -> float:
    """Largest condition number of the layer curvature blocks ``H_i = (B_iB_iᵀ) ⊗ (A_iᵀA_i)`` (Σ = I).

    It is the same for ``α·w`` at every α and bounds the round-off of the block rules' directions.
    """
    a_s, b_s = outer_products(ws)
    return max(
        float(np.linalg.cond(np.asarray(b @ b.T)) * np.linalg.cond(np.asarray(a.T @ a))) for a, b in zip(a_s, b_s)
    )


def compute(settings: Settings, *, seed: int, progress: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    s = settings
    depths, n, n_seeds, eta = list(s.depths), int(s.width), int(s.n_seeds), float(s.eta)
    alphas = s.alphas.values()
    k_target, k_bal, k_xav = jax.random.split(jax.random.PRNGKey(seed), 3)
    task = Task(random_target(k_target, np.ones(n)))

    shape = (len(depths), len(RULES), len(alphas))
    pred = {q: np.zeros(shape) for q in QUANTITIES}
    bal = {q: np.zeros(shape) for q in QUANTITIES}
    xav = {q: np.zeros((len(depths), len(RULES), n_seeds, len(alphas))) for q in QUANTITIES}
    exponents = np.zeros((len(depths), len(RULES), 2))
    cond = np.zeros(len(depths))
    jobs = [(a, d, r, name) for a, d in enumerate(depths) for r, name in enumerate(RULES)]
    for a, d, r, name in progress_bar(jobs, enabled=progress, desc="figS1 depth × rule"):
        rule = get_rule(name)
        widths = (n,) * (d + 1)
        exponents[a, r] = theory.scaling_exponents(d, rule.q)
        values = np.array([theory.balanced_update_rates(rule, d, al, eta=eta) for al in alphas])
        pred["speed"][a, r], pred["rate"][a, r] = values[:, 0], values[:, 1]
        ws = init_balanced(jax.random.fold_in(k_bal, d), widths, 1.0)
        bal["speed"][a, r], bal["rate"][a, r] = theory.scaling_curve(ws, task, rule, alphas, eta=eta)
        for k in range(n_seeds):
            ws = init_xavier(jax.random.fold_in(jax.random.fold_in(k_xav, d), k), widths, 1.0)
            xav["speed"][a, r, k], xav["rate"][a, r, k] = theory.scaling_curve(ws, task, rule, alphas, eta=eta)
            if r == 0:
                cond[a] = max(cond[a], _block_condition(ws))

    data: dict[str, np.ndarray] = {
        "rules": np.array(RULES),
        "depths": np.array(depths),
        "alphas": alphas,
        "exponents": exponents,
        "target": np.asarray(task.target),
        "xavier_block_cond": cond,
    }
    for q in QUANTITIES:
        data[f"pred_{q}"] = pred[q]
        data[f"balanced_{q}"] = bal[q]
        data[f"xavier_{q}"] = xav[q]
    return data, {}


def describe(config: Config[Settings]) -> str:
    """The setup and numerics in words, for the report."""
    s = config.settings
    alphas = f"{s.alphas.num} log-spaced from 1e{s.alphas.start:g} to 1e{s.alphas.stop:g}"
    return (
        f"Networks of constant width {s.width} (every layer {s.width} × {s.width}), depths "
        f"{', '.join(map(str, s.depths))}, target U Vᵀ with Haar-random orthogonal U, V, Σ = I, η = {s.eta:g}; "
        f"α: {alphas}. For every depth and rule (SGD, √NGD, NGD, NGD-d, √NGD-d) the update of α·w is measured "
        "with theory.scaling_curve (‖ẇ‖/√L = η‖d‖/√L and |L̇/L| = η|⟨g, d⟩|/L from the rule's exact direction d) on "
        "balanced weights with all singular values α (init_balanced) and on Xavier-normal weights times α "
        f"(init_xavier, {s.n_seeds} seeds). Dotted lines: theory.balanced_update_rates. Exponents: least-squares "
        "slopes of ln Q against ln α over the α grid (per seed for the Xavier weights, then averaged)."
    )


# ---------------------------------------------------------------------------------------
# measurements (from the data alone)
# ---------------------------------------------------------------------------------------


def slopes(alphas, values) -> np.ndarray:
    """Least-squares slopes of ``ln values`` against ``ln α`` along the last axis."""
    x = np.log(alphas)
    y = np.log(values)
    xc = x - x.mean()
    return np.sum(xc * (y - y.mean(axis=-1, keepdims=True)), axis=-1) / np.sum(xc * xc)


def _rule_index(data, name: str) -> int:
    return list(data["rules"]).index(name)


def _qi(q: str) -> int:
    return QUANTITIES.index(q)


_Q_TEXT = {"speed": "‖ẇ‖/√L", "rate": "|L̇/L|"}
_Q_EQ = {"speed": "S.I.16", "rate": "S.I.17"}


#: Statements of the paper this experiment measures NOT to hold as stated (found on
#: 2026-11-26 with the settings above, thresholds fixed before measuring). They are reported
#: as DISAGREES with these reasons and do not fail ``reproduce --check``; any other failure does.
_KNOWN_DEVIATIONS = {
    "xavier-exponents-rate": (
        "On Xavier-random weights the fitted |L̇/L| exponent over α ∈ [0.01, 1] exceeds the prediction by up to "
        "≈ 0.14 (SGD, d = 4): the random-weight curves bend near α = 1. Over the small-α half of the range the "
        "deviation is below 1e-3, so the power law holds asymptotically, not over the whole range plotted."
    ),
    "xavier-shifted-right": (
        "SGD's random-weight curves are not shifted toward larger α (shift factor ≈ 0.95–0.99); the curvature-"
        "corrected rules' curves are (NGD ≈ 2–3, NGD-d ≈ 6–10, √NGD ≈ 1.05)."
    ),
    "sqrt-ngd-d-matches-sqrt-ngd-rate": (
        "√NGD-d matches √NGD's parameter update exactly, but on random weights its loss rate |L̇/L| is only "
        "≈ 0.8–0.97 of √NGD's; the 'identical match' of the loss update holds for balanced weights only."
    ),
}


def _setup(data: Data, config: Config[Settings]) -> str:
    alphas, depths = data["alphas"], data["depths"]
    return (
        f"width {config.settings.width}, d ∈ {{{', '.join(str(d) for d in depths)}}}, "
        f"α ∈ [{alphas[0]:g}, {alphas[-1]:g}] ({len(alphas)} values)"
    )


def _rules(data: Data) -> list[str]:
    return [str(r) for r in data["rules"]]


def _roundoff_bound(data: Data) -> float:
    """The round-off level ``ε·κ`` of the exact zero power laws, κ the largest layer-block condition number."""
    return max(np.finfo(np.float64).eps * float(np.max(data["xavier_block_cond"])), 1e-12)


def _ngd_d_over_ngd(data: Data) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``(ratio (D, S, A), balanced ratio, geometric mean per depth, per-depth text)`` of ‖ẇ‖_NGD-d/‖ẇ‖_NGD."""
    i, j = _rule_index(data, "ngd"), _rule_index(data, "ngd-d")
    ratio = data["xavier_speed"][:, j] / data["xavier_speed"][:, i]
    bal_ratio = data["balanced_speed"][:, j] / data["balanced_speed"][:, i]
    gmean = np.exp(np.mean(np.log(ratio), axis=(1, 2)))
    per_depth = ", ".join(
        f"d = {d}: {g:.3g} (range {ratio[k].min():.3g}–{ratio[k].max():.3g})"
        for k, (d, g) in enumerate(zip(data["depths"], gmean))
    )
    return ratio, bal_ratio, gmean, per_depth


# ---------------------------------------------------------------------------------------
# the claims, in report order
# ---------------------------------------------------------------------------------------


def balanced_exponents(data: Data, config: Config[Settings]) -> Claim:
    alphas, exps = data["alphas"], data["exponents"]
    dev = max(float(np.max(np.abs(slopes(alphas, data[f"balanced_{q}"]) - exps[..., _qi(q)]))) for q in QUANTITIES)
    return at_most(
        "balanced-exponents",
        "For balanced weights the update size and loss rate follow ‖ẇ‖/√L ∝ α^{(d−1)(1−2/q)} and "
        "|L̇/L| ∝ α^{(d−1)(2−2/q)} exactly, for the full and the block-diagonal rules (S.I.16–17, Fig. S.I.1).",
        dev,
        1e-6,
        f"Max over depths, rules ({', '.join(rule_label(r) for r in _rules(data))}) and both quantities of |fitted − "
        f"predicted exponent|; {_setup(data, config)}.",
    )


def balanced_values(data: Data, config: Config[Settings]) -> Claim:
    rel = max(float(np.max(np.abs(data[f"balanced_{q}"] / data[f"pred_{q}"] - 1.0))) for q in QUANTITIES)
    return at_most(
        "balanced-values",
        "The measured updates of balanced weights lie on the predicted lines (the dotted lines of Fig. S.I.1).",
        rel,
        1e-9,
        "Max relative deviation of the measured ‖ẇ‖/√L and |L̇/L| (exact rule directions) from "
        "theory.balanced_update_rates, over depths, rules and α.",
    )


def _xavier_exponents(q: str):
    def claim(data: Data, config: Config[Settings]) -> Claim:
        alphas, depths, exps, rules = data["alphas"], data["depths"], data["exponents"], _rules(data)
        per_seed = slopes(alphas, data[f"xavier_{q}"])  # (D, R, S)
        mean, std = per_seed.mean(axis=-1), per_seed.std(axis=-1)
        err = np.abs(mean - exps[..., _qi(q)])
        a, r = np.unravel_index(int(np.argmax(err)), err.shape)
        listing = "; ".join(
            f"d = {d}: "
            + ", ".join(
                f"{rule_label(rn)} {mean[i, j]:+.3f}±{std[i, j]:.3f} ({exps[i, j, _qi(q)]:+g})"
                for j, rn in enumerate(rules)
            )
            for i, d in enumerate(depths)
        )
        small = alphas <= math.sqrt(alphas[0] * alphas[-1]) * (1 + 1e-12)  # the lower half of the α decades
        low_err = np.abs(slopes(alphas[small], data[f"xavier_{q}"][..., small]).mean(axis=-1) - exps[..., _qi(q)])
        return at_most(
            f"xavier-exponents-{q}",
            f"For Xavier-random weights {_Q_TEXT[q]} follows approximately the same power law in α as for balanced "
            f'weights ({_Q_EQ[q]}; S.I.3: "approximately for random weight matrices", Fig. S.I.1: same slope).',
            float(err[a, r]),
            XAVIER_TOL,
            f"Max over depths and rules of |mean fitted exponent − prediction| (worst: {rule_label(rules[r])} at "
            f"d = {depths[a]}); per-seed least-squares slopes over α, mean ± std over {per_seed.shape[-1]} seeds "
            f"(prediction in brackets): {listing}. {_setup(data, config)}. Fitted over the lower half of the α range "
            f"only (α ≤ {alphas[small][-1]:.2g}) the worst deviation is {float(low_err.max()):.3g}: the deviation is "
            "the large-α bend of the random-weight curves (Δ = α^d W₀ − W* turns as α^d W₀ grows). The tolerance "
            f'{XAVIER_TOL:g} is this experiment\'s reading of "approximately".',
            known_deviation=_KNOWN_DEVIATIONS.get(f"xavier-exponents-{q}", ""),
        )

    claim.__name__ = f"xavier_exponents_{q}"
    return claim


def block_rules_same_exponents(data: Data, config: Config[Settings]) -> Claim:
    # same exponents for the block rules as for their full counterparts (on random weights)
    alphas = data["alphas"]
    diffs = []
    for full, block in (("ngd", "ngd-d"), ("sqrt-ngd", "sqrt-ngd-d")):
        i, j = _rule_index(data, full), _rule_index(data, block)
        for q in QUANTITIES:
            sl = slopes(alphas, data[f"xavier_{q}"]).mean(axis=-1)
            diffs.append(
                (float(np.max(np.abs(sl[:, i] - sl[:, j]))), f"{rule_label(block)} vs {rule_label(full)} {_Q_TEXT[q]}")
            )
    worst = max(diffs)
    return at_most(
        "block-rules-same-exponents",
        "Block-diagonalization does not change the power-law exponents: NGD-d scales like NGD and √NGD-d like √NGD "
        "(Fig. S.I.1 caption).",
        worst[0],
        XAVIER_TOL,
        "Max over depths of |mean fitted exponent (block) − mean fitted exponent (full)| on Xavier weights; "
        + ", ".join(f"{txt}: {v:.2g}" for v, txt in diffs)
        + ".",
    )


def xavier_shifted_right(data: Data, config: Config[Settings]) -> Claim:
    # shift of the Xavier curves relative to the balanced lines, measured along α: Q_x(α) = Q_b(α/c)
    exps, rules = data["exponents"], _rules(data)
    shifts = []
    for i, d in enumerate(data["depths"]):
        for j, rn in enumerate(rules):
            for q in QUANTITIES:
                e = exps[i, j, _qi(q)]
                if abs(e) < 1e-12:
                    continue
                ln_c = np.mean((np.log(data[f"pred_{q}"][i, j]) - np.log(data[f"xavier_{q}"][i, j])) / e)
                shifts.append((float(np.exp(ln_c)), f"{rule_label(rn)} d = {d} {_Q_TEXT[q]}"))
    low, high = min(shifts), max(shifts)
    by_rule = []
    for rn in rules:
        cs = [c for c, txt in shifts if txt.startswith(rule_label(rn) + " ")]
        if cs:
            by_rule.append(f"{rule_label(rn)} {min(cs):.3g}–{max(cs):.3g}")
    return at_least(
        "xavier-shifted-right",
        "The Xavier-random curves are the balanced power laws shifted toward larger α (Fig. S.I.1 caption).",
        low[0],
        1.0,
        "Min over depths, rules and quantities with a nonzero exponent e of the shift factor c in "
        "Q_Xavier(α) ≈ Q_balanced(α/c), c = exp(mean over seeds and α of (ln Q_balanced − ln Q_Xavier)/e); "
        f"c ranges from {low[0]:.3g} ({low[1]}) to {high[0]:.3g} ({high[1]}); per rule (over depths and "
        f"quantities): {', '.join(by_rule)}.",
        known_deviation=_KNOWN_DEVIATIONS["xavier-shifted-right"],
    )


def zero_exponents_exact(data: Data, config: Config[Settings]) -> Claim:
    exact = []
    for rn, q in (("sqrt-ngd", "speed"), ("ngd", "rate"), ("sqrt-ngd-d", "speed"), ("ngd-d", "rate")):
        j = _rule_index(data, rn)
        for kind in ("xavier", "balanced"):
            vals = data[f"{kind}_{q}"][:, j]
            ref = data[f"pred_{q}"][:, j]
            ref = ref[:, None, :] if vals.ndim == 3 else ref
            exact.append((float(np.max(np.abs(vals / ref - 1.0))), f"{rule_label(rn)} {_Q_TEXT[q]} ({kind})"))
    worst = max(exact)
    kappa = float(np.max(data["xavier_block_cond"]))
    return at_most(
        "zero-exponents-exact",
        "The zero power laws are exact for any weights: √NGD's ‖ẇ‖/√L = √2η and NGD's |L̇/L| = 2η do not "
        "depend on α (S.I.3), nor do √NGD-d's ‖ẇ‖/√L and NGD-d's |L̇/L| (Fig. S.I.1 caption).",
        worst[0],
        _roundoff_bound(data),
        "Max over depths, seeds and α of the relative deviation from the balanced value (√2 and 2); "
        + ", ".join(f"{txt}: {v:.1e}" for v, txt in exact)
        + ". Bound: the round-off level ε·κ, κ = "
        f"{kappa:.2g} the largest condition number of a layer curvature block (B_iB_iᵀ) ⊗ (A_iᵀA_i) of the "
        "Xavier weights (per depth: "
        + ", ".join(f"d = {d}: {c:.2g}" for d, c in zip(data["depths"], data["xavier_block_cond"]))
        + "); the power-law deviations of the nonzero exponents are ≥ 1e-2.",
    )


def ngd_d_larger_update(data: Data, config: Config[Settings]) -> Claim:
    ratio, bal_ratio, _, per_depth = _ngd_d_over_ngd(data)
    return at_least(
        "ngd-d-larger-update",
        "NGD-d's parameter update is larger than NGD's, ‖ẇ‖_NGD-d ≥ ‖ẇ‖_NGD (footnote 7, Fig. S.I.1 caption).",
        float(ratio.min()),
        1.0,
        f"Min over depths, seeds and α of ‖ẇ‖_NGD-d/‖ẇ‖_NGD on Xavier weights; geometric means per depth: {per_depth}. "
        f"On balanced weights the two are equal (ratio {bal_ratio.min():.12g}–{bal_ratio.max():.12g}: footnote 7's "
        "Jensen inequality is an equality when all couplings are equal).",
        known_deviation=NGD_D_LARGER_NOT_EVERYWHERE,
    )


#: Measured over ``curvdyn reproduce --seeds 20`` (20 seeds × 10 draws × 3 depths × 9 scales).
NGD_D_LARGER_NOT_EVERYWHERE = (
    "Footnote 7's inequality is Jensen's for one singular mode (aligned, balanced weights, where the two updates "
    "are equal); on Xavier-random weights it is not a theorem. NGD-d's update is larger at almost every point "
    "(over seeds 0–19 the per-seed minimum ratio has median 1.59), but not at every one: on seed 9 one d = 4 draw "
    "gives 0.855."
)


def ngd_d_much_larger_update(data: Data, config: Config[Settings]) -> Claim:
    _, _, gmean, per_depth = _ngd_d_over_ngd(data)
    return at_least(
        "ngd-d-much-larger-update",
        "On random weights NGD-d's parameter update is much larger than NGD's (Fig. S.I.1 caption).",
        float(gmean.min()),
        2.0,
        "Min over depths of the geometric mean (over seeds and α) of ‖ẇ‖_NGD-d/‖ẇ‖_NGD on Xavier weights; "
        f'{per_depth}. "Much larger" is read here as at least a factor 2.',
    )


def _sqrt_ngd_d_matches(q: str):
    def claim(data: Data, config: Config[Settings]) -> Claim:
        tol = _roundoff_bound(data) if q == "speed" else 0.05
        i, j = _rule_index(data, "sqrt-ngd"), _rule_index(data, "sqrt-ngd-d")
        ratio = data[f"xavier_{q}"][:, j] / data[f"xavier_{q}"][:, i]
        bal_ratio = data[f"balanced_{q}"][:, j] / data[f"balanced_{q}"][:, i]
        per_depth = ", ".join(
            f"d = {d}: {ratio[k].min():.4g}–{ratio[k].max():.4g}" for k, d in enumerate(data["depths"])
        )
        return at_most(
            f"sqrt-ngd-d-matches-sqrt-ngd-{q}",
            f'√NGD-d matches √NGD identically in {_Q_TEXT[q]} (Fig. S.I.1 caption: "sNGD-d exhibits identical match '
            'with sNGD for both parameter update and loss update").',
            float(np.max(np.abs(ratio - 1.0))),
            tol,
            f"Max over depths, seeds and α of |ratio − 1|, ratio = {_Q_TEXT[q]} of √NGD-d over √NGD on Xavier weights; "
            f"ratio ranges {per_depth}; on balanced weights {np.max(np.abs(bal_ratio - 1.0)):.1e}."
            + (" Tolerance 5 %." if q == "rate" else " Tolerance: the round-off level ε·κ of zero-exponents-exact."),
            known_deviation=_KNOWN_DEVIATIONS.get(f"sqrt-ngd-d-matches-sqrt-ngd-{q}", ""),
        )

    claim.__name__ = f"sqrt_ngd_d_matches_sqrt_ngd_{q}"
    return claim


CLAIMS = (
    balanced_exponents,
    balanced_values,
    *(_xavier_exponents(q) for q in QUANTITIES),
    block_rules_same_exponents,
    xavier_shifted_right,
    zero_exponents_exact,
    ngd_d_larger_update,
    ngd_d_much_larger_update,
    *(_sqrt_ngd_d_matches(q) for q in ("speed", "rate")),
)


def claims(data: Data, config: Config[Settings]) -> list[Claim]:
    return measure(CLAIMS, data, config)


# ---------------------------------------------------------------------------------------
# figure
# ---------------------------------------------------------------------------------------

_MARKER = {"sgd": "o", "sqrt-ngd": "s", "ngd": "D", "ngd-d": "v", "sqrt-ngd-d": "^"}


def plot(data: Data, config: Config[Settings]) -> Figure:
    alphas, depths = data["alphas"], data["depths"]
    rules = [str(r) for r in data["rules"]]
    exps = data["exponents"]
    n_d = len(depths)
    fig = Figure(figsize=(5.4 * n_d, 10.0), layout="constrained")
    axes = fig.subplots(2, n_d, squeeze=False)
    offsets = np.linspace(-0.035, 0.035, len(rules))  # small horizontal offsets (in log10 α) against overlap
    for col, d in enumerate(depths):
        for row, q in enumerate(QUANTITIES):
            ax = axes[row, col]
            for j, rn in enumerate(rules):
                c = rule_color(rn)
                block = rn.endswith("-d")
                ax.plot(
                    alphas,
                    data[f"pred_{q}"][col, j],
                    ls=(0, (1, 2)) if not block else (0, (1, 4)),
                    color=c,
                    lw=1.8,
                    zorder=1,
                )
                x = alphas * 10 ** offsets[j]
                ax.plot(
                    x,
                    data[f"balanced_{q}"][col, j],
                    _MARKER[rn],
                    color=c,
                    mfc="white",
                    ms=6,
                    mew=1.2,
                    ls="none",
                    zorder=3,
                )
                vals = data[f"xavier_{q}"][col, j]
                mean, std = vals.mean(axis=0), vals.std(axis=0)
                lower = np.minimum(std, 0.95 * mean)  # keep the bar on a log axis
                e_fit = round(float(slopes(alphas, vals).mean()), 2) + 0.0  # + 0.0: no "-0.00"
                ax.errorbar(
                    x,
                    mean,
                    yerr=[lower, std],
                    fmt=_MARKER[rn],
                    color=c,
                    ms=6,
                    lw=1.2,
                    capsize=2.5,
                    ls="-" if not block else "--",
                    zorder=4,
                    label=f"{rule_label(rn)}: $\\alpha^{{{exps[col, j, row]:+g}}}$ (Xavier fit {e_fit:+.2f})",
                )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(alpha=0.25, which="major")
            ax.legend(fontsize=8.5, loc="best", framealpha=0.9)
            if row == 1:
                ax.set_xlabel("weight scale α")
            if col == 0:
                ax.set_ylabel(
                    "update size $\\|\\dot w\\|/\\sqrt{L}$ (S.I.16)"
                    if q == "speed"
                    else "loss rate $|\\dot L/L|$ (S.I.17)"
                )
            ax.set_title(
                f"{'AB'[row]}{col + 1}  d = {d}: {'‖ẇ‖/√L' if q == 'speed' else '|L̇/L|'}", loc="left", fontsize=12
            )
    setup = config.settings
    legend = (
        "dotted lines: prediction for balanced weights;  open markers: measured on balanced weights;  filled "
        f"markers with error bars: Xavier·α weights, mean ± std over {data['xavier_speed'].shape[2]} seeds "
        "(dashed: block-diagonal rules);  legend: predicted power of α and the mean fitted Xavier exponent"
    )
    fig.suptitle(
        f"Fig. S.I.1 — scaling with the weight scale α, width {setup.width}, target $UV^T$, η = {setup.eta:g}\n"
        + "\n".join(textwrap.wrap(legend, width=int(11 * fig.get_figwidth()))),
        fontsize=11.5,
    )
    return fig
