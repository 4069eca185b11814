"""A run's statistics as one self-contained HTML page: tables, figures, and the stats as JSON.

`render_report` takes what `curate.stats.metrics`, `curate.stats.calibrate` and `curate.stats.compare` compute (the
`stats` dict, the per-item frame, a reliability table, a run comparison) and returns one HTML page
that needs nothing else: figures are PNGs drawn with matplotlib's `Figure` (Agg canvas, no pyplot
global state) embedded as base64 data URIs, styling is inline CSS, and the stats dict itself is
embedded as JSON in `<script type="application/json" id="stats">` for machines to read back (with
the comparison under "comparison" when there is one). A comparison's page names both runs.
No network reference (script, font, stylesheet) appears in the page.

Figures, each skipped with a "not available: why" line when its data is missing:
    1 score histogram      integer scores 1..5 as they are; other scores rounded half up beside a
                           continuous histogram (alone when scores leave 1..5)
    2 scores by domain     box plots, the largest MAX_DOMAINS domains (needs ≥ 2 domains)
    3 reference confusion  rows = reference label, columns = rounded score, counts in cells
    4 score vs pass rate   items (jittered) and the mean pass rate per rounded score
    5 reliability diagram  mean predicted vs mean target per bin, the diagonal, counts per bin
    6 run shift matrix     rows = run A's rounded score, columns = run B's (plus a τ churn table)
    7 score vs IRT         items' Rasch difficulty (± 1 standard error) against their score; items
                           every model solved or none did (difficulty from the prior) drawn apart; the
                           caption points to every item's difficulty in the JSON (irt.items)
Missing statistics are shown as "undefined", never as a number; `notes` from every part are listed.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from curate.files import write_atomic
from curate.stats.metrics import (
    LABELS,
    SCORE_MAX,
    SCORE_MIN,
    all_notes,
    format_interval,
    round_score,
)

MAX_DOMAINS = 15
SECTIONS = ("run", "score", "distribution", "failures", "self_consistency", "reference", "pass_rate", "irt",
            "calibration")
CSS = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;border:1px solid #eee}
p.cap{color:#555;font-size:.9em;margin:.3em 0 1.5em}p.na{color:#a33;font-style:italic}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}"""
FIGURES = ("Item score histogram", "Item scores by domain", "Confusion matrix against the reference",
           "Score vs pass rate", "Reliability diagram of the calibration", "Run A vs run B: shift of rounded scores",
           "Score vs IRT difficulty")
STATISTICS = {"spearman": "Spearman ρ", "kendall": "Kendall τ-b", "qwk": "quadratic κ", "auroc": "AUROC (unsolved)",
              "alpha": "Krippendorff α (ordinal)", "spearman_with_extremes": "Spearman ρ, all right/wrong items too"}
IRT_COLORS = {"measured": "#4878a8", "all_correct": "#999999", "all_wrong": "#c0392b"}
esc = html.escape


def _num(value: Any, digits: int = 2) -> str:
    return "undefined" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="n">{esc(_num(c))}</td>' if isinstance(c, int | float) else
                                    f"<td>{esc(_num(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG, with no software stamp, so the same figure gives the same bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _png(fig: Figure) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig)).decode("ascii")


def _figure(number: int, heading: str, fig: Figure | str, caption: str) -> str:
    """A figure block, or a "not available" line when `fig` is a string saying why."""
    head = f"<h3>Figure {number}. {esc(heading)}</h3>"
    return head + (f'<p class="na">not available: {esc(fig)}</p>' if isinstance(fig, str) else
                   f'<img src="{_png(fig)}" alt="{esc(heading)}"><p class="cap">{esc(caption)}</p>')


def _scores(items: pl.DataFrame, *columns: str) -> pl.DataFrame | None:
    """The score and `columns` of the items where all are present; None when a column is missing."""
    return items.select("score", *columns).drop_nulls() if {"score", *columns} <= set(items.columns) else None


