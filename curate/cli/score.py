"""`curate score`, `curate solve`, `curate respond`, `curate pairs` (one command shape: every run setting the command
takes is a flag; curate.config says which) and `curate reparse`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import closing
from dataclasses import MISSING
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from curate.cli.common import EXIT_FAILURES, errors, out, print_error, setup_logging
from curate.cli.flags import settings_command
from curate.cli.progress import RequestClock, interrupted, progress_bar
from curate.command_config import ReparseConfig
from curate.config import RunConfig
from curate.errors import ConfigError, FailureThresholdError
from curate.settings import settings_of


def _default_out(settings: dict[str, Any]) -> str:
    def slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(text)).stem if "/" in str(text) else str(text)).strip("-")

    defaults = settings_of(RunConfig)
    template = settings.get("template", defaults["template"].default())
    model = settings.get("model", defaults["model"].default())
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


def _pairs_rows(table: Table, result: dict[str, Any]) -> None:
    table.add_row("items", f"{result['items']} ({result['items_scored']} with a strength, {result['items_unscored']} "
                           "without)")
    table.add_row("comparisons per item", f"{result['comparisons_per_item']} (each pair in both orders)")
    _statuses(table, result, "comparisons")
    table.add_row("outcomes", f"{result['soft_outcomes']} P(A harder) from logprobs, {result['hard_outcomes']} 0/1 "
                              "from the letter")
    for status, count in result["bt_status_counts"].items():
        table.add_row(f"  items {status.replace('_', ' ')}", str(count))
    fit = result["bradley_terry"]
    if fit["position_bias"] is not None:
        bias = fit["position_bias"]
        interval = "" if bias["low"] is None else f" [{bias['low']:+.2f}, {bias['high']:+.2f}]"
        table.add_row("position bias δ", f"{bias['value']:+.2f}{interval} logits (mean P(first harder) "
                                         f"{fit['mean_p_first']:.3f})")
    for note in fit["notes"]:
        table.add_row("note", note)


SUMMARY_ROWS: dict[str, Callable[[Table, dict[str, Any]], None]] = {
    "score": _score_rows, "solve": _solve_rows, "respond": _respond_rows, "pairs": _pairs_rows}


def _print_summary(result: dict[str, Any], run_dir: Path, kind: str) -> None:
    table = Table(title=f"Run {run_dir}", show_header=False)
    SUMMARY_ROWS[kind](table, result)
    table.add_row("tokens", f"{result['prompt_tokens']} prompt, {result['completion_tokens']} completion")
    out.print(table)


def _prepared(kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """What `curate KIND` checks and adds before its settings are built: the data must be given, and the model
    where the command has no default one; the run directory defaults to runs/DATA__TEMPLATE__MODEL."""

    def prepare(settings: dict[str, Any]) -> dict[str, Any]:
        if "source" not in settings:
            raise ConfigError("no input data given (DATA argument or `source:` in the job file)")
        if "model" not in settings and settings_of(RunConfig)["model"].default(kind) is MISSING:
            # the bundled judge, score's default, answers with a digit: it solves nothing
            raise ConfigError(f"`curate {kind}` needs --model: the model that answers (e.g. bundled:smollm2-135m, a "
                              "local path or a Hub id)")
        return {"out": _default_out(settings), **settings}

    return prepare


def run_command(kind: str, doc: str) -> Callable[..., None]:
    """The command that runs `kind` (score, solve or respond): every run setting that `kind` takes is a flag."""

    def command(
        as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON on stdout.")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what the engine does.")] = False,
        *, settings: RunConfig,
    ) -> None:
        setup_logging(verbose)
        with errors():
            from curate import engine
            from curate.executors import run_backend

            with (_failures_reported(settings.out_path, as_json, kind), interrupted(settings, kind),
                  progress_bar(kind, disabled=as_json) as bar, closing(run_backend(settings)) as backend):
                result = getattr(engine, kind)(settings, progress=bar.update,
                                               backend=RequestClock(backend, bar.requesting))
            _report(result.summary, result.run_dir, as_json, kind)

    command.__name__, command.__qualname__, command.__doc__ = kind, kind, doc
    return settings_command(RunConfig, command=kind, arguments={"source": "DATA"}, prepare=_prepared(kind))(command)


score = run_command("score", "Judge the reasoning intensity (1-5) of every problem in DATA; rerun to resume.")
solve = run_command("solve", "Answer every problem in DATA --samples times and verify each answer (--verify): "
                             "per-item pass rates with Wilson intervals; rerun to resume.")
respond = run_command("respond", "Write a response to every problem in DATA (a teacher's, for SFT); with --verify "
                                 "and --samples k, keep the first verified one of up to k tries; rerun to resume.")
pairs = run_command("pairs", "Compare every problem in DATA with --comparisons others (which is harder, A or B?), each "
                             "pair in both orders, and fit Bradley-Terry strengths: each item's difficulty, with a "
                             "95% interval; rerun to resume.")


@settings_command(ReparseConfig)
def reparse(
    run_dir: Annotated[Path, typer.Argument(help="Run directory to parse again.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
    *, settings: ReparseConfig,
) -> None:
    """Decide the stored raw outputs again (after a parser or verifier fix); never calls a model."""
    with errors():
        from curate.engine import reparse as run_reparse
        from curate.store import read_manifest

        kind = read_manifest(run_dir)["identity"].get("task", "score")
        with _failures_reported(run_dir, as_json, kind):
            _report(run_reparse(run_dir, settings.parser, settings.verify), run_dir, as_json, kind)


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
