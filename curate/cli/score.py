"""`curate score`, `curate solve`, `curate respond` (one command shape: every run setting is a flag) and
`curate reparse`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from curate.cli.common import (
    EXIT_FAILURES,
    HELP,
    errors,
    key_values,
    option,
    out,
    print_error,
    setup_logging,
)
from curate.cli.progress import RequestClock, interrupted, progress_bar
from curate.config import DEFAULT_RESPONSE_TEMPLATE, RunConfig, read_job_file
from curate.errors import ConfigError, FailureThresholdError


def _default_out(settings: dict[str, Any]) -> str:
    def slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(text)).stem if "/" in str(text) else str(text)).strip("-")

    template = settings.get("template", RunConfig.__dataclass_fields__["template"].default)
    model = settings.get("model", RunConfig.__dataclass_fields__["model"].default)
    return str(Path("runs") / f"{slug(settings['source'])}__{slug(template)}__{slug(model)}")


def _statuses(table: Table, result: dict[str, Any], records: str, occurring_only: bool = False) -> None:
    """The records per status: every status a judgment can have, or (responses, whose statuses depend on whether a
    verifier decided them: `ok` only without one) the statuses that occur."""
    table.add_row(records, f"{result[records]} ({result.get('requested', 0)} requested now)")
    for status, count in result["status_counts"].items():
        if count or not occurring_only:
            table.add_row(f"  {status}", str(count))


def _score_rows(table: Table, result: dict[str, Any]) -> None:
    table.add_row("items", f"{result['items']} ({result['items_scored']} scored, {result['items_unscored']} unscored)")
    _statuses(table, result, "judgments")
    total = max(sum(result["score_histogram"].values()), 1)
    for level, count in result["score_histogram"].items():
        table.add_row(f"judgments scored {level}", f"{count:>6}  {'█' * round(40 * count / total)}")
    mean = result["mean_item_score"]
    table.add_row("mean item score", "n/a" if mean is None else f"{mean:.3f}")


def _solve_rows(table: Table, result: dict[str, Any]) -> None:
    table.add_row("items", f"{result['items']} ({result['measured']} measured, {result['no_countable_attempt']} with "
                           "no countable attempt)")
    _statuses(table, result, "responses", occurring_only=True)
    measured = max(result["measured"], 1)
    for name, label in (("solved_all", "every attempt"), ("solved_some", "some attempts"), ("solved_none", "none")):
        count = result[name]
        table.add_row(f"items solved by {label}", f"{count:>6}  {'█' * round(40 * count / measured)}")
    mean = result["mean_pass_rate"]
    table.add_row("mean pass rate", "n/a" if mean is None else f"{mean:.3f}")


def _respond_rows(table: Table, result: dict[str, Any]) -> None:
    unkept = result["items_without_response"]
    table.add_row("items", f"{result['items']} ({result['items_kept']} with a kept response, {len(unkept)} without)")
    _statuses(table, result, "responses", occurring_only=True)
    if unkept:
        shown = ", ".join(unkept[:5]) + (f" and {len(unkept) - 5} more" if len(unkept) > 5 else "")
        table.add_row("items without a response", f"{shown} (per_item.parquet: item_status none_kept)")


SUMMARY_ROWS: dict[str, Callable[[Table, dict[str, Any]], None]] = {
    "score": _score_rows, "solve": _solve_rows, "respond": _respond_rows}


def _print_summary(result: dict[str, Any], run_dir: Path, kind: str) -> None:
    table = Table(title=f"Run {run_dir}", show_header=False)
    SUMMARY_ROWS[kind](table, result)
    table.add_row("tokens", f"{result['prompt_tokens']} prompt, {result['completion_tokens']} completion")
    out.print(table)


def run_command(kind: str, doc: str) -> Callable[..., None]:
    """The command that runs `kind` (score, solve or respond): every run setting is one of its flags."""

    def command(
        data: Annotated[str | None, typer.Argument(help=HELP["source"], show_default=False)] = None,
        config: Annotated[Path | None, typer.Option("--config", help="YAML job file; its keys mirror these flags.")] = None,
        template: Annotated[str | None, option("template", "--template")] = None,
        template_dir: Annotated[str | None, option("template_dir", "--template-dir")] = None,
        model: Annotated[str | None, option("model", "--model")] = None,
        backend: Annotated[str | None, option("backend", "--backend")] = None,
        verify: Annotated[str | None, option("verify", "--verify")] = None,
        verify_model: Annotated[str | None, option("verify_model", "--verify-model")] = None,
        verify_backend: Annotated[str | None, option("verify_backend", "--verify-backend")] = None,
        verify_base_url: Annotated[str | None, option("verify_base_url", "--verify-base-url")] = None,
        verify_template: Annotated[str | None, option("verify_template", "--verify-template")] = None,
        verify_max_tokens: Annotated[int | None, option("verify_max_tokens", "--verify-max-tokens")] = None,
        samples: Annotated[int | None, option("samples", "--samples")] = None,
        temperature: Annotated[float | None, option("temperature", "--temperature")] = None,
        top_p: Annotated[float | None, option("top_p", "--top-p")] = None,
        max_tokens: Annotated[int | None, option("max_tokens", "--max-tokens")] = None,
        seed: Annotated[int | None, option("seed", "--seed")] = None,
        top_logprobs: Annotated[int | None, option("top_logprobs", "--top-logprobs")] = None,
        constrain_score: Annotated[bool | None, option("constrain_score", "--constrain-score")] = None,
        out_dir: Annotated[str | None, typer.Option("--out", help=HELP["out"] + " Default: runs/DATA__TEMPLATE__MODEL.",
                                                    show_default=False)] = None,
        engine_arg: Annotated[list[str] | None, typer.Option(
            "--engine-arg", help="KEY=VALUE for vllm.LLM (repeatable), e.g. --engine-arg tensor_parallel_size=2.",
            show_default=False)] = None,
        batch_size: Annotated[int | None, option("batch_size", "--batch-size")] = None,
        max_batch_tokens: Annotated[int | None, option("max_batch_tokens", "--max-batch-tokens")] = None,
        chunk_size: Annotated[int | None, option("chunk_size", "--chunk-size")] = None,
        device: Annotated[str | None, option("device", "--device")] = None,
        dtype: Annotated[str | None, option("dtype", "--dtype")] = None,
        trust_remote_code: Annotated[bool | None, option("trust_remote_code", "--trust-remote-code")] = None,
        retry_failed: Annotated[bool | None, option("retry_failed", "--retry-failed")] = None,
        max_failure_fraction: Annotated[float | None, option("max_failure_fraction", "--max-failure-fraction")] = None,
        split: Annotated[str | None, option("split", "--split")] = None,
        question_field: Annotated[str | None, option("question_field", "--question-field")] = None,
        id_field: Annotated[str | None, option("id_field", "--id-field")] = None,
        reference_field: Annotated[str | None, option("reference_field", "--reference-field")] = None,
        choices_field: Annotated[str | None, option("choices_field", "--choices-field")] = None,
        domain_field: Annotated[str | None, option("domain_field", "--domain-field")] = None,
        on_bad_rows: Annotated[str | None, option("on_bad_rows", "--on-bad-rows")] = None,
        limit: Annotated[int | None, option("limit", "--limit")] = None,
        base_url: Annotated[str | None, option("base_url", "--base-url")] = None,
        api_key_env: Annotated[str | None, option("api_key_env", "--api-key-env")] = None,
        endpoint: Annotated[str | None, option("endpoint", "--endpoint")] = None,
        tokenizer: Annotated[str | None, option("tokenizer", "--tokenizer")] = None,
        max_in_flight: Annotated[int | None, option("max_in_flight", "--max-in-flight")] = None,
        requests_per_minute: Annotated[int | None, option("requests_per_minute", "--requests-per-minute")] = None,
        tokens_per_minute: Annotated[int | None, option("tokens_per_minute", "--tokens-per-minute")] = None,
        request_timeout: Annotated[float | None, option("request_timeout", "--request-timeout")] = None,
        max_retries: Annotated[int | None, option("max_retries", "--max-retries")] = None,
        use_n: Annotated[bool | None, option("use_n", "--use-n")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON on stdout.")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what the engine does.")] = False,
    ) -> None:
        setup_logging(verbose)
        flags = {k: v for k, v in locals().items() if v is not None and k in RunConfig.flat_keys()}
        flags.update({"source": data} if data is not None else {})
        flags.update({"out": out_dir} if out_dir is not None else {})
        with errors():
            if engine_arg:
                flags["engine_args"] = key_values("--engine-arg", engine_arg)
            settings = {**(read_job_file(config) if config else {}), **flags}
            if kind != "score":
                settings.setdefault("template", DEFAULT_RESPONSE_TEMPLATE)
                if "model" not in settings:  # the bundled judge answers with a digit: it cannot solve anything
                    raise ConfigError(f"`curate {kind}` needs --model: the model that answers (e.g. "
                                      "bundled:smollm2-135m, a local path or a Hub id)")
            if "source" in settings and "out" not in settings:
                settings["out"] = _default_out(settings)
            job = RunConfig.from_flat(settings)
            from curate import engine
            from curate.backends import LazyBackend

            with (_failures_reported(job.out_path, as_json, kind), interrupted(job, kind),
                  progress_bar(kind, disabled=as_json) as bar, closing(LazyBackend(job)) as backend):
                result = getattr(engine, kind)(job, progress=bar.update,
                                               backend=RequestClock(backend, bar.requesting))
            _report(result.summary, result.run_dir, as_json, kind)

    command.__name__, command.__doc__ = kind, doc
    return command


score = run_command("score", "Judge the reasoning intensity (1-5) of every problem in DATA; rerun to resume.")
solve = run_command("solve", "Answer every problem in DATA --samples times and verify each answer (--verify): "
                             "per-item pass rates with Wilson intervals; rerun to resume.")
respond = run_command("respond", "Write a response to every problem in DATA (a teacher's, for SFT); with --verify "
                                 "and --samples k, keep the first verified one of up to k tries; rerun to resume.")


def reparse(
    run_dir: Annotated[Path, typer.Argument(help="Run directory to parse again.")],
    parser: Annotated[str | None, typer.Option(help="Parser to use instead of the template's (score runs).")] = None,
    verify: Annotated[str | None, typer.Option(help="Verifier to use instead of the run's (solve, respond runs).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Decide the stored raw outputs again (after a parser or verifier fix); never calls a model."""
    with errors():
        from curate.engine import reparse as run_reparse
        from curate.store import read_manifest

        kind = read_manifest(run_dir)["identity"].get("task", "score")
        with _failures_reported(run_dir, as_json, kind):
            _report(run_reparse(run_dir, parser, verify), run_dir, as_json, kind)


class _failures_reported:
    """Too many failed records: the summary is still printed, then one error line and exit status 3."""

    def __init__(self, run_dir: Path, as_json: bool, kind: str):
        self.run_dir, self.as_json, self.kind = run_dir, as_json, kind

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, FailureThresholdError):
            _report(exc.summary, self.run_dir, self.as_json, self.kind)
            print_error(str(exc))
            raise typer.Exit(EXIT_FAILURES) from None
        return False



def _report(result: dict[str, Any], run_dir: Path, as_json: bool, kind: str) -> None:
    if as_json:
        print(json.dumps({"run_dir": str(run_dir), **result}, sort_keys=True))
    else:
        _print_summary(result, run_dir, kind)
