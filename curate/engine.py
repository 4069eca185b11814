"""The engine: the one place that walks items → requests → completions → judgments → store → aggregates.

It asks the store which (item, sample) pairs are missing, renders them, hands them to the backend
in windows, parses what comes back, commits every `chunk_size` judgments, and reports progress.
A crash loses at most the uncommitted chunk; rerunning the same job requests only what is missing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curate import __version__
from curate.aggregate import AGGREGATED_COLUMNS, per_item, summary
from curate.backends import (
    SAMPLERS, Alternatives, Backend, Completion, Request, check_backend_name, create_backend, model_fingerprint,
)
from curate.config import ScoreConfig
from curate.data import fingerprint, load_items
from curate.errors import ConfigError, FailureThresholdError
from curate.parse import PARSERS, Parser, Status, parse_completion, score_alternatives
from curate.store import (
    Judgment, RunStore, append_jsonl, read_judgments, read_manifest, write_atomic, write_parquet_atomic,
)
from curate.templates import JudgeTemplate, load_template

log = logging.getLogger(__name__)

# A slow trickle of answers is still committed this often, so a crash loses little.
COMMIT_INTERVAL_SECONDS = 2.0
LOCAL_BACKENDS = ("transformers", "vllm")  # the ones whose numerics depend on --dtype
DEFAULT_MAX_FAILURE_FRACTION = ScoreConfig.__dataclass_fields__["max_failure_fraction"].default
RETRIED_STATUSES = (Status.ERROR, Status.TRUNCATED)


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


def parser_label(parser: Parser) -> str:
    return f"{parser.name}@{parser.version}"


def to_judgment(completion: Completion, parser: Parser, template_identity: str, *, sampled: bool,
                constrained: bool, alternatives: Alternatives | None = None) -> Judgment:
    """`sampled`: the run draws samples (temperature > 0), so a score is what the sample drew, not an argmax;
    `constrained`: the first answer token was restricted to the score tokens; `alternatives`: the top logprobs
    at the score position when already known (reparse reads those it stored), else found in the completion's."""
    if alternatives is None:
        alternatives = score_alternatives(parser, completion.logprobs) if parser.reads_logprobs else ()
    parsed = parse_completion(parser, completion.text, completion.finish_reason, completion.error,
                              alternatives, sampled=sampled, constrained=constrained)
    distribution = parsed.distribution
    logprob_fields = (None, None, None, None) if distribution is None else (
        distribution.expected, distribution.entropy, distribution.mass,
        json.dumps([round(p, 6) for p in distribution.probs]))
    return Judgment(completion.item_id, completion.sample_idx, parsed.status, parsed.score, parsed.detail,
                    completion.text, completion.finish_reason, completion.prompt_tokens,
                    completion.completion_tokens, parser_label(parser), template_identity, parsed.method,
                    *logprob_fields, json.dumps(alternatives) if alternatives else None)


def run_identity(config: ScoreConfig, items: pl.DataFrame, template: JudgeTemplate) -> dict[str, Any]:
    """What a stored judgment depends on, including the settings only its backend reads. max_tokens is
    left out on purpose: raising it to retry truncated judgments must not make the run a different one."""
    sampling = config.sampling
    identity = {
        "input_fingerprint": fingerprint(items), "n_items": items.height, "template": template.identity,
        "parser": template.parser.name, "model": config.model, "model_fingerprint": model_fingerprint(config.model),
        "backend": config.backend, "samples": sampling.samples, "temperature": sampling.temperature,
        "top_p": sampling.top_p, "seed": sampling.seed, "top_logprobs": sampling.top_logprobs,
        "constrain_score": sampling.constrain_score,
    }
    if config.backend in LOCAL_BACKENDS:
        identity["dtype"] = config.dtype
    if sampling.temperature > 0 and config.backend in SAMPLERS:
        identity["sampler"] = SAMPLERS[config.backend]
    if config.backend == "vllm":
        identity["engine_args"] = dict(sorted(config.engine_args.items()))
    if config.backend == "openai":
        endpoint = config.endpoint
        identity.update(endpoint=endpoint.endpoint, use_n=endpoint.use_n, tokenizer=endpoint.tokenizer,
                        tokenizer_fingerprint=model_fingerprint(endpoint.tokenizer) if endpoint.tokenizer else "")
    return identity


