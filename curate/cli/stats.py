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
from curate.cli.flags import settings_command
from curate.command_config import CompareConfig, StatsConfig
from curate.errors import ConfigError
from curate.files import write_atomic
from curate.outdir import check_report_files


def _check_report_path(report: Path | None) -> None:
    """Refuse, before any work, a --report that cannot become an HTML file with its .json beside it."""
    if report is None:
        return
    if report.is_dir():
        raise ConfigError(f"--report {report} is a folder; name the HTML file to write, e.g. {report / 'report.html'}")
    if report.suffix == ".json":
        raise ConfigError(f"--report {report}: name the HTML file (e.g. report.html); its statistics are written "
                          "beside it as .json")
    blocking = next((parent for parent in report.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"--report {report}: {blocking} is a file, not a folder; write the report elsewhere")
    check_report_files("--report", report)


def _write_report(report: Path, page: str, data: dict[str, Any]) -> None:
    """The page and its statistics as JSON beside it, creating the folder when it does not exist."""
    from curate.stats.report import write_report

    report.parent.mkdir(parents=True, exist_ok=True)
    write_report(report, page)
    write_atomic(report.with_suffix(".json"), json.dumps(data, indent=2, sort_keys=True, default=str))


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        err.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)


def _print_stats(stats: dict[str, Any]) -> None:
    from curate.stats.metrics import (  # scipy and scikit-learn: only for the commands that need them
        all_notes,
        format_interval,
    )

    run = stats["run"]
    table = Table(title=f"Run {run['run_dir']} — item score: {stats['score']}", show_header=False)
    table.add_row("judge", f"{run['model']} · {run['template']} · {run['samples']} sample(s)")
    table.add_row("items scored", f"{run['n_scored']} of {run['n_items']}")
    distribution = stats["distribution"]
    if distribution["histogram"] is None:
        table.add_row("item scores", f"mean {distribution['mean']:.3f}, std {distribution['std']:.3f}"
                      if distribution["std"] is not None else "n/a")
    else:
        table.add_row(f"items per {distribution['histogram_of']}", "")
        for level, count in distribution["histogram"].items():
            table.add_row(f"  {level}", f"{count:>6}")
    failures = stats["failures"]
    table.add_row("failures", ", ".join(f"{k} {v}" for k, v in failures.get("counts", {}).items()) or "n/a")
    consistency = stats["self_consistency"]
    if pairs := stats.get("pairs"):
        agreement, bias = consistency["order_agreement"], pairs["position_bias"]
        table.add_row("comparisons", f"{pairs['comparisons']} ({pairs['comparisons_per_item']} per item; "
                                     f"{pairs['soft_outcomes']} soft, {pairs['hard_outcomes']} 0/1)")
        table.add_row("both orders agree", "n/a" if agreement["fraction"] is None else
                      f"{agreement['agree']} of {agreement['pairs']} pairs ({agreement['fraction']:.1%})")
        if bias is not None:
            table.add_row("position bias δ (logits)", format_interval(bias, digits=3)
                          + f"; mean P(first harder) {pairs['mean_p_first']:.3f}")
        table.add_row("items by fit status", ", ".join(f"{k.replace('_', ' ')} {v}"
                                                        for k, v in pairs["bt_status_counts"].items()))
    table.add_row("self-consistency α (ordinal)", format_interval(consistency.get("alpha"), digits=3))
    if consistency.get("mean_item_std") is not None:
        table.add_row("mean per-item std", f"{consistency['mean_item_std']:.3f}")
    if consistency.get("mean_entropy") is not None:
        table.add_row("mean logprob entropy", f"{consistency['mean_entropy']:.3f}")
    if mass := consistency.get("score_mass"):
        for method, part in {"all": mass, **mass["by_method"]}.items():
            table.add_row(f"probability on score tokens ({method}, {part['n']})",
                          f"median {part['median']:.3f}, quartiles {part['q25']:.3f}–{part['q75']:.3f}, "
                          f"5% {part['q05']:.3f}, min {part['min']:.3f}")
    if stats["reference"]:
        ref = stats["reference"]
        table.add_row(f"vs {ref['field']}: Spearman", format_interval(ref.get("spearman"), digits=3))
        table.add_row(f"vs {ref['field']}: Kendall τ-b", format_interval(ref.get("kendall"), digits=3))
        table.add_row(f"vs {ref['field']}: quadratic κ", format_interval(ref.get("qwk"), digits=3))
    if stats["pass_rate"]:
        rate = stats["pass_rate"]
        table.add_row(f"vs {rate['field']}: Spearman", format_interval(rate.get("spearman"), digits=3))
        table.add_row(f"AUROC for not solved ({rate.get('n_unsolved')} of {rate.get('n')})",
                      format_interval(rate.get("auroc"), digits=3))
        if rate["source"] == "solve_run":
            table.add_row("items joined", f"{rate['n']} · scored only {rate['n_judged_only']} · measured only "
                                          f"{rate['n_solved_only']}")
            noise = rate["noise"]
            table.add_row("pass-rate noise", f"mean 95% Wilson width {noise['mean_interval_width']:.3f} "
                                             f"({noise['attempts_median']:g} attempts per item, median)")
    if stats["irt"]:
        irt = stats["irt"]
        table.add_row(f"vs IRT difficulty ({len(irt['models'])} models): Spearman",
                      format_interval(irt.get("spearman"), digits=3))
        table.add_row("  with all right / all wrong items",
                      format_interval(irt.get("spearman_with_extremes"), digits=3))
        table.add_row("IRT items scored here", f"{irt['n']} · measured {irt['n_measured']} · all right "
                                               f"{irt['n_all_correct']} · all wrong {irt['n_all_wrong']} (difficulty "
                                               "from the prior)")
        crowd = irt["crowd"]
        table.add_row(f"IRT items of the crowd ({crowd['items']})",
                      " · ".join(f"{status.replace('_', ' ')} {count}" for status, count in crowd["counts"].items()))
        fit = irt["fit"]
        table.add_row("IRT fit", f"{'converged' if fit['converged'] else 'did not converge'} in {fit['iterations']} "
                                 f"iterations; {fit['identification']}")
        if irt["irt_dir"]:
            table.add_row("IRT difficulties", irt["irt_dir"])
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
    _print_notes(all_notes(stats))


