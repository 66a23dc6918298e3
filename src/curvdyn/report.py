"""The reproduction report: ``report.md``, ``report.html`` (self-contained) and ``report.json``.

The report shows, for every experiment, its figure, its claims (the measured number, the
threshold, PASS/FAIL, and how it was measured), its configuration and timings, and a plain
note for every claim that fails. The numbers are taken from the claims measured on the
saved data files (see :mod:`curvdyn.reproduce`), so anyone can recompute them.

Over several seeds each claim's row gives the number of seeds it passes on (k/N), the median
and 5–95 % range of the measured value, the failing seeds and the verdict (REPRODUCED,
SEED-DEPENDENT, DISAGREES, FAIL), all from :mod:`curvdyn.claimstats`; with one seed the table
is the one-seed table (measured, threshold, PASS/FAIL/DISAGREES).

Every report states the run id, seed and resolution of each figure (from the record in its
``data.npz``) and opens with a warning when the figures are not one complete run: a run in
progress or killed, an interrupted run, a failed one, or (re-plots with ``--allow-mixed``)
figures from different runs.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from curvdyn import claimstats, io
from curvdyn._version import __version__
from curvdyn.claimstats import ClaimStats
from curvdyn.experiments.base import Claim

PAPER = "Curvature-corrected learning dynamics in deep linear neural networks"


def format_measured(value: float | None) -> str:
    """How a measured number is printed in the report (4 significant digits)."""
    if value is None or not math.isfinite(value):
        return "not finite"
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


def result_word(claim: Claim) -> str:
    return claim.verdict


def failure_note(claim: Claim | ClaimStats) -> str:
    """A plain sentence for a failed claim: what was measured against what was needed (over
    several seeds: on how many it passes, which fail, and the spread)."""
    if isinstance(claim, ClaimStats) and claim.n_seeds > 1:
        text = (
            f"Passes on {claim.n_passed} of {claim.n_seeds} seeds (failing seeds: {seed_list(claim.failing_seeds)}); "
            f"measured median {format_measured(claim.median)}, 5–95 % {spread(claim)}, per seed "
            + ", ".join(f"{s}: {format_measured(m)}" for s, m in zip(claim.seeds, claim.measured))
            + f"; the claim needs {claim.threshold}."
        )
        if claim.fraction_reason:
            text += f" It states that {claim.min_pass_fraction:.0%} of seeds suffice: {claim.fraction_reason}"
    else:
        measured = claim.measured[0] if isinstance(claim, ClaimStats) else claim.measured
        text = f"Measured {format_measured(measured)}, but the claim needs {claim.threshold}."
    if claim.detail:
        text += " " + claim.detail
    return text


def seed_list(seeds) -> str:
    """Seeds as the report lists them (``"2, 3"``, ``"—"`` for none)."""
    return ", ".join(str(s) for s in seeds) if seeds else "—"


def spread(stats: ClaimStats) -> str:
    """The 5–95 % range of a claim's measured values over its seeds."""
    if stats.q05 is None:
        return "not finite"
    return f"[{format_measured(stats.q05)}, {format_measured(stats.q95)}]"


def passes_text(stats: ClaimStats) -> str:
    """``"k/N"``: the seeds a claim passes on, of those it was measured on."""
    return f"{stats.n_passed}/{stats.n_seeds}"


def several_seeds(run) -> bool:
    """Whether any claim of the run was measured on more than one seed (the multi-seed table)."""
    return any(st.n_seeds > 1 for st in run.stats)


# ---------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------


def summary_counts(run) -> dict:
    return {
        "n_experiments": len(run.results),
        "n_errors": sum(r.error is not None for r in run.results),
        "n_seeds": len(run.seeds),
        **claimstats.summary(run.stats),
    }