def _heatmap(matrix: list[list[int]], labels: list[Any], ylabel: str, xlabel: str) -> Figure:
    counts = np.asarray(matrix, dtype=float)
    fig = Figure(figsize=(5.2, 4.2), layout="constrained")
    ax = fig.add_subplot()
    top = max(float(counts.max()), 1.0)
    image = ax.imshow(counts, cmap="Blues", vmin=0, vmax=top)
    ax.set_xticks(range(counts.shape[1]), [str(v) for v in labels[:counts.shape[1]]])
    ax.set_yticks(range(counts.shape[0]), [str(v) for v in labels[:counts.shape[0]]])
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, f"{int(value)}", ha="center", va="center", color="white" if value > 0.6 * top else "black")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    fig.colorbar(image, ax=ax, label="items")
    return fig


def histogram_figure(items: pl.DataFrame, score: str) -> tuple[Figure | str, str]:
    """Bars of the scores when they are integers 1..5; of the rounded scores beside a continuous
    histogram when they are not; the continuous histogram alone when they leave 1..5."""
    data = _scores(items)
    if data is None or data.height == 0:
        return "no item scores", ""
    values = data["score"].to_numpy()
    in_range = bool(values.min() >= SCORE_MIN and values.max() <= SCORE_MAX)
    fine = not in_range or not np.allclose(values, np.round(values))
    fig = Figure(figsize=(4.6 * (in_range + fine), 3.4), layout="constrained")
    axes = list(fig.subplots(1, in_range + fine, squeeze=False)[0])
    caption = f"{len(values)} items, {score} score; "
    if in_range:
        ax, rounded = axes.pop(0), round_score(values)
        ax.bar_label(ax.bar(LABELS, [int((rounded == k).sum()) for k in LABELS], color="#4878a8"), fontsize=8)
        ax.set(xticks=LABELS, ylabel="items")
        if fine:
            ax.set(xlabel=f"{score} score rounded half up", title="rounded")
            caption += f"left: rounded half up to {SCORE_MIN}..{SCORE_MAX}; right: continuous, 32 bins"
        else:
            ax.set(xlabel=f"{score} score")
            caption += "every score is an integer, counted as it is (no rounding)"
        ax.margins(y=0.12)
    else:
        caption += f"scores leave {SCORE_MIN}..{SCORE_MAX}, so no rounded bars; continuous, 32 bins"
    if fine:
        low, high = (SCORE_MIN, SCORE_MAX) if in_range else (float(values.min()), float(values.max()))
        axes[0].hist(values, bins=np.linspace(low, high + (high == low), 33), color="#6a9fcf", edgecolor="white")
        axes[0].set(xlabel=f"{score} score", ylabel="items", title="continuous")
    return fig, caption + "."


