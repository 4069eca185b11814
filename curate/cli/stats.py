"""`curate stats` and `curate compare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.markup import escape
from rich.table import Table

from curate.cli.common import err, errors, out
from curate.store import write_atomic


def _print_stats(stats: dict[str, Any]) -> None:
    from curate.stats import format_interval  # scipy and scikit-learn: only for the commands that need them

    run = stats["run"]
    table = Table(title=f"Run {run['run_dir']} — item score: {stats['score']}", show_header=False)
    table.add_row("judge", f"{run['model']} · {run['template']} · {run['samples']} sample(s)")
    table.add_row("items scored", f"{run['n_scored']} of {run['n_items']}")
    distribution = stats["distribution"]
    for level, count in distribution["histogram"].items():
        table.add_row(f"score {level}", f"{count:>6}")
    failures = stats["failures"]
    table.add_row("failures", ", ".join(f"{k} {v}" for k, v in failures.get("counts", {}).items()) or "n/a")
    consistency = stats["self_consistency"]
    table.add_row("self-consistency α (ordinal)", format_interval(consistency.get("alpha"), digits=3))
    if consistency.get("mean_item_std") is not None:
        table.add_row("mean per-item std", f"{consistency['mean_item_std']:.3f}")
    if consistency.get("mean_entropy") is not None:
        table.add_row("mean logprob entropy", f"{consistency['mean_entropy']:.3f}")
    if stats["reference"]:
        ref = stats["reference"]
        table.add_row(f"vs {ref['field']}: Spearman", format_interval(ref.get("spearman"), digits=3))
        table.add_row(f"vs {ref['field']}: Kendall τ-b", format_interval(ref.get("kendall"), digits=3))
        table.add_row(f"vs {ref['field']}: quadratic κ", format_interval(ref.get("qwk"), digits=3))
    if stats["pass_rate"]:
        rate = stats["pass_rate"]
        table.add_row(f"vs {rate['field']}: Spearman", format_interval(rate.get("spearman"), digits=3))
        table.add_row(f"AUROC for not solved ({rate.get('n_unsolved')} of {rate.get('n')})", format_interval(rate.get("auroc"), digits=3))
    if stats["calibration"]:
        cal = stats["calibration"]
        table.add_row("calibration", f"isotonic onto {cal['target']} from {cal['n_fit']} items → {cal['path']}")
    out.print(table)
    if stats["reference"] and stats["reference"].get("confusion_matrix"):
        ref = stats["reference"]
        labels = [str(label) for label in ref.get("labels", range(1, 6))]
        matrix = Table(f"{ref['field']} \\ score", *labels, title="confusion matrix (rows: reference)")
        for label, row in zip(labels, ref["confusion_matrix"], strict=False):
            matrix.add_row(label, *(str(v) for v in row))
        out.print(matrix)
    notes = [n for part in ("distribution", "failures", "self_consistency", "reference", "pass_rate")
             for n in ((stats.get(part) or {}).get("notes") or [])] + stats["notes"]
    for note in notes:
        err.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)


def stats(
    run_dir: Annotated[Path, typer.Argument(help="Run directory made by `curate score`.")],
    reference: Annotated[str | None, typer.Option(help="Input field with a reference difficulty label (e.g. level).")] = None,
    pass_rate: Annotated[str | None, typer.Option(help="Input field with a measured pass rate (0..1).")] = None,
    score_column: Annotated[str, typer.Option("--score", help="Item score: mean, median or expected.")] = "mean",
    calibrate: Annotated[str | None, typer.Option(
        help="Fit an isotonic map from the item score onto this field and save it with the run.")] = None,
    unsolved_at: Annotated[float, typer.Option(help="Pass rate at or below which an item counts as not solved.")] = 0.0,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals (0: none).")] = 1000,
    report: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
) -> None:
    """Calibration statistics of a run: distribution, failures, self-consistency, agreement."""
    with errors():
        from curate.analysis import analyze_run

        analysis = analyze_run(run_dir, score=score_column, reference=reference, pass_rate=pass_rate,
                               calibrate=calibrate, unsolved_at=unsolved_at, n_resamples=resamples)
        if report is not None:
            from curate.report import render_report, write_report

            write_report(report, render_report(analysis.stats, analysis.items, analysis.reliability,
                                               title=f"dereason · {run_dir}"))
            write_atomic(report.with_suffix(".json"), json.dumps(analysis.stats, indent=2, sort_keys=True, default=str))
        if as_json:
            print(json.dumps(analysis.stats, sort_keys=True, default=str))
        else:
            _print_stats(analysis.stats)
            if report is not None:
                out.print(f"report: {report}")


def compare(
    run_a: Annotated[Path, typer.Argument(help="First run directory.")],
    run_b: Annotated[Path, typer.Argument(help="Second run directory (same items, another template/judge/sampling).")],
    score_column: Annotated[str, typer.Option("--score", help="Item score: mean, median or expected.")] = "mean",
    report: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """How two runs over the same items differ: agreement, shift matrix, SFT/RL churn per τ."""
    with errors():
        from curate.analysis import analyze_comparison
        from curate.stats import format_interval

        result = analyze_comparison(run_a, run_b, score=score_column)
        if report is not None:
            from curate.report import render_report, write_report

            stats = {"run": result["run_a"], "score": score_column, "notes": result.get("notes", [])}
            write_report(report, render_report(stats, pl.DataFrame({"item_id": [], "score": []},
                                                                   schema={"item_id": pl.String, "score": pl.Float64}),
                                               comparison=result, title=f"dereason · {run_a} vs {run_b}"))
            write_atomic(report.with_suffix(".json"), json.dumps(result, indent=2, sort_keys=True, default=str))
        if as_json:
            print(json.dumps(result, sort_keys=True, default=str))
            return
        table = Table(title=f"{run_a} (rows) vs {run_b} (columns), {result['n_common']} common items", show_header=True)
        table.add_column("A \\ B")
        for label in range(1, 6):
            table.add_column(str(label))
        for label, row in enumerate(result["shift_matrix"], start=1):
            table.add_row(str(label), *(str(v) for v in row))
        out.print(table)
        shift = result.get("mean_shift")
        out.print(f"α (ordinal) {format_interval(result.get('alpha'), digits=3)} · quadratic κ {format_interval(result.get('qwk'), digits=3)} · "
                  f"mean shift (B − A) {'n/a' if shift is None else f'{shift:+.3f}'}")
        churn = Table("τ", "SFT→RL", "RL→SFT", "changed", "fraction", title="items changing side (SFT: score ≤ τ)")
        for row in result["churn"]:
            churn.add_row(str(row["tau"]), str(row["sft_to_rl"]), str(row["rl_to_sft"]), str(row["changed"]),
                          f"{row['fraction']:.1%}" if row["fraction"] is not None else "n/a")
        out.print(churn)