def result_line(s: dict, *, several: bool) -> str:
    """The result in words (report and command line): how many claims hold, fail, depend on the seed."""
    held = "are reproduced on every seed (or the fraction they state)" if several else "pass"
    return (
        f"{s['n_passed']} of {s['n_claims']} claims {held}"
        + (f", {s['n_seed_dependent']} are seed-dependent" if s["n_seed_dependent"] else "")
        + (f", {s['n_failed'] - s['n_seed_dependent']} fail" if s["n_failed"] - s["n_seed_dependent"] else "")
        + (f", {s['n_deviations']} disagree with the paper (documented deviations)" if s["n_deviations"] else "")
    )


def _resolution(run) -> str:
    found = run.resolutions
    if found == ["quick"]:
        return "quick (--quick: lower resolution)"
    if found == ["default"]:
        return "default resolution"
    if not found:
        return "unknown"
    return "mixed resolutions (see each experiment)"


def _seeds(run) -> str:
    return ", ".join(str(s) for s in run.seeds) if run.seeds else "?"


def _run_ids(run) -> str:
    if run.record is not None and not run.results:
        return run.record["run_id"]
    return ", ".join(run.runs) if run.results else "—"


def _figure_run(r) -> tuple[str, str, str]:
    """(run id, seeds, resolution) of one figure's data, or placeholders when it has no record."""
    if r.record is None:
        return "—", "—", "—"
    seeds = io.seeds_text(r.record) + ("" if r.seed_dependent else f" ({SEED_INDEPENDENT})")
    return r.record["run_id"], seeds, str(r.record["resolution"])


#: How the report marks an experiment that declares its compute independent of the seed.
SEED_INDEPENDENT = "seed-independent: computed once"


def _headline(run) -> str:
    """The first line of the warning at the report's top ('' for one complete run)."""
    if not run.problems:
        return ""
    return {
        "in-progress": "IN PROGRESS — incomplete",
        "interrupted": "INTERRUPTED — incomplete",
        "failed": "FAILED — incomplete",
    }.get(run.status, "NOT ONE COMPLETE RUN")


def _environment(run) -> dict | None:
    record = run.record or next((r.record for r in run.results if r.record), None)
    if record is None:
        return None
    return {k: record.get(k) for k in ("versions", "platform", "jax_backend", "jax_config")}


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def report_dict(run) -> dict:
    """The machine-readable report (``report.json``)."""
    return {
        "paper": PAPER,
        "curvdyn_version": __version__,
        "status": run.status,
        "complete": run.complete,
        "problems": list(run.problems),
        "run": run.record,
        "seeds": run.seeds,
        "resolutions": run.resolutions,
        "replot": run.replot,
        "allow_mixed": run.allow_mixed,
        "not_run": list(run.not_run),
        "formats": list(run.formats),
        "started": run.started,
        "wall_time_s": run.wall_time_s,
        "command": run.command,
        "summary": summary_counts(run),
        "experiments": [
            {
                "name": r.name,
                "title": r.title,
                "run_id": r.record["run_id"] if r.record else None,
                "seeds": r.record["seeds"] if r.record else None,
                "resolution": r.record["resolution"] if r.record else None,
                "seed_dependent": r.seed_dependent,
                "record": r.record,
                "timings": r.timings,
                "files": r.files,
                "error": r.error,
                "claims": [c.as_dict() for c in r.claims],
                "by_seed": [{"seed": seed, "claims": [c.as_dict() for c in cs]} for seed, cs in r.by_seed.items()],
                "summary": [st.as_dict() for st in r.stats],
            }
            for r in run.results
        ],
    }


# ---------------------------------------------------------------------------------------
# markdown
# ---------------------------------------------------------------------------------------


