"""Run-directory behaviour of the engine: setup failures, refreshed items, the summary, re-parsing, identity."""

import json

import polars as pl
import pytest
from conftest import invoke, write_jsonl
from fakes import ScriptedBackend

from curate.config import RunConfig
from curate.engine import reparse, run_identity, score
from curate.errors import FailureThresholdError, RunDirError
from curate.parse import PARSERS
from curate.store import read_judgments as load_judgments
from curate.store import read_manifest
from curate.tasks import ScoreTask

ROWS = [{"id": f"q{i}", "question": f"Problem {i}: what is {i} + {i}?", "answer": str(2 * i)} for i in range(6)]


TASK = ScoreTask(PARSERS["score_only"], "t@1", sampled=False, constrained=False)


def job(tmp_path, rows=ROWS, **overrides) -> RunConfig:
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    return RunConfig.from_flat({"source": str(data), "out": str(tmp_path / "run"),
                                  "template": "difficulty/intensity", **overrides})


def tagged(item_id, idx):
    return (f"Reasoning. <score>{int(item_id[1:]) % 5 + 1}</score>", "stop")


def test_a_setup_failure_does_not_lock_the_run_to_its_settings(tmp_path):
    """Defect 4: a bad --model left a manifest that refused the corrected command, with 0 judgments stored."""
    run = tmp_path / "run"
    failed = invoke("score", "bundled:math-sample", "--limit", 2, "--model", tmp_path / "no-such-model", "--out", run)
    assert failed.exit_code == 1 and (run / "manifest.json").exists()
    corrected = invoke("score", "bundled:math-sample", "--limit", 2, "--out", run, "--json")
    assert corrected.exit_code == 0, corrected.output
    assert read_manifest(run)["identity"]["model"] == "bundled:tiny-judge"


def test_fields_added_to_the_input_later_reach_the_run(tmp_path):
    """Defect 6: items.parquet was written once, so a field added later never reached `stats`."""
    score(job(tmp_path), backend=ScriptedBackend(tagged))
    with_level = [{**row, "level": i % 5 + 1} for i, row in enumerate(ROWS)]
    result = score(job(tmp_path, rows=with_level), backend=ScriptedBackend(tagged))
    assert result.requested == 0
    items = pl.read_parquet(tmp_path / "run" / "items.parquet")
    assert items["extra"].struct.field("level").to_list() == [1, 2, 3, 4, 5, 1]
    stats = invoke("stats", tmp_path / "run", "--reference", "level", "--resamples", 0, "--json")
    assert stats.exit_code == 0, stats.output


def test_summary_json_records_what_was_requested(tmp_path):
    """Defect 6: the CLI printed `requested` but summary.json lacked it."""
    score(job(tmp_path), backend=ScriptedBackend(tagged))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["requested"] == 6
    score(job(tmp_path), backend=ScriptedBackend(tagged))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["requested"] == 0


def test_reparse_into_failures_exits_3_and_the_manifest_names_the_parser(tmp_path):
    """Defect 17: `reparse --parser X` exited 0 at 100% unparseable and the manifest kept the old parser."""
    score(job(tmp_path), backend=ScriptedBackend(tagged))
    with pytest.raises(FailureThresholdError, match="6 of 6 judgments failed"):
        reparse(tmp_path / "run", "score_only")
    assert read_manifest(tmp_path / "run")["identity"]["parser"] == "score_only"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status_counts"]["unparseable"] == 6
    result = invoke("reparse", tmp_path / "run", "--parser", "score_only")
    assert result.exit_code == 3 and "6 of 6 judgments failed" in result.stderr
    with pytest.raises(RunDirError, match="parser: stored 'score_only', now 'tagged_score'"):
        score(job(tmp_path), backend=ScriptedBackend(tagged))
    assert reparse(tmp_path / "run", "tagged_score")["status_counts"]["ok"] == 6
    assert score(job(tmp_path), backend=ScriptedBackend(tagged)).requested == 0


@pytest.mark.parametrize(("backend", "changed", "key"), [
    ("transformers", {"dtype": "bfloat16"}, "dtype"),
    ("vllm", {"engine_args": {"max_model_len": 4096}}, "engine_args"),
    ("openai", {"use_n": True}, "use_n"),
    ("openai", {"endpoint": "completions", "tokenizer": "bundled:tiny-judge"}, "endpoint"),
])
def test_identity_holds_the_settings_the_backend_reads(tmp_path, backend, changed, key):
    """Defect 19: dtype, --endpoint/--tokenizer, use_n and engine_args were not part of the run's identity."""
    from curate.data.items import load_items
    from curate.templates import load_template

    base = job(tmp_path, backend=backend)
    items, template = load_items(base.data).items, load_template(base.template)
    other = job(tmp_path, backend=backend, **changed)
    assert run_identity(base, items, template, TASK)[key] != run_identity(other, items, template, TASK)[key]


def test_a_tokenizer_is_identified_by_its_files(tmp_path):
    from curate.data.items import load_items
    from curate.templates import load_template

    config = job(tmp_path, backend="openai", endpoint="completions", tokenizer="bundled:tiny-judge")
    identity = run_identity(config, load_items(config.data).items, load_template(config.template), TASK)
    assert identity["tokenizer"] == "bundled:tiny-judge" and len(identity["tokenizer_fingerprint"]) == 16


def test_sampled_logprob_scoring_scores_what_each_sample_drew(tmp_path):
    """Defect 12: with --samples > 1 every sample got the argmax of one distribution, so α = 1 meant nothing."""
    args = ["bundled:math-sample", "--limit", 20, "--samples", 4, "--temperature", 1.0, "--top-logprobs", 20,
            "--max-tokens", 1, "--out", tmp_path / "run"]
    assert invoke("score", *args, "--json").exit_code in (0, 3)
    frame = load_judgments(tmp_path / "run").filter(pl.col("status") == "ok")
    per_item = frame.group_by("item_id").agg(pl.col("score").n_unique().alias("distinct"))
    assert per_item["distinct"].max() > 1  # samples disagree somewhere, as draws from a spread distribution do
    assert (frame["score"].cast(pl.String) == frame["raw_text"].str.strip_chars()).all()
    assert frame["expected_score"].null_count() == 0  # the distribution is still kept
    items = pl.read_parquet(tmp_path / "run" / "per_item.parquet")
    assert items["expected_mean"].null_count() == 0 and (items["n_logprobs"] > 0).all()
    before = load_judgments(tmp_path / "run").select("item_id", "sample_idx", "status", "score")
    reparse(tmp_path / "run")
    assert load_judgments(tmp_path / "run").select("item_id", "sample_idx", "status", "score").equals(before)
    stats = invoke("stats", tmp_path / "run", "--resamples", 0, "--json")
    assert json.loads(stats.stdout)["self_consistency"]["alpha"]["value"] < 1.0


def test_a_sampled_run_records_how_its_backend_draws(tmp_path):
    """A sampled run begun with another sampler must not be resumed with this one: its draws would differ."""
    from curate.data.items import load_items
    from curate.templates import load_template

    sampled = job(tmp_path, samples=2, temperature=1.0)
    items, template = load_items(sampled.data).items, load_template(sampled.template)
    assert "sampler" in run_identity(sampled, items, template, TASK)
    assert "sampler" not in run_identity(job(tmp_path), items, template, TASK)  # greedy: nothing is drawn
    assert "sampler" not in run_identity(job(tmp_path, samples=2, temperature=1.0, backend="openai"), items, template, TASK)