def _pending_rows(pending: pl.DataFrame, items: pl.DataFrame) -> Iterator[dict[str, Any]]:
    """Pending items with their wanted sample indices, in input order."""
    wanted = pending.group_by("item_id", maintain_order=True).agg(pl.col("sample_idx").alias("samples"))
    yield from wanted.join(items.rename({"id": "item_id"}), on="item_id", maintain_order="left").iter_rows(named=True)


def _request(row: dict[str, Any], template: JudgeTemplate) -> Request:
    item = {**row, "id": row["item_id"]}
    return Request(item_id=row["item_id"], sample_indices=tuple(row["samples"]),
                   messages=tuple(template.render(item)))


def _unanswered(outstanding: dict[tuple[str, int], None]) -> list[Completion]:
    """Keep counts exact even if a backend drops a request: each becomes an explicit error."""
    return [Completion(item_id, idx, "", "", 0, 0, error="backend returned no completion for this request")
            for item_id, idx in outstanding]


def score(config: ScoreConfig, progress: Callable[[Progress], None] | None = None,
          backend: Backend | None = None) -> RunResult:
    """Score `config.data` into `config.out`, resuming whatever that run directory already holds.

    `backend` replaces the one named by `config.backend` (tests, custom engines); it is not closed.
    """
    loaded = load_items(config.data)
    items = loaded.items if config.data.limit is None else loaded.items.head(config.data.limit)
    template = load_template(config.template, config.template_dir)
    if config.sampling.constrain_score and not template.parser.whole_answer_is_score:
        raise ConfigError(f"--constrain-score restricts the answer to one score token, but template {template.name!r} "
                          f"(parser {template.parser.name}) answers with more than a score; use a score-only template "
                          "such as difficulty/intensity_score_only, or drop --constrain-score")
    if items.height:  # template errors surface here, before any model is loaded or called
        template.render(items.row(0, named=True))
    check_backend_name(config.backend)
    identity = run_identity(config, items, template)
    manifest_extra = {"dereason_version": __version__, "created_at": time.time(), "source": loaded.source,
                      "config": config.to_flat()}
    run_dir = config.out_path
    with RunStore.open(run_dir, identity, manifest_extra) as store:
        # Rewritten every time: fields outside the identity (extras added to the input later) reach stats.
        write_parquet_atomic(items, run_dir / "items.parquet")
        if loaded.quarantined.height:
            write_atomic(run_dir / "quarantine.jsonl", "".join(
                json.dumps(r) + "\n" for r in loaded.quarantined.iter_rows(named=True)))
        append_jsonl(run_dir / "invocations.jsonl",
                     {"started_at": time.time(), "dereason_version": __version__, "config": config.to_flat()})
        if config.retry_failed:
            log.info("retrying %d judgment(s) stored as error or truncated", store.retire(RETRIED_STATUSES))
        wanted = items.select(pl.col("id").alias("item_id")).join(
            pl.DataFrame({"sample_idx": range(config.sampling.samples)}, schema={"sample_idx": pl.Int64}),
            how="cross")
        pending = store.missing(wanted)
        log.info("%s: %d item(s) × %d sample(s); %d judgment(s) stored, %d to request",
                 run_dir, items.height, config.sampling.samples, wanted.height - pending.height, pending.height)
        if pending.height:
            own_backend = backend is None
            active = create_backend(config) if own_backend else backend
            try:
                _request_missing(store, active, config, template, pending, items, progress)
            finally:
                if own_backend:
                    active.close()
        result_summary, items_frame = write_aggregates(run_dir, requested=pending.height)
    _check_failures(result_summary, config.max_failure_fraction)
    return RunResult(run_dir=run_dir, requested=pending.height, summary=result_summary, per_item=items_frame)