def _result_md(run, s: dict) -> str:
    if not run.results:
        return "- **Result:** no figure is finished yet."
    if several_seeds(run):
        return (
            f"- **Result over {s['n_seeds']} seeds:** {s['n_passed']} of {s['n_claims']} claims reproduced"
            + (f", **{s['n_seed_dependent']} seed-dependent**" if s["n_seed_dependent"] else "")
            + (f", **{s['n_failed'] - s['n_seed_dependent']} fail**" if s["n_failed"] - s["n_seed_dependent"] else "")
            + (f", {s['n_deviations']} disagree with the paper (documented below)" if s["n_deviations"] else "")
            + (f"; **{s['n_errors']} experiment(s) raised an error**" if s["n_errors"] else "")
            + ". A claim is reproduced when it passes on every seed (or on the fraction of seeds it states, with "
            "its reason); seed-dependent when it passes on some seeds only."
        )
    return (
        f"- **Result:** {s['n_passed']} of {s['n_claims']} claims pass"
        + (f", **{s['n_failed']} fail**" if s["n_failed"] else "")
        + (f", {s['n_deviations']} disagree with the paper (documented below)" if s["n_deviations"] else "")
        + (f"; **{s['n_errors']} experiment(s) raised an error**" if s["n_errors"] else "")
        + "."
    )


def _claim_rows_md(r, several: bool) -> list[str]:
    lines = []
    for st in r.stats:
        res = st.verdict if st.holds else f"**{st.verdict}**"
        if several:
            lines.append(
                f"| {r.name} | `{st.key}` | {_md_cell(st.statement)} | {passes_text(st)} | "
                f"{format_measured(st.median)} | {spread(st)} | {_md_cell(st.threshold)} | "
                f"{seed_list(st.failing_seeds)} | {res} |"
            )
        else:
            lines.append(
                f"| {r.name} | `{st.key}` | {_md_cell(st.statement)} | {format_measured(st.measured[0])} | "
                f"{_md_cell(st.threshold)} | {res} |"
            )
    return lines


def _measured_text(c: ClaimStats) -> str:
    """The measurement of one claim in words (per seed when there are several)."""
    if c.n_seeds == 1:
        text = f"Measured **{format_measured(c.measured[0])}** (threshold {c.threshold})."
    else:
        text = (
            f"Passes on **{passes_text(c)}** seeds; measured median **{format_measured(c.median)}**, 5–95 % "
            f"{spread(c)} (threshold {c.threshold}); per seed "
            + ", ".join(f"{s}: {format_measured(m)}" for s, m in zip(c.seeds, c.measured))
            + (f"; failing seeds {seed_list(c.failing_seeds)}" if c.failing_seeds else "")
            + "."
        )
        if c.fraction_reason:
            text += f" Reproduced when it passes on {c.min_pass_fraction:.0%} of the seeds: {c.fraction_reason}"
    if c.detail:
        text += f" {c.detail}" + (" (first seed)" if c.n_seeds > 1 else "")
    return text


def _timings_text(t: dict) -> str:
    parts = []
    for k, v in t.items():
        if isinstance(v, list):
            parts.append(
                f"{k.removesuffix('_s').replace('_', ' ')} "
                + ", ".join("—" if x is None else f"{x:.1f}" for x in v)
                + " s"
            )
        elif v is not None:
            parts.append(f"{k.removesuffix('_s')} {v:.2f} s")
    return ", ".join(parts)