@settings_command(StatsConfig)
def stats(
    run_dir: Annotated[Path, typer.Argument(help="Run directory made by `curate score` (a judge run) or `curate "
                                                 "pairs`.")],
    irt_out: Annotated[Path | None, typer.Option(
        help="Write the --irt fit here as an IRT directory (irt_items.parquet: every item's difficulty, its 95% "
             "interval and status; irt_models.parquet; manifest.json), as `curate irt` does.",
        show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty --irt-out folder.")] \
        = False,
    report: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report here.",
                                                show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
    *, settings: StatsConfig,
) -> None:
    """Calibration statistics of a run: distribution, failures, self-consistency, agreement."""
    with errors():
        from curate.stats.analysis import analyze_run

        _check_report_path(report)
        analysis = analyze_run(run_dir, settings, irt_out=irt_out, overwrite=overwrite)
        if report is not None:
            from curate.stats.report import render_report

            _write_report(report, render_report(analysis.stats, analysis.items, analysis.reliability,
                                                title=f"dereason · {run_dir}"), analysis.stats)
        if as_json:
            print(json.dumps(analysis.stats, sort_keys=True, default=str))
        else:
            _print_stats(analysis.stats)
            if report is not None:
                out.print(f"report: {report}")


@settings_command(CompareConfig)
def compare(
    run_a: Annotated[Path, typer.Argument(help="First run directory.")],
    run_b: Annotated[Path, typer.Argument(help="Second run directory (same items, another template/judge/sampling).")],
    report: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report here.",
                                                show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
    *, settings: CompareConfig,
) -> None:
    """How two runs over the same items differ: agreement, shift matrix, SFT/RL churn per τ."""
    with errors():
        from curate.stats.analysis import analyze_comparison
        from curate.stats.metrics import all_notes, format_interval

        _check_report_path(report)
        result = analyze_comparison(run_a, run_b, settings)
        if report is not None:
            from curate.stats.report import render_report

            empty = pl.DataFrame(schema={"item_id": pl.String, "score": pl.Float64})
            _write_report(report, render_report({"score": result["score"]}, empty, comparison=result,
                                                title=f"dereason · {run_a} vs {run_b}"), result)
        if as_json:
            print(json.dumps(result, sort_keys=True, default=str))
            return
        if result["shift_matrix"] is not None:
            table = Table(title=f"{run_a} (rows) vs {run_b} (columns), {result['n_common']} items scored in both",
                          show_header=True)
            table.add_column("A \\ B")
            for label in range(1, 6):
                table.add_column(str(label))
            for label, row in enumerate(result["shift_matrix"], start=1):
                table.add_row(str(label), *(str(v) for v in row))
            out.print(table)
        out.print(f"{result['n_common']} items scored in both · scored only in A: {result['n_only_a']} · scored only "
                  f"in B: {result['n_only_b']} (A: {result['score']}, B: {result['score_b']})")
        shift = result.get("mean_shift")
        out.print(f"Spearman {format_interval(result.get('spearman'), digits=3)} · "
                  f"α (ordinal) {format_interval(result.get('alpha'), digits=3)} · "
                  f"quadratic κ {format_interval(result.get('qwk'), digits=3)} · "
                  f"mean shift (B − A) {'n/a' if shift is None else f'{shift:+.3f}'}")
        if result["churn"]:
            churn = Table("τ", "SFT→RL", "RL→SFT", "changed", "fraction", title="items changing side (SFT: score ≤ τ)")
            for row in result["churn"]:
                churn.add_row(str(row["tau"]), str(row["sft_to_rl"]), str(row["rl_to_sft"]), str(row["changed"]),
                              f"{row['fraction']:.1%}" if row["fraction"] is not None else "n/a")
            out.print(churn)
        if report is not None:
            out.print(f"report: {report}")
        _print_notes(all_notes(result))
