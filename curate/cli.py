"""`curate` command line: it prints (progress bars, tables); the library only logs."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from curate.config import SECTIONS, ScoreConfig, read_job_file
from curate.errors import ConfigError, DereasonError, FailureThresholdError
from curate.store import write_atomic

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Difficulty-aware curation of reasoning data.")
out = Console()
err = Console(stderr=True, soft_wrap=True)
EXIT_ERROR, EXIT_FAILURES = 1, 3
# Section classes last: their fields win over ScoreConfig's same-named section fields (`endpoint`).
_HELP = {f.name: f.metadata.get("help", "") for cls in (ScoreConfig, *SECTIONS.values()) for f in fields(cls)}


def _opt(name: str, *flags: str) -> Any:
    return typer.Option(*flags, help=_HELP[name], show_default=False)


def _default_out(settings: dict[str, Any]) -> str:
    def slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(text)).stem if "/" in str(text) else str(text)).strip("-")

    template = settings.get("template", ScoreConfig.__dataclass_fields__["template"].default)
    model = settings.get("model", ScoreConfig.__dataclass_fields__["model"].default)
    return str(Path("runs") / f"{slug(settings['source'])}__{slug(template)}__{slug(model)}")


def _print_summary(result: dict[str, Any], run_dir: Path) -> None:
    table = Table(title=f"Run {run_dir}", show_header=False)
    table.add_row("items", f"{result['items']} ({result['items_scored']} scored, {result['items_unscored']} unscored)")
    table.add_row("judgments", f"{result['judgments']} ({result.get('requested', 0)} requested now)")
    for status, count in result["status_counts"].items():
        table.add_row(f"  {status}", str(count))
    total = max(sum(result["score_histogram"].values()), 1)
    for level, count in result["score_histogram"].items():
        table.add_row(f"judgments scored {level}", f"{count:>6}  {'█' * round(40 * count / total)}")
    mean = result["mean_item_score"]
    table.add_row("mean item score", "n/a" if mean is None else f"{mean:.3f}")
    table.add_row("tokens", f"{result['prompt_tokens']} prompt, {result['completion_tokens']} completion")
    out.print(table)


@app.command()
def score(
    data: Annotated[str | None, typer.Argument(help=_HELP["source"], show_default=False)] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML job file; its keys mirror these flags.")] = None,
    template: Annotated[str | None, _opt("template", "--template")] = None,
    template_dir: Annotated[str | None, _opt("template_dir", "--template-dir")] = None,
    model: Annotated[str | None, _opt("model", "--model")] = None,
    backend: Annotated[str | None, _opt("backend", "--backend")] = None,
    samples: Annotated[int | None, _opt("samples", "--samples")] = None,
    temperature: Annotated[float | None, _opt("temperature", "--temperature")] = None,
    top_p: Annotated[float | None, _opt("top_p", "--top-p")] = None,
    max_tokens: Annotated[int | None, _opt("max_tokens", "--max-tokens")] = None,
    seed: Annotated[int | None, _opt("seed", "--seed")] = None,
    top_logprobs: Annotated[int | None, _opt("top_logprobs", "--top-logprobs")] = None,
    out_dir: Annotated[str | None, typer.Option("--out", help=_HELP["out"] + " Default: runs/DATA__TEMPLATE__MODEL.",
                                                show_default=False)] = None,
    engine_arg: Annotated[list[str] | None, typer.Option(
        "--engine-arg", help="KEY=VALUE for vllm.LLM (repeatable), e.g. --engine-arg tensor_parallel_size=2.",
        show_default=False)] = None,
    batch_size: Annotated[int | None, _opt("batch_size", "--batch-size")] = None,
    chunk_size: Annotated[int | None, _opt("chunk_size", "--chunk-size")] = None,
    device: Annotated[str | None, _opt("device", "--device")] = None,
    dtype: Annotated[str | None, _opt("dtype", "--dtype")] = None,
    trust_remote_code: Annotated[bool | None, _opt("trust_remote_code", "--trust-remote-code")] = None,
    retry_failed: Annotated[bool | None, _opt("retry_failed", "--retry-failed")] = None,
    max_failure_fraction: Annotated[float | None, _opt("max_failure_fraction", "--max-failure-fraction")] = None,
    split: Annotated[str | None, _opt("split", "--split")] = None,
    question_field: Annotated[str | None, _opt("question_field", "--question-field")] = None,
    id_field: Annotated[str | None, _opt("id_field", "--id-field")] = None,
    reference_field: Annotated[str | None, _opt("reference_field", "--reference-field")] = None,
    choices_field: Annotated[str | None, _opt("choices_field", "--choices-field")] = None,
    domain_field: Annotated[str | None, _opt("domain_field", "--domain-field")] = None,
    on_bad_rows: Annotated[str | None, _opt("on_bad_rows", "--on-bad-rows")] = None,
    limit: Annotated[int | None, _opt("limit", "--limit")] = None,
    base_url: Annotated[str | None, _opt("base_url", "--base-url")] = None,
    api_key_env: Annotated[str | None, _opt("api_key_env", "--api-key-env")] = None,
    endpoint: Annotated[str | None, _opt("endpoint", "--endpoint")] = None,
    tokenizer: Annotated[str | None, _opt("tokenizer", "--tokenizer")] = None,
    max_in_flight: Annotated[int | None, _opt("max_in_flight", "--max-in-flight")] = None,
    requests_per_minute: Annotated[int | None, _opt("requests_per_minute", "--requests-per-minute")] = None,
    tokens_per_minute: Annotated[int | None, _opt("tokens_per_minute", "--tokens-per-minute")] = None,
    request_timeout: Annotated[float | None, _opt("request_timeout", "--request-timeout")] = None,
    max_retries: Annotated[int | None, _opt("max_retries", "--max-retries")] = None,
    use_n: Annotated[bool | None, _opt("use_n", "--use-n")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON on stdout.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what the engine does.")] = False,
) -> None:
    """Judge the reasoning intensity (1-5) of every problem in DATA; rerun to resume."""
    _logging(verbose)
    flags = {k: v for k, v in locals().items() if v is not None and k in ScoreConfig.flat_keys()}
    flags.update({"source": data} if data is not None else {})
    flags.update({"out": out_dir} if out_dir is not None else {})
    with _errors():
        if engine_arg:
            flags["engine_args"] = _key_values(engine_arg)
        settings = {**(read_job_file(config) if config else {}), **flags}
        if "source" in settings and "out" not in settings:
            settings["out"] = _default_out(settings)
        job = ScoreConfig.from_flat(settings)
        from curate.engine import score as run_score

        try:
            with _progress_bar(disabled=as_json) as on_progress:
                result = run_score(job, progress=on_progress)
        except FailureThresholdError as exc:
            _report(exc.summary, job.out_path, as_json)
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(EXIT_FAILURES) from None
        _report(result.summary, result.run_dir, as_json)


@app.command()
def reparse(
    run_dir: Annotated[Path, typer.Argument(help="Run directory to parse again.")],
    parser: Annotated[str | None, typer.Option(help="Parser to use instead of the template's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Parse the stored raw outputs again (after a parser fix); never calls a model."""
    with _errors():
        from curate.engine import reparse as run_reparse

        _report(run_reparse(run_dir, parser), run_dir, as_json)


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