def render_markdown(run) -> str:
    s = summary_counts(run)
    several = several_seeds(run)
    lines = ["# Reproduction report — curvdyn", ""]
    if run.problems:
        lines += [f"> **{_headline(run)}.**", ">"] + [f"> - {p}" for p in run.problems] + [""]
    lines += [
        f"Paper: *{PAPER}*. Generated by `curvdyn reproduce` (curvdyn {__version__}).",
        "",
        _result_md(run, s),
        f"- Resolution: {_resolution(run)}; seed{'s' if several else ''}: {_seeds(run)}.",
        f"- Run: {_run_ids(run)}; directory status: {run.status}.",
        f"- Started {run.started} (UTC); total wall time {run.wall_time_s:.1f} s"
        + (" (re-plotted from saved data: compute times are those of the original run)" if run.replot else "")
        + ".",
    ]
    if run.not_run:
        lines.append(f"- Not written by this run: {', '.join(run.not_run)}.")
    if run.command:
        lines.append(f"- Command: `{run.command}`")
    lines += [
        "",
        "## Experiments",
        "",
        "| experiment | title | seed | run | claims passed | compute (s) | plot + claims (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in run.results:
        passed = f"{sum(st.holds for st in r.stats)} / {len(r.stats)}" if r.error is None else "ERROR"
        comp = r.timings.get("compute_s")
        rest = (r.timings.get("plot_s") or 0) + (r.timings.get("claims_s") or 0)
        run_id, seeds, _ = _figure_run(r)
        lines.append(
            f"| [{r.name}](#{r.name.lower()}) | {_md_cell(r.title)} | {seeds} | `{run_id}` | {passed} | "
            f"{'—' if comp is None else f'{comp:.1f}'} | {rest:.1f} |"
        )
    if several:
        header = [
            "| experiment | claim | statement | passes (k/N) | median | 5–95 % | threshold | failing seeds | result |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    else:
        header = ["| experiment | claim | statement | measured | threshold | result |", "|---|---|---|---|---|---|"]
    lines += ["", "## Claims", ""] + header
    for r in run.results:
        lines += _claim_rows_md(r, several)
        if r.error is not None:
            dashes = "— | — | — | — | — |" if several else "— | — |"
            lines.append(f"| {r.name} | — | the experiment raised an error (see below) | {dashes} **ERROR** |")
    failed = [(r, c) for r in run.results for c in r.stats if not c.holds]
    errors = [r for r in run.results if r.error is not None]
    if failed or errors:
        lines += [
            "",
            "## Where the measurements disagree with the paper",
            "",
            "Each of these claims was measured and did not meet its threshold; the numbers are reported as measured.",
            "",
        ]
        for r, c in failed:
            known = f" *Documented deviation:* {c.known_deviation}" if c.known_deviation else ""
            lines.append(
                f"- **{r.name} / `{c.key}`** ({c.verdict}) — {_md_cell(c.statement)} — {failure_note(c)}{known}"
            )
        for r in errors:
            lines.append(f"- **{r.name}** raised an error, so its claims were not measured (traceback below).")
    for r in run.results:
        lines += ["", f"## {r.name}", "", f"**{r.title}**", ""]
        run_id, seeds, resolution = _figure_run(r)
        lines += [f"Data from run `{run_id}`, seed {seeds}, resolution {resolution}.", ""]
        if r.description:
            lines += [r.description, ""]
        png = f"{r.name}/{r.name}.png"
        if png in r.files:
            lines += [f"![{r.name}]({png})", ""]
        spread_png = f"{r.name}/{r.name}-seeds.png"
        if spread_png in r.files:
            lines += [f"Over the seeds {seed_list(r.seeds)}:", "", f"![{r.name} over seeds]({spread_png})", ""]
        if r.error is not None:
            lines += ["The experiment raised an error:", "", "```", r.error.rstrip(), "```", ""]
        if r.stats:
            lines += ["Claims, measured on the saved data:", ""]
            for c in r.stats:
                lines.append(f"- `{c.key}` — **{c.verdict}** — {c.statement} {_measured_text(c)}")
            lines.append("")
        if r.timings:
            t = r.timings
            lines.append("Timings: " + _timings_text(t) + ".")
            lines.append("")
        if r.files:
            lines.append("Files: " + ", ".join(f"[`{f}`]({f})" for f in r.files) + ".")
            lines.append("")
        if r.meta is not None:
            lines += [
                "<details><summary>Configuration (config.json)</summary>",
                "",
                "```json",
                json.dumps(r.meta.get("config"), indent=2, ensure_ascii=False),
                "```",
                "",
                "</details>",
            ]
    env = _environment(run)
    if env:
        lines += ["", "## Environment", "", "```json", json.dumps(env, indent=2), "```"]
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# html
# ---------------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1200px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.pass { color: #176a1c; font-weight: bold; }
.fail { color: #b00020; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 0.7em; overflow-x: auto; font-size: 0.85em; }
code { font-size: 0.92em; }
.note { background: #fff4f4; border-left: 4px solid #b00020; padding: 0.5em 1em; }
"""


def _h(text) -> str:
    return html.escape(str(text))


def render_html(run) -> str:
    s = summary_counts(run)
    several = several_seeds(run)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>curvdyn reproduction report</title><style>{_CSS}</style></head><body>",
        "<h1>Reproduction report — curvdyn</h1>",
    ]
    if run.problems:
        out += [f'<div class="note"><p><b>{_h(_headline(run))}.</b></p><ul>']
        out += [f"<li>{_h(p)}</li>" for p in run.problems]
        out += ["</ul></div>"]
    out += [
        f"<p>Paper: <em>{_h(PAPER)}</em>. Generated by <code>curvdyn reproduce</code> (curvdyn {_h(__version__)}).</p>",
        "<ul>",
        (
            f"<li><b>Result:</b> {s['n_passed']} of {s['n_claims']} claims pass"
            + (f', <span class="fail">{s["n_failed"]} fail</span>' if s["n_failed"] else "")
            + (f", {s['n_deviations']} disagree with the paper (documented below)" if s["n_deviations"] else "")
            + (f'; <span class="fail">{s["n_errors"]} experiment(s) raised an error</span>' if s["n_errors"] else "")
            + ".</li>"
            if run.results and not several
            else f"<li>{_h(_result_md(run, s).removeprefix('- ').replace('**', ''))}</li>"
        ),
        f"<li>Resolution: {_h(_resolution(run))}; seed{'s' if several else ''}: {_h(_seeds(run))}.</li>",
        f"<li>Run: <code>{_h(_run_ids(run))}</code>; directory status: {_h(run.status)}.</li>",
        f"<li>Started {_h(run.started)} (UTC); total wall time {run.wall_time_s:.1f} s"
        + (" (re-plotted from saved data)" if run.replot else "")
        + ".</li>",
    ]
    if run.not_run:
        out.append(f"<li>Not written by this run: {_h(', '.join(run.not_run))}.</li>")
    if run.command:
        out.append(f"<li>Command: <code>{_h(run.command)}</code></li>")
    out += [
        "</ul>",
        "<h2>Experiments</h2>",
        "<table><tr><th>experiment</th><th>title</th><th>seed</th><th>run</th><th>claims passed</th>"
        "<th>compute (s)</th><th>plot + claims (s)</th></tr>",
    ]
    for r in run.results:
        passed = (
            f"{sum(st.holds for st in r.stats)} / {len(r.stats)}"
            if r.error is None
            else '<span class="fail">ERROR</span>'
        )
        comp = r.timings.get("compute_s")
        rest = (r.timings.get("plot_s") or 0) + (r.timings.get("claims_s") or 0)
        run_id, seeds, _ = _figure_run(r)
        out.append(
            f'<tr><td><a href="#{_h(r.name)}">{_h(r.name)}</a></td><td>{_h(r.title)}</td><td>{_h(seeds)}</td>'
            f"<td><code>{_h(run_id)}</code></td><td>{passed}</td>"
            f'<td class="num">{"—" if comp is None else f"{comp:.1f}"}</td><td class="num">{rest:.1f}</td></tr>'
        )
    out += [
        "</table>",
        "<h2>Claims</h2>",
        "<table><tr><th>experiment</th><th>claim</th><th>statement</th>"
        + (
            "<th>passes (k/N)</th><th>median</th><th>5–95 %</th><th>threshold</th><th>failing seeds</th>"
            if several
            else "<th>measured</th><th>threshold</th>"
        )
        + "<th>result</th></tr>",
    ]
    for r in run.results:
        for c in r.stats:
            cls = "pass" if c.holds else "fail"
            cells = (
                f'<td class="num">{passes_text(c)}</td><td class="num">{_h(format_measured(c.median))}</td>'
                f'<td class="num">{_h(spread(c))}</td><td>{_h(c.threshold)}</td><td>{_h(seed_list(c.failing_seeds))}</td>'
                if several
                else f'<td class="num">{_h(format_measured(c.measured[0]))}</td><td>{_h(c.threshold)}</td>'
            )
            out.append(
                f"<tr><td>{_h(r.name)}</td><td><code>{_h(c.key)}</code></td><td>{_h(c.statement)}</td>{cells}"
                f'<td class="{cls}">{c.verdict}</td></tr>'
            )
        if r.error is not None:
            blanks = "<td></td>" * (5 if several else 2)
            out.append(
                f"<tr><td>{_h(r.name)}</td><td>—</td><td>the experiment raised an error</td>{blanks}"
                '<td class="fail">ERROR</td></tr>'
            )
    out.append("</table>")
    failed = [(r, c) for r in run.results for c in r.stats if not c.holds]
    errors = [r for r in run.results if r.error is not None]
    if failed or errors:
        out += ["<h2>Where the measurements disagree with the paper</h2>", '<div class="note"><ul>']
        for r, c in failed:
            known = f" <i>Documented deviation:</i> {_h(c.known_deviation)}" if c.known_deviation else ""
            out.append(
                f"<li><b>{_h(r.name)} / <code>{_h(c.key)}</code></b> ({c.verdict}) — {_h(c.statement)} — "
                f"{_h(failure_note(c))}{known}</li>"
            )
        for r in errors:
            out.append(f"<li><b>{_h(r.name)}</b> raised an error, so its claims were not measured.</li>")
        out.append("</ul></div>")
    for r in run.results:
        run_id, seeds, resolution = _figure_run(r)
        out += [
            f'<h2 id="{_h(r.name)}">{_h(r.name)}</h2>',
            f"<p><b>{_h(r.title)}</b></p>",
            f"<p>Data from run <code>{_h(run_id)}</code>, seed {_h(seeds)}, resolution {_h(resolution)}.</p>",
        ]
        if r.description:
            out.append(f"<p>{_h(r.description)}</p>")
        png = Path(run.out) / r.name / f"{r.name}.png"
        if f"{r.name}/{r.name}.png" in r.files and png.is_file():
            b64 = base64.b64encode(png.read_bytes()).decode("ascii")
            out.append(f'<p><img alt="{_h(r.name)}" src="data:image/png;base64,{b64}"></p>')
        spread_png = Path(run.out) / r.name / f"{r.name}-seeds.png"
        if f"{r.name}/{r.name}-seeds.png" in r.files and spread_png.is_file():
            b64 = base64.b64encode(spread_png.read_bytes()).decode("ascii")
            out.append(f"<p>Over the seeds {_h(seed_list(r.seeds))}:</p>")
            out.append(f'<p><img alt="{_h(r.name)} over seeds" src="data:image/png;base64,{b64}"></p>')
        if r.error is not None:
            out.append(f'<p class="fail">The experiment raised an error:</p><pre>{_h(r.error)}</pre>')
        if r.stats:
            out.append("<p>Claims, measured on the saved data:</p><ul>")
            for c in r.stats:
                cls = "pass" if c.holds else "fail"
                out.append(
                    f'<li><code>{_h(c.key)}</code> — <span class="{cls}">{c.verdict}</span> — {_h(c.statement)} '
                    f"{_h(_measured_text(c).replace('**', ''))}</li>"
                )
            out.append("</ul>")
        if r.timings:
            out.append("<p>Timings: " + _h(_timings_text(r.timings)) + ".</p>")
        if r.files:
            out.append(
                "<p>Files: " + ", ".join(f'<a href="{_h(f)}"><code>{_h(f)}</code></a>' for f in r.files) + ".</p>"
            )
        if r.meta is not None:
            out.append(
                "<details><summary>Configuration (config.json)</summary><pre>"
                + _h(json.dumps(r.meta.get("config"), indent=2, ensure_ascii=False))
                + "</pre></details>"
            )
    env = _environment(run)
    if env:
        out += ["<h2>Environment</h2>", f"<pre>{_h(json.dumps(env, indent=2))}</pre>"]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(run) -> list[Path]:
    """Write ``report.md``, ``report.html`` and ``report.json`` into ``run.out`` (each atomically)."""
    out = Path(run.out)
    paths = [out / "report.md", out / "report.html", out / "report.json"]
    io.write_text(paths[0], render_markdown(run))
    io.write_text(paths[1], render_html(run))
    io.write_json(paths[2], report_dict(run))
    return paths