def domain_figure(items: pl.DataFrame) -> tuple[Figure | str, str]:
    data = _scores(items, "domain")
    if data is None:
        return "items have no domain column", ""
    counts = data.group_by("domain").len().sort(["len", "domain"], descending=[True, False])
    if counts.height < 2:
        return f"{counts.height} domain(s) among the scored items, need 2", ""
    names = counts.head(MAX_DOMAINS)["domain"].to_list()[::-1]  # largest at the top
    groups = [data.filter(pl.col("domain") == name)["score"].to_numpy() for name in names]
    fig = Figure(figsize=(7.5, 1.2 + 0.38 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    ax.boxplot(groups, orientation="horizontal", widths=0.6, medianprops={"color": "#c0392b"})
    ax.set_yticks(range(1, len(names) + 1), [f"{str(n)[:30]} (n={len(g)})" for n, g in zip(names, groups)])
    ax.set(xlabel="item score")
    ax.grid(axis="x", alpha=0.3)
    more = f"the largest {MAX_DOMAINS} of " * (counts.height > MAX_DOMAINS) + f"{counts.height} domains"
    return fig, f"Item scores per domain, {more}; box = quartiles, red line = median, whiskers = 1.5 IQR."


def reference_figure(reference: dict[str, Any] | None) -> tuple[Figure | str, str]:
    if not reference:
        return "no reference field in this run", ""
    if reference.get("confusion_matrix") is None:
        return "; ".join(n for n in reference.get("notes", []) if "confusion" in n) or "no confusion matrix", ""
    field = reference.get("field") or "reference"
    fig = _heatmap(reference["confusion_matrix"], reference["labels"], f"reference ({field})", "rounded score")
    return fig, (f"{reference['n']} items; rows = {field}, columns = rounded score; quadratic κ "
                 f"{format_interval(reference.get('qwk'))}, Spearman {format_interval(reference.get('spearman'))}.")


def pass_rate_figure(items: pl.DataFrame, pass_rate: dict[str, Any] | None) -> tuple[Figure | str, str]:
    data = _scores(items, "pass_rate")
    if data is None or data.height == 0:
        return "items have no pass_rate", ""
    x, rate = data["score"].to_numpy(), data["pass_rate"].to_numpy()
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    jitter = np.random.default_rng(0).uniform(-0.08, 0.08, len(x))
    ax.scatter(x + jitter, rate, s=10, alpha=0.3, color="#4878a8", label="items (x jittered)")
    if x.min() >= SCORE_MIN and x.max() <= SCORE_MAX:
        rounded = round_score(x)
        present = [k for k in LABELS if (rounded == k).any()]
        ax.plot(present, [rate[rounded == k].mean() for k in present], "o-", color="#c0392b",
                label="mean pass rate per rounded score")
    ax.set(xlabel="item score", ylabel=f"pass rate ({(pass_rate or {}).get('field') or 'pass_rate'})",
           ylim=(-0.05, 1.05))
    fig.legend(loc="outside upper center", ncols=2, fontsize=8, frameon=False)
    caption = f"{len(x)} items."
    if noise := (pass_rate or {}).get("noise"):
        caption += (f" Pass rates from {pass_rate['field']}: mean 95% Wilson interval width "
                    f"{_num(noise['mean_interval_width'])} at a median {noise['attempts_median']:g} attempts per item.")
    if pass_rate:
        caption += (f" Spearman {format_interval(pass_rate.get('spearman'))}; AUROC for unsolved "
                    f"(pass rate ≤ {pass_rate.get('unsolved_at')}) {format_interval(pass_rate.get('auroc'))}.")
    return fig, caption


def irt_figure(items: pl.DataFrame, irt: dict[str, Any] | None) -> tuple[Figure | str, str]:
    data = _scores(items, "irt_difficulty", "irt_se", "irt_status")
    if not irt or data is None or data.height == 0:
        return "no IRT difficulties in this run (curate stats --irt SOLVE_RUN --irt SOLVE_RUN)", ""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    data = data.with_columns(pl.col("score") + np.random.default_rng(0).uniform(-0.08, 0.08, data.height))
    for (status,), group in data.group_by("irt_status", maintain_order=True):
        label = "measured" if status == "measured" else f"{status.replace('_', ' ')} (prior)"
        ax.errorbar(group["score"], group["irt_difficulty"], yerr=group["irt_se"], fmt="o", ms=3, alpha=0.5,
                    color=IRT_COLORS[status], label=label)
    ax.set(xlabel="item score", ylabel="IRT difficulty (logits, ± 1 s.e.)")
    fig.legend(loc="outside upper center", ncols=3, fontsize=8, frameon=False)
    listed = (f" Every item of the crowd ({len(irt['items'])}, scored or not) is in the stats JSON under irt.items, "
              "with its difficulty, 95% interval and status." if irt.get("items") else "")
    return fig, (f"{data.height} items, {len(irt.get('models', []))} models; Spearman over measured items "
                 f"{format_interval(irt.get('spearman'))}, with all right/wrong items "
                 f"{format_interval(irt.get('spearman_with_extremes'))}.{listed}")


def reliability_figure(reliability: pl.DataFrame | None, calibration: dict[str, Any] | None
                       ) -> tuple[Figure | str, str]:
    if reliability is None:
        return "no calibration in this run", ""
    rows = reliability.filter(pl.col("n") > 0)
    if rows.height == 0:
        return "the reliability table has no items", ""
    predicted, target = rows["mean_predicted"].to_numpy(), rows["mean_target"].to_numpy()
    fig = Figure(figsize=(6.0, 5.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    edges = np.concatenate([reliability["bin_low"].to_numpy(), reliability["bin_high"].to_numpy(), target])
    low, high = float(np.nanmin(edges)), float(np.nanmax(edges))
    top.plot([low, high], [low, high], "--", color="grey", label="perfect calibration")
    top.plot(predicted, target, "o-", color="#c0392b", label="bins")
    top.set(ylabel=f"mean {(calibration or {}).get('target') or 'target'}")
    fig.legend(loc="outside upper center", ncols=2, fontsize=8, frameon=False)
    width = (rows["bin_high"] - rows["bin_low"]).to_numpy()
    centres = (rows["bin_low"] + rows["bin_high"]).to_numpy() / 2
    bars = bottom.bar(centres, rows["n"].to_numpy(), width=np.where(width > 0, width * 0.9, (high - low) / 20 or 0.1),
                      color="#6a9fcf")
    bottom.bar_label(bars, fontsize=7)
    bottom.margins(y=0.25)
    bottom.set(xlabel="mean calibrated value (predicted)", ylabel="items")
    return fig, (f"{reliability.height} equal-width bins ({rows.height} non-empty), {int(rows['n'].sum())} items; "
                 "points on the dashed diagonal are calibrated; bottom: items per bin.")


def shift_figure(comparison: dict[str, Any] | None) -> tuple[Figure | str, str]:
    if not comparison:
        return "not a run comparison", ""
    if not comparison.get("n_common"):
        return "no items scored in both runs", ""
    if comparison.get("shift_matrix") is None:
        return "no shift matrix: the runs' scores are not both on the 1..5 scale (a pairs run's strengths)", ""
    fig = _heatmap(comparison["shift_matrix"], comparison["labels"], "run A rounded score", "run B rounded score")
    return fig, (f"{comparison['n_common']} items scored in both runs; diagonal = unchanged; mean shift B − A "
                 f"{_num(comparison.get('mean_shift'), 3)}.")


def _headline_rows(stats: dict[str, Any], comparison: dict[str, Any] | None) -> list[list[Any]]:
    rows = []
    sources = [("reference", stats.get("reference"), ("spearman", "kendall", "qwk"), "n"),
               ("pass rate", stats.get("pass_rate"), ("spearman", "auroc"), "n"),
               ("IRT difficulty", stats.get("irt"), ("spearman", "spearman_with_extremes"), ("n_measured", "n")),
               ("self-consistency", stats.get("self_consistency"), ("alpha",), "n_units"),
               ("run A vs B", comparison, ("spearman", "alpha", "qwk"), "n_common")]
    for source, part, keys, n_key in sources:
        if part:
            field = f" ({part['field']})" if part.get("field") else ""
            n_keys = n_key if isinstance(n_key, tuple) else (n_key,) * len(keys)
            rows += [[source + field, STATISTICS[k], format_interval(part.get(k)), part.get(n)]
                     for k, n in zip(keys, n_keys, strict=True)]
    return rows


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic | Path):
        return value.item() if isinstance(value, np.generic) else str(value)
    raise TypeError(f"stats hold a {type(value).__name__}, which is not JSON")


def _json_block(stats: dict[str, Any]) -> str:
    text = json.dumps(stats, default=_jsonable, allow_nan=False, indent=1)
    text = text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")  # cannot close the tag
    return f'<script type="application/json" id="stats">{text}</script>'


def _row(part: dict[str, Any], *keys: str) -> list[Any]:
    return [part.get(k) for k in keys]


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def _runs(stats: dict[str, Any], comparison: dict[str, Any] | None) -> list[str]:
    """The identity of the run, or of both runs compared."""
    if comparison and comparison.get("run_a") and comparison.get("run_b"):
        a, b = comparison["run_a"], comparison["run_b"]
        return ["<h2>Runs compared</h2>", _table(["field", "run A", "run B"], [
            [k, _cell(a.get(k)), _cell(b.get(k))] for k in dict.fromkeys([*a, *b])])]
    if stats.get("run"):
        return ["<h2>Run</h2>", _table(["field", "value"], [[k, _cell(v)] for k, v in stats["run"].items()])]
    return []


def _summary(stats: dict[str, Any], items: pl.DataFrame, comparison: dict[str, Any] | None) -> list[str]:
    runs = _runs(stats, comparison)
    absent = [k for k in SECTIONS if stats.get(k) is None and not (k == "run" and runs)]
    out = [f'<p class="na">absent from these stats: {esc(", ".join(absent))}</p>'] if absent else []
    out += runs
    out.append(f"<p>Item score used: <b>{esc(str(stats.get('score') or 'undefined'))}</b></p>")
    if dist := stats.get("distribution"):
        out.append(_table(["scored items", "mean", "std"], [_row(dist, "n", "mean", "std")]))
    if fail := stats.get("failures"):
        fractions = fail.get("fractions") or {}
        out += ["<h2>Failures by kind</h2>", _table(["status", "judgments", "fraction"], [
            [k, c, fractions.get(k)] for k, c in fail.get("counts", {}).items()]),
            f"<p>{fail.get('n_failed')} of {fail.get('n_judgments')} judgments failed; "
            f"{fail.get('n_items_without_ok')} of {fail.get('n_items')} items have no ok judgment.</p>"]
    if consistency := stats.get("self_consistency"):
        out += ["<h2>Self-consistency</h2>", _table(
            ["units", "units with identical samples", "coders", "mean item std", "mean logprob entropy"],
            [_row(consistency, "n_units", "n_identical_units", "n_coders", "mean_item_std", "mean_entropy")])]
    if calibration := stats.get("calibration"):
        values = items["calibrated"].drop_nulls() if "calibrated" in items.columns else pl.Series([], dtype=pl.Float64)
        spread = f"{values.min():.3g} .. {values.max():.3g} (mean {values.mean():.3g})" if values.len() else None
        out += ["<h2>Calibration</h2>", _table(["target", "score", "fitted on", "increasing", "calibrated items"], [
            [*_row(calibration, "target", "score", "n_fit", "increasing"), spread]])]
    return out


def render_report(stats: dict, items: pl.DataFrame, reliability: pl.DataFrame | None = None,
                  comparison: dict | None = None, title: str = "dereason run report") -> str:
    """One self-contained HTML page (images embedded as base64 PNG data URIs) + the stats as JSON
    inside a <script type="application/json" id="stats"> block."""
    score = stats.get("score") or "item"
    body = [f"<h1>{esc(title)}</h1>", *_summary(stats, items, comparison), "<h2>Headline numbers (95% intervals)</h2>"]
    headline = _headline_rows(stats, comparison)
    body.append(_table(["compared with", "statistic", "value [95% interval]", "n"], headline) if headline else
                '<p class="na">not available: no reference, pass rate, self-consistency or comparison</p>')
    figures = [histogram_figure(items, score), domain_figure(items), reference_figure(stats.get("reference")),
               pass_rate_figure(items, stats.get("pass_rate")),
               reliability_figure(reliability, stats.get("calibration")), shift_figure(comparison),
               irt_figure(items, stats.get("irt"))]
    body += ["<h2>Figures</h2>", *(_figure(i, heading, fig, caption)
                                   for i, (heading, (fig, caption)) in enumerate(zip(FIGURES, figures), 1))]
    if comparison:
        body += ["<h2>Run comparison</h2>", _table(["items in both", "only in A", "only in B", "mean shift B − A"], [
            _row(comparison, "n_common", "n_only_a", "n_only_b", "mean_shift")]), "<h3>SFT/RL churn per τ</h3>",
            _table(["τ", "SFT → RL", "RL → SFT", "changed", "fraction"], [
                _row(c, "tau", "sft_to_rl", "rl_to_sft", "changed", "fraction") for c in comparison.get("churn", [])])]
    notes = all_notes(stats) + [f"comparison: {note}" for note in all_notes(comparison or {})]
    if notes:
        body += ["<h2>Notes</h2><ul>", *(f"<li>{esc(str(n))}</li>" for n in notes), "</ul>"]
    embedded = stats if comparison is None else {**stats, "comparison": comparison}
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + f"\n{_json_block(embedded)}\n</body></html>\n")


def write_report(path: str | Path, html: str) -> None:
    """Write the page atomically (a temporary file in the same directory, then a rename)."""
    write_atomic(Path(path), html)