@app.command()
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
    with _errors():
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


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="First run directory.")],
    run_b: Annotated[Path, typer.Argument(help="Second run directory (same items, another template/judge/sampling).")],
    score_column: Annotated[str, typer.Option("--score", help="Item score: mean, median or expected.")] = "mean",
    report: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """How two runs over the same items differ: agreement, shift matrix, SFT/RL churn per τ."""
    with _errors():
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


@app.command()
def split(
    run_dir: Annotated[Path, typer.Argument(help="Run directory made by `curate score`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Split directory to write.")],
    tau: Annotated[float, typer.Option(help="SFT: score ≤ τ; RL: score > τ.")] = 3.0,
    score_column: Annotated[str, typer.Option("--score", help="Item score: mean, median, expected or calibrated.")] = "mean",
    quantile: Annotated[float | None, typer.Option(help="Choose τ so RL gets the hardest fraction q.")] = None,
    rl_budget: Annotated[int | None, typer.Option(help="Choose τ so RL gets at most N items.")] = None,
    per_domain: Annotated[bool, typer.Option(help="Apply --quantile/--rl-budget within each domain.")] = False,
    arms: Annotated[str, typer.Option(help="Ablation arms, comma-separated: random,reversed,sft_all,rl_all.")] = "random,reversed,sft_all,rl_all",
    stages: Annotated[int | None, typer.Option(help="Write a k-stage RL curriculum, easy to hard.")] = None,
    stage_by: Annotated[str, typer.Option(help="Stage RL items by 'score' or by a field such as pass_rate.")] = "score",
    seed: Annotated[int, typer.Option(help="Seed of the random arm (same seed, same bytes).")] = 0,
    dedup: Annotated[bool, typer.Option("--dedup/--no-dedup", help="Remove exact and normalised duplicates.")] = True,
    decontaminate: Annotated[list[str] | None, typer.Option(help="Benchmark file to decontaminate against (repeatable).")] = None,
    benchmark_field: Annotated[str, typer.Option(help="Question field of the benchmark files.")] = "question",
    ngram: Annotated[int, typer.Option(help="n of the word n-gram overlap that counts as contamination.")] = 13,
    drop_unscored: Annotated[bool, typer.Option(help="Do not write unscored.parquet (they are still counted).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Split a scored run into SFT (score ≤ τ) and RL (score > τ), with ablation arms and hygiene."""
    with _errors():
        from curate.split_dir import make_split

        manifest = make_split(run_dir, out_dir, tau=tau, score=score_column, quantile=quantile, rl_budget=rl_budget,
                              per_domain=per_domain, arms=tuple(a for a in arms.split(",") if a), stages=stages,
                              stage_by=stage_by, seed=seed, dedup=dedup, benchmarks=tuple(decontaminate or ()),
                              benchmark_field=benchmark_field, ngram=ngram, drop_unscored=drop_unscored)
        if as_json:
            print(json.dumps(manifest, sort_keys=True, default=str))
            return
        table = Table(title=f"Split {out_dir}: τ = {manifest['tau']} ({manifest['tau_method']}, {manifest['score']} score)",
                      show_header=False)
        for side, count in manifest["counts"].items():
            table.add_row(side, str(count))
        for arm, counts in manifest["arms"].items():
            table.add_row(f"arm {arm}", f"sft {counts['sft']}, rl {counts['rl']}")
        if manifest["stages"]:
            table.add_row("RL stages", ", ".join(f"{k}: {v}" for k, v in manifest["stages"].items()))
        table.add_row("removed by hygiene", f"{manifest['hygiene']['removed']} (see removed.jsonl)")
        out.print(table)


@app.command(name="export")
def export_command(
    split_dir: Annotated[Path, typer.Argument(help="Split directory made by `curate split`.")],
    fmt: Annotated[str, typer.Option("--format", help="hf, parquet, jsonl, trl or verl.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the export.")],
    response_field: Annotated[str, typer.Option(help="SFT target field for --format trl.")] = "response",
    push_to_hub: Annotated[str | None, typer.Option(help="With --format hf: push to this Hub repo (token from $HF_TOKEN).")] = None,
    public: Annotated[bool, typer.Option(help="Make the pushed dataset public (private by default).")] = False,
) -> None:
    """Export a split for the Hub, TRL, verl or plain files."""
    with _errors():
        from curate.export import export_split
        from curate.export import push_to_hub as push

        written = export_split(split_dir, fmt, out_dir, response_field=response_field)
        out.print(f"{fmt} export written to {written}")
        if push_to_hub:
            if fmt != "hf":
                raise ConfigError("--push-to-hub needs --format hf")
            push(written, push_to_hub, private=not public)
            out.print(f"pushed to {push_to_hub}")


@app.command()
def templates(template_dir: Annotated[str | None, typer.Option(help="Also list templates here.")] = None) -> None:
    """List judge templates with their parsers."""
    from curate.templates import available_templates, load_template

    table = Table("template", "parser", "identity", "description")
    for column in table.columns[:3]:
        column.no_wrap = True  # names are copied into commands: only the description may wrap
    with _errors():
        for name in available_templates(template_dir):
            loaded = load_template(name, template_dir)
            table.add_row(name, loaded.parser.name, loaded.content_hash, loaded.description)
    out.print(table)


def _key_values(pairs: list[str]) -> dict[str, Any]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--engine-arg takes KEY=VALUE, got {pair!r}")
        parsed[key] = yaml.safe_load(value)
    return parsed


def _report(result: dict[str, Any], run_dir: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"run_dir": str(run_dir), **result}, sort_keys=True))
    else:
        _print_summary(result, run_dir)


class _errors:
    """Turn dereason's own errors into one red line and exit status 1."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc_type is not None and issubclass(exc_type, DereasonError):
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(EXIT_ERROR)
        return False


class _progress_bar:
    def __init__(self, disabled: bool):
        self.bar = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                            TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(), TextColumn("ETA"),
                            TimeRemainingColumn(), console=err, disable=disabled)
        self.task = None

    def __enter__(self):  # noqa: ANN204
        self.bar.start()
        return self.update

    def update(self, progress: Any) -> None:
        if self.task is None:
            self.task = self.bar.add_task("score", total=progress.total, failed=0, rate="")
        self.bar.update(self.task, completed=progress.done, failed=progress.failed)
        speed = self.bar.tasks[0].speed
        self.bar.update(self.task, rate=f"{speed:.1f} judgments/s" if speed else "")

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    # Model loading bars from transformers/hub would interleave with ours.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