def _request_missing(store: RunStore, backend: Backend, config: ScoreConfig, template: JudgeTemplate,
                     pending: pl.DataFrame, items: pl.DataFrame,
                     progress: Callable[[Progress], None] | None) -> None:
    outstanding: dict[tuple[str, int], None] = {}  # rendered, not yet answered (insertion-ordered)

    def requests() -> Iterator[Request]:
        for row in _pending_rows(pending, items):
            request = _request(row, template)
            for idx in request.sample_indices:
                outstanding[request.item_id, idx] = None
            yield request

    done = failed = 0
    settings = {"sampled": config.sampling.temperature > 0, "constrained": config.sampling.constrain_score}
    buffer: list[Judgment] = []
    last_commit = time.monotonic()

    def commit() -> None:
        nonlocal done, failed, last_commit
        store.append(buffer)
        done += len(buffer)
        failed += sum(j.status != Status.OK for j in buffer)
        buffer.clear()
        last_commit = time.monotonic()
        if progress:
            progress(Progress(done=done, total=pending.height, failed=failed))

    for completion in backend.generate(requests(), config.sampling):
        outstanding.pop((completion.item_id, completion.sample_idx), None)
        buffer.append(to_judgment(completion, template.parser, template.identity, **settings))
        if len(buffer) >= config.chunk_size or time.monotonic() - last_commit >= COMMIT_INTERVAL_SECONDS:
            commit()
    buffer.extend(to_judgment(c, template.parser, template.identity, **settings) for c in _unanswered(outstanding))
    if buffer:
        commit()


def write_aggregates(run_dir: Path, requested: int) -> tuple[dict[str, Any], pl.DataFrame]:
    """per_item.parquet and summary.json; `requested`: judgments this invocation asked a backend for."""
    judgments = read_judgments(run_dir, columns=AGGREGATED_COLUMNS)
    items_frame = per_item(judgments)
    result = {**summary(judgments, items_frame), "requested": requested}
    write_parquet_atomic(items_frame, run_dir / "per_item.parquet")
    write_atomic(run_dir / "summary.json", json.dumps(result, indent=2, sort_keys=True))
    return result, items_frame


def _check_failures(result: dict[str, Any], max_fraction: float) -> None:
    if result["failure_fraction"] is not None and result["failure_fraction"] > max_fraction:
        counts = ", ".join(f"{k} {v}" for k, v in result["status_counts"].items() if k != Status.OK)
        raise FailureThresholdError(
            f"{result['failed']} of {result['judgments']} judgments failed ({result['failure_fraction']:.1%}: "
            f"{counts}), above the allowed {max_fraction:.1%}; see load_judgments(run_dir) for raw outputs",
            result)


def reparse(run_dir: str | Path, parser_name: str | None = None) -> dict[str, Any]:
    """Parse stored raw outputs again (after a parser fix, or with another parser); no model call.

    Errors stay errors (there is no text to parse). With another parser, the manifest's identity names
    it from then on (resuming `score` with the template's own parser is then refused, naming both).
    Returns the new summary; raises FailureThresholdError, after writing it, when more judgments failed
    than the run allows.
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    name = parser_name or manifest["identity"]["parser"]
    parser = PARSERS.get(name)
    if parser is None:
        raise ConfigError(f"unknown parser {name!r}; choose one of {sorted(PARSERS)}")
    sampled = manifest["identity"]["temperature"] > 0
    constrained = manifest["identity"].get("constrain_score", False)
    updates = []
    for row in read_judgments(run_dir).filter(pl.col("status") != Status.ERROR).iter_rows(named=True):
        completion = Completion(row["item_id"], row["sample_idx"], row["raw_text"], row["finish_reason"],
                                row["prompt_tokens"], row["completion_tokens"])
        # Stored alternatives are where this parser version found the score; another parser's are elsewhere.
        same_parser = row["parser"] == parser_label(parser)
        stored = tuple(map(tuple, json.loads(row["top_logprobs"] or "[]"))) if same_parser else ()
        updates.append(to_judgment(completion, parser, row["template"], sampled=sampled, constrained=constrained,
                                   alternatives=stored))
    with RunStore.open(run_dir, manifest["identity"], {}) as store:
        store.update_parsed(updates)
        if parser.name != manifest["identity"]["parser"]:
            store.update_identity({"parser": parser.name})
        append_jsonl(run_dir / "invocations.jsonl", {"started_at": time.time(), "dereason_version": __version__,
                                                     "reparse": {"parser": parser_label(parser), "rows": len(updates)}})
        result = write_aggregates(run_dir, requested=0)[0]
    _check_failures(result, (manifest.get("config") or {}).get("max_failure_fraction", DEFAULT_MAX_FAILURE_FRACTION))
    return result
