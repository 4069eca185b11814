"""The engine: the one place that walks items → requests → completions → records → store → aggregates.

It asks the store which (item, sample) pairs are missing, renders them, hands them to the backend
in windows, turns what comes back into the task's records (curate.tasks: a judgment for `score`, a
verified response for `solve` and `respond`, a comparison of two items for `pairs`, whose units are
comparisons rather than items), commits every `chunk_size` of them, and reports progress. A crash
loses at most the uncommitted chunk; rerunning the same job requests only what is missing. A task that settles items early (rejection sampling: stop at the first verified response)
is run a sample index at a time, each round asking only for the items not settled yet.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl

from curate import __version__
from curate.backends import (
    Backend,
    Completion,
    Request,
    backend_identity,
    backend_kind,
)
from curate.config import DEFAULT_PAIRWISE_TEMPLATE, DEFAULT_RESPONSE_TEMPLATE, RunConfig
from curate.data.items import fingerprint, load_items
from curate.errors import ConfigError, FailureThresholdError
from curate.executors import run_backend
from curate.files import append_jsonl, write_atomic, write_parquet_atomic
from curate.identity import IDENTITY_DEFAULTS
from curate.redact import redact, secrets_in
from curate.runs import aggregates_stamp
from curate.store import ITEMS, PER_ITEM, RunStore, read_items, read_judgments, read_manifest
from curate.tasks import PairsTask, ResponseTask, ScoreTask, Task, rebuild_task
from curate.templates import JudgeTemplate, load_template
from curate.verify import MODEL_VERIFIER, VERIFIER_NAMES, get_verifier
from curate.verify.model import judge_verifier

log = logging.getLogger(__name__)

# A slow trickle of answers is still committed this often, so a crash loses little.
COMMIT_INTERVAL_SECONDS = 2.0
DEFAULT_MAX_FAILURE_FRACTION = RunConfig.__dataclass_fields__["max_failure_fraction"].default
# A record the backend failed (curate.backends.Completion.error) has no finish reason: nothing to decide again.
BACKEND_ANSWERED = ~((pl.col("status") == "error") & (pl.col("finish_reason") == ""))


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    failed: int


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    requested: int  # judgments requested from the backend by this invocation
    summary: dict[str, Any]
    per_item: pl.DataFrame


def run_identity(config: RunConfig, items: pl.DataFrame, template: JudgeTemplate, task: Task) -> dict[str, Any]:
    """What a stored record depends on: every setting that can change an answer, including those only its
    backend reads. max_tokens may rise with --retry-failed (RunStore.open's may_raise): a finished answer is
    the same under a larger cap, and the truncated ones are asked again."""
    sampling = config.sampling
    identity = {
        "task": task.name, "input_fingerprint": fingerprint(items), "n_items": items.height,
        "template": template.identity, **task.identity(), **backend_identity(config.backend_config, sampling),
        "samples": sampling.samples, "temperature": sampling.temperature, "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens, "seed": sampling.seed, "top_logprobs": sampling.top_logprobs,
        "constrain_score": sampling.constrain_score,
    }
    return identity


def _pending_rows(pending: pl.DataFrame, units: pl.DataFrame) -> Iterator[dict[str, Any]]:
    """Pending units (items, or a pairs run's comparisons) with their wanted sample indices, in the units' order."""
    wanted = pending.group_by("item_id", maintain_order=True).agg(pl.col("sample_idx").alias("samples"))
    yield from wanted.join(units.rename({"id": "item_id"}), on="item_id", maintain_order="left").iter_rows(named=True)


def _request(row: dict[str, Any], template: JudgeTemplate, task: Task) -> Request:
    item = {**row, "id": row["item_id"]}
    return Request(item_id=row["item_id"], sample_indices=tuple(row["samples"]),
                   messages=tuple(template.render(item)), first_tokens=task.first_tokens)


def _unanswered(outstanding: dict[tuple[str, int], None]) -> list[Completion]:
    """Keep counts exact even if a backend drops a request: each becomes an explicit error."""
    return [Completion(item_id, idx, "", "", 0, 0, error="backend returned no completion for this request")
            for item_id, idx in outstanding]


# Builds the task for a run; what the task holds open (a judge model's backend) is closed with the stack.
TaskFactory = Callable[[RunConfig, JudgeTemplate, ExitStack], Task]


def score(config: RunConfig, progress: Callable[[Progress], None] | None = None,
          backend: Backend | None = None) -> RunResult:
    """Score `config.data` into `config.out`, resuming whatever that run directory already holds.

    `backend` replaces the one `config.backend_config` names (tests, custom engines); it is not closed.
    """
    return run(config, score_task, progress, backend)


def solve(config: RunConfig, progress: Callable[[Progress], None] | None = None,
          backend: Backend | None = None) -> RunResult:
    """`config.sampling.samples` rollouts per item, each verified (`config.verify`): per-item pass rates."""
    return run(config, partial(response_task, "solve"), progress, backend)


def respond(config: RunConfig, progress: Callable[[Progress], None] | None = None,
            backend: Backend | None = None) -> RunResult:
    """A response per item, kept when verified (with `config.verify`): up to `samples` tries per item."""
    return run(config, partial(response_task, "respond"), progress, backend)


def pairs(config: RunConfig, progress: Callable[[Progress], None] | None = None,
          backend: Backend | None = None) -> RunResult:
    """Pairwise difficulty: each item compared with `config.pairwise.comparisons` others, each pair asked in both
    orders through a pairwise template, and a Bradley-Terry fit of the comparisons (curate.tasks.pairs): per item,
    its strength (higher = harder) with a 95% interval, as the run's item score."""
    return run(config, pairs_task, progress, backend)


def run(config: RunConfig, make_task: TaskFactory, progress: Callable[[Progress], None] | None = None,
        backend: Backend | None = None) -> RunResult:
    """Run the task `make_task` builds for `config` and its template over `config.data` into `config.out`,
    resuming whatever that run directory already holds."""
    with ExitStack() as resources:
        return _run(config, make_task, progress, backend, resources)


def _run(config: RunConfig, make_task: TaskFactory, progress: Callable[[Progress], None] | None,
         backend: Backend | None, resources: ExitStack) -> RunResult:
    loaded = load_items(config.data)
    items = loaded.items if config.data.limit is None else loaded.items.head(config.data.limit)
    template = load_template(config.template, config.template_dir)
    task = make_task(config, template, resources)
    units = task.units(items)
    if units.height:  # template errors surface here, before any model is loaded or called
        template.render(units.row(0, named=True))
    backend_kind(config.backend_config.backend)
    identity = run_identity(config, items, template, task)
    manifest_extra = {"dereason_version": __version__, "created_at": time.time(), "source": loaded.source,
                      "config": config.to_flat()}
    run_dir = config.out_path
    with RunStore.open(run_dir, identity, manifest_extra, task.record_type,
                       may_raise=task.rising_identity + (("max_tokens",) if config.retry_failed else ())) as store:
        # Rewritten every time: fields outside the identity (extras added to the input later) reach stats.
        write_parquet_atomic(items, run_dir / ITEMS)
        if loaded.quarantined.height:
            write_atomic(run_dir / "quarantine.jsonl", "".join(
                json.dumps(r) + "\n" for r in loaded.quarantined.iter_rows(named=True)))
        append_jsonl(run_dir / "invocations.jsonl",
                     {"started_at": time.time(), "dereason_version": __version__, "config": config.to_flat()})
        if config.retry_failed:
            log.info("retrying %d record(s) stored as %s", store.retire(task.retried_statuses),
                     " or ".join(task.retried_statuses))
        backend = backend or resources.enter_context(closing(run_backend(config)))
        requested = 0
        for wanted in _rounds(task, run_dir, units, config.sampling.samples):
            pending = store.missing(wanted)
            log.info("%s: %d %s wanted, %d stored, %d to request", run_dir, wanted.height, task.records_word,
                     wanted.height - pending.height, pending.height)
            if pending.height:
                requested += pending.height
                _request_missing(store, backend, config, task, template, pending, units, progress)
        result_summary, items_frame = write_aggregates(run_dir, task, requested=requested)
    _check_failures(result_summary, config.max_failure_fraction, task)
    return RunResult(run_dir=run_dir, requested=requested, summary=result_summary, per_item=items_frame)


def score_task(config: RunConfig, template: JudgeTemplate, resources: ExitStack) -> ScoreTask:
    if config.verify is not None:
        raise ConfigError("--verify decides the responses of `curate solve` and `curate respond`; a judge's scores "
                          "are parsed, not verified: drop --verify")
    if template.kind != "judge":
        raise ConfigError(f"template {template.name!r} is a {template.kind} template; `curate score` needs a judge "
                          "template such as difficulty/intensity_score_only (`curate templates` lists them)")
    if config.sampling.constrain_score and not template.parser.whole_answer_is_score:
        raise ConfigError(f"--constrain-score restricts the answer to one score token, but template {template.name!r} "
                          f"(parser {template.parser.name}) answers with more than a score; use a score-only template "
                          "such as difficulty/intensity_score_only, or drop --constrain-score")
    return ScoreTask(template.parser, template.identity, sampled=config.sampling.temperature > 0,
                     constrained=config.sampling.constrain_score)


def pairs_task(config: RunConfig, template: JudgeTemplate, resources: ExitStack) -> PairsTask:
    if template.kind != "pairwise":
        raise ConfigError(f"template {template.name!r} is a {template.kind} template; `curate pairs` needs a pairwise "
                          f"template such as {DEFAULT_PAIRWISE_TEMPLATE} (`curate templates` lists them)")
    return PairsTask(template.parser, template.identity, comparisons=config.pairwise.comparisons,
                     schedule_seed=config.pairwise.schedule_seed, sampled=config.sampling.temperature > 0,
                     constrained=config.sampling.constrain_score)


def response_task(name: str, config: RunConfig, template: JudgeTemplate, resources: ExitStack) -> ResponseTask:
    if template.kind != "response":
        raise ConfigError(f"template {template.name!r} is a {template.kind} template; `curate {name}` needs a response "
                          f"template such as {DEFAULT_RESPONSE_TEMPLATE} (`curate templates` lists them)")
    if config.sampling.constrain_score:
        raise ConfigError(f"--constrain-score restricts a judge's answer to a score; `curate {name}` writes "
                          "responses: drop it")
    if name == "solve" and config.verify is None:
        raise ConfigError(f"`curate solve` measures pass rates, so it needs --verify NAME (one of "
                          f"{', '.join(VERIFIER_NAMES)}) to decide each response")
    verifier = (None if config.verify is None else
                judge_verifier(config.verifier, config.backend_config, config.sampling.seed, config.template_dir,
                               resources) if config.verify == MODEL_VERIFIER else get_verifier(config.verify))
    return ResponseTask(name, verifier, template.identity)


def _rounds(task: Task, run_dir: Path, units: pl.DataFrame, samples: int) -> Iterator[pl.DataFrame]:
    """The (item_id, sample_idx) pairs wanted (a unit's id is the store's item_id): all at once, or a sample index
    at a time for the units the task has not settled yet (read after the previous round was stored)."""
    ids = units.select(pl.col("id").alias("item_id"))
    if not task.asks_in_rounds:
        yield ids.join(pl.DataFrame({"sample_idx": range(samples)}, schema={"sample_idx": pl.Int64}), how="cross")
        return
    for sample_idx in range(samples):
        settled = task.settled(_stored(run_dir, task))
        yield ids.filter(~pl.col("item_id").is_in(settled.implode())).with_columns(
            sample_idx=pl.lit(sample_idx, dtype=pl.Int64))


def _stored(run_dir: Path, task: Task) -> pl.DataFrame:
    return read_judgments(run_dir, columns=task.aggregated_columns)


def _request_missing(store: RunStore, backend: Backend, config: RunConfig, task: Task, template: JudgeTemplate,
                     pending: pl.DataFrame, units: pl.DataFrame,
                     progress: Callable[[Progress], None] | None) -> None:
    outstanding: dict[tuple[str, int], None] = {}  # rendered, not yet answered (insertion-ordered)
    rows: dict[str, dict[str, Any]] = {}  # the units being asked about, for the task to read (a reference)

    def requests() -> Iterator[Request]:
        for row in _pending_rows(pending, units):
            request = _request(row, template, task)
            rows[request.item_id] = row
            for idx in request.sample_indices:
                outstanding[request.item_id, idx] = None
            yield request

    done = failed = 0
    secrets = secrets_in({config.backend_config.endpoint.api_key_env})
    buffer: list[Completion] = []  # answered, not yet turned into records and committed
    last_commit = time.monotonic()

    def commit() -> None:
        nonlocal done, failed, last_commit
        records = [_redacted(record, secrets) for record in
                   task.records(buffer, [rows[completion.item_id] for completion in buffer])]
        store.append(records)
        done += len(records)
        failed += sum(record.status in task.failed_statuses for record in records)
        buffer.clear()
        last_commit = time.monotonic()
        if progress:
            progress(Progress(done=done, total=pending.height, failed=failed))

    for completion in backend.generate(requests(), config.sampling):
        outstanding.pop((completion.item_id, completion.sample_idx), None)
        buffer.append(completion)
        if len(buffer) >= config.chunk_size or time.monotonic() - last_commit >= COMMIT_INTERVAL_SECONDS:
            commit()
    buffer.extend(_unanswered(outstanding))
    if buffer:
        commit()


def _redacted(record: tuple, secrets: tuple[str, ...]) -> tuple:
    """The record without an API key a server echoed (curate.redact): its detail is what the server or the
    machinery said, its raw text the model's answer."""
    detail, text = redact(record.detail, secrets), redact(record.raw_text, secrets, shaped=False)
    return record if (detail, text) == (record.detail, record.raw_text) else record._replace(detail=detail,
                                                                                                  raw_text=text)


def write_aggregates(run_dir: Path, task: Task, requested: int) -> tuple[dict[str, Any], pl.DataFrame]:
    """per_item.parquet (stamped with what it was aggregated from) and summary.json; `requested`: records this
    invocation asked a backend for."""
    stamp = aggregates_stamp(run_dir, read_manifest(run_dir)["identity"])  # before the read: a stamp never runs ahead
    items_frame, result = task.aggregate(_stored(run_dir, task))
    result = {**result, "requested": requested}
    write_parquet_atomic(items_frame, run_dir / PER_ITEM, metadata=stamp)
    write_atomic(run_dir / "summary.json", json.dumps(result, indent=2, sort_keys=True))
    return result, items_frame


def _check_failures(result: dict[str, Any], max_fraction: float, task: Task) -> None:
    if result["failure_fraction"] is not None and result["failure_fraction"] > max_fraction:
        total = sum(result["status_counts"].values())
        counts = ", ".join(f"{k} {v}" for k, v in result["status_counts"].items() if k in task.failed_statuses)
        raise FailureThresholdError(
            f"{result['failed']} of {total} {task.records_word} failed ({result['failure_fraction']:.1%}: "
            f"{counts}), above the allowed {max_fraction:.1%}; see load_judgments(run_dir) for raw outputs",
            result)


def reparse(run_dir: str | Path, parser_name: str | None = None, verifier: str | None = None) -> dict[str, Any]:
    """Decide stored raw outputs again (after a parser or verifier fix, or with another one); no model call.

    Every record the backend answered is decided again, errors included (a verifier that failed on a stored answer,
    such as a wrong verifier's, is undone this way). Only the backend's own failures stay errors: no answer came,
    or one whose end is unknown (no finish reason). With another parser or verifier, the manifest's identity
    names it from then on (resuming with the template's own parser is then refused, naming both).
    Returns the new summary; raises FailureThresholdError, after writing it, when more records failed
    than the run allows.
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    identity = {**IDENTITY_DEFAULTS, **manifest["identity"]}
    task = rebuild_task(identity, parser_name=parser_name, verifier=verifier)
    items = {row["id"]: row for row in read_items(run_dir).iter_rows(named=True)}
    updates = [task.reread(row, items.get(row["item_id"], {}))
               for row in read_judgments(run_dir).filter(BACKEND_ANSWERED).iter_rows(named=True)]
    with RunStore.open(run_dir, manifest["identity"], {}, task.record_type) as store:
        store.update_parsed(updates, task.reparsed_columns)
        changed = {key: value for key, value in task.identity().items() if identity.get(key) != value}
        if changed:
            store.update_identity(changed)
        append_jsonl(run_dir / "invocations.jsonl", {"started_at": time.time(), "dereason_version": __version__,
                                                     "reparse": {**task.identity(), "rows": len(updates)}})
        result = write_aggregates(run_dir, task, requested=0)[0]
    _check_failures(result, (manifest.get("config") or {}).get("max_failure_fraction", DEFAULT_MAX_FAILURE_FRACTION),
                    task)
    return result
