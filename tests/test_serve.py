"""Scoring through a real OpenAI-compatible server: `transformers serve` with the bundled judge."""

import subprocess
import sys
from pathlib import Path

from conftest import kill_when_stored

import curate
from curate.config import RunConfig
from curate.engine import score

LIMIT = 60


def served_config(tmp_path, base_url, model, name="served", **overrides) -> RunConfig:
    return RunConfig.from_flat({"source": "bundled:math-sample", "limit": LIMIT, "out": str(tmp_path / name),
                                  "backend": "openai", "base_url": base_url, "model": model,
                                  "max_in_flight": 4, **overrides})


def test_served_judge_agrees_with_the_in_process_one(tmp_path, served_judge):
    base_url, model = served_judge
    served = score(served_config(tmp_path, base_url, model))
    score(RunConfig.from_flat({"source": "bundled:math-sample", "limit": LIMIT, "out": str(tmp_path / "local")}))
    assert served.summary["status_counts"]["ok"] >= LIMIT - 3
    a, b = curate.load_judgments(tmp_path / "served"), curate.load_judgments(tmp_path / "local")
    agree = (a["score"] == b["score"]).sum()
    assert agree >= LIMIT - 2, f"greedy scores agree on {agree} of {LIMIT}"


def test_sigkill_mid_run_through_the_server_loses_and_duplicates_nothing(tmp_path, served_judge):
    base_url, model = served_judge
    run_dir = tmp_path / "killed"
    command = [str(Path(sys.executable).parent / "curate"), "score", "bundled:math-sample", "--limit", str(LIMIT),
               "--backend", "openai", "--base-url", base_url, "--model", model, "--max-in-flight", "4",
               "--chunk-size", "4", "--out", str(run_dir), "--json"]
    after_kill = kill_when_stored(command, run_dir, 12)
    assert 12 <= after_kill < LIMIT
    subprocess.run(command, check=True, capture_output=True)
    judgments = curate.load_judgments(run_dir)
    assert judgments.height == LIMIT and judgments["item_id"].is_unique().all()
