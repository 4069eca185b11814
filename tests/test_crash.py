"""SIGKILL a scoring process at random points, resume each time: nothing lost, nothing doubled."""

import random
import subprocess
import sys

import polars as pl
from conftest import kill_when_stored

from curate.store import read_judgments

ITEMS, SAMPLES = 120, 3
TOTAL = ITEMS * SAMPLES


def command(run_dir):
    return [sys.executable, "-m", "curate.cli", "score", "bundled:math-sample", "--limit", str(ITEMS),
            "--samples", str(SAMPLES), "--temperature", "1.0", "--chunk-size", "8", "--batch-size", "8",
            "--out", str(run_dir), "--json", "--max-failure-fraction", "1"]


def test_killed_and_resumed_equals_uninterrupted(tmp_path):
    clean = tmp_path / "clean"
    subprocess.run(command(clean), check=True, capture_output=True)
    resumed = tmp_path / "resumed"
    rng = random.Random(2026)
    previous = 0
    for target in sorted(rng.sample(range(8, TOTAL - 60), 3)):
        after_kill = kill_when_stored(command(resumed), resumed, max(target, previous + 1))
        assert previous < after_kill < TOTAL, "the kill must land mid-run, after new commits"
        previous = after_kill
    subprocess.run(command(resumed), check=True, capture_output=True)

    columns = ["item_id", "sample_idx", "status", "score", "raw_text", "finish_reason"]
    got, want = read_judgments(resumed).select(columns), read_judgments(clean).select(columns)
    assert got.height == TOTAL and got.select("item_id", "sample_idx").is_unique().all()
    assert got.equals(want)
    assert pl.read_parquet(resumed / "per_item.parquet").equals(pl.read_parquet(clean / "per_item.parquet"))
