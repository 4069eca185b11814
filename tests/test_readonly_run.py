"""A finished run on a read-only filesystem (an archive, a shared read-only mount) can be read by every command."""

import json

from conftest import invoke


def test_stats_and_split_read_a_finished_run_on_a_read_only_filesystem(tmp_path, make_readonly):
    """Defect 8: the WAL-mode database could not be opened read-only ("unable to open database file")."""
    run = tmp_path / "archive" / "run"
    assert invoke("score", "bundled:math-sample", "--limit", 12, "--out", run).exit_code == 0
    make_readonly(tmp_path / "archive")
    stats = invoke("stats", run, "--resamples", 0, "--json")
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["run"]["n_items"] == 12
    split = invoke("split", run, "--out", tmp_path / "split", "--json")
    assert split.exit_code == 0, split.output
    assert sum(json.loads(split.stdout)["counts"].values()) == 12
