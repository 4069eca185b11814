"""per_item.parquet stands in for aggregating the store only while the store holds what it was aggregated from:
its stamp names the store's generation, which every change to the judgments (by curate or any SQLite client) raises."""

import json
import sqlite3

import polars as pl
import pytest
from conftest import invoke, write_jsonl
from fakes import ScriptedBackend
from test_store import IDENTITY, judgment

from curate.config import RunConfig
from curate.engine import score
from curate.identity import IDENTITY_DEFAULTS
from curate.runs import aggregated_now
from curate.store import (
    PER_ITEM,
    RunStore,
    read_judgments,
    read_manifest,
    stored_generation,
)
from curate.tasks import rebuild_task
from curate.tasks.score import Judgment, ScoreTask

ROWS = [{"id": f"q{i:02d}", "question": f"Problem {i}: count the ways.", "level": i % 5 + 1} for i in range(12)]


@pytest.fixture
def run(tmp_path):
    level = {r["id"]: r["level"] for r in ROWS}
    backend = ScriptedBackend(lambda item_id, idx: (f"<score>{level[item_id]}</score>", "stop"))
    score(RunConfig.from_flat({"source": str(write_jsonl(tmp_path / "data.jsonl", ROWS)), "out": str(tmp_path / "run"),
                               "template": "difficulty/intensity", "samples": 2, "temperature": 1.0}),
          backend=backend)
    return tmp_path / "run"


def aggregated_from_the_store(run_dir):
    identity = read_manifest(run_dir)["identity"]
    task = rebuild_task({**IDENTITY_DEFAULTS, **identity})
    return task.aggregate(read_judgments(run_dir, columns=task.aggregated_columns))[0]


def test_a_fresh_per_item_is_read_instead_of_the_store_and_equals_its_aggregate(run, monkeypatch):
    expected = aggregated_from_the_store(run)
    monkeypatch.setattr("curate.runs.read_judgments", lambda *a, **k: pytest.fail("the store was read"))
    assert aggregated_now(run, read_manifest(run)["identity"]).equals(expected)


@pytest.mark.parametrize("change", [
    "UPDATE judgments SET score = 1, status = 'ok' WHERE item_id = 'q04'",
    "DELETE FROM judgments WHERE item_id IN ('q01', 'q02')",
    ("INSERT INTO judgments SELECT item_id, 2, status, score, detail, raw_text, finish_reason, prompt_tokens, "
     "completion_tokens, parser, template, score_method, expected_score, score_entropy, score_mass, score_probs, "
     "top_logprobs, created_at FROM judgments WHERE item_id = 'q03' AND sample_idx = 0"),
])
def test_a_change_to_the_judgments_by_another_sqlite_client_makes_per_item_stale(run, change):
    stamped = pl.read_parquet(run / PER_ITEM)
    before = stored_generation(run)
    with sqlite3.connect(run / "judgments.sqlite") as db:
        db.execute(change)
    assert stored_generation(run) > before
    now = aggregated_now(run, read_manifest(run)["identity"])
    assert now.equals(aggregated_from_the_store(run))
    assert not now.equals(stamped)


def test_another_identity_or_a_store_that_keeps_no_generation_is_aggregated_again(run, monkeypatch):
    identity, reads = read_manifest(run)["identity"], []
    monkeypatch.setattr("curate.runs.read_judgments", lambda *a, **k: reads.append(a) or read_judgments(*a, **k))
    aggregated_now(run, identity)
    assert reads == []
    aggregated_now(run, {**identity, "max_tokens": identity["max_tokens"] + 1})  # as update_identity leaves it
    assert len(reads) == 1
    with sqlite3.connect(run / "judgments.sqlite") as db:
        db.execute("DROP TABLE generation")
    assert stored_generation(run) is None
    aggregated_now(run, identity)
    assert len(reads) == 2


def test_curate_counts_its_own_changes(tmp_path):
    with RunStore.open(tmp_path, IDENTITY, {}, Judgment) as store:
        assert stored_generation(tmp_path) == 0
        store.append([judgment("a", 0), judgment("b", 0, "error", None)])
        assert stored_generation(tmp_path) == 2
        store.retire(["error"])
        store.update_parsed([judgment("a", 0, score=4)], ["score"])
    assert stored_generation(tmp_path) == 4  # per row: 2 inserts, the retired one's delete, the re-parsed one's update


def test_stats_take_the_fresh_per_item_and_say_what_aggregating_the_judgments_says(run, monkeypatch):
    (run / PER_ITEM).rename(run / "aside.parquet")
    aggregated = invoke("stats", run, "--json", "--resamples", 50)
    assert aggregated.exit_code == 0, aggregated.output
    (run / "aside.parquet").rename(run / PER_ITEM)
    monkeypatch.setattr(ScoreTask, "aggregate", lambda *a: pytest.fail("the judgments were aggregated again"))
    fresh = invoke("stats", run, "--json", "--resamples", 50)
    assert fresh.exit_code == 0, fresh.output
    assert json.loads(fresh.stdout) == json.loads(aggregated.stdout)
