"""`curate split`: a scored run → sft/rl/unscored with a manifest, arms, stages and hygiene."""

import hashlib
import json

import polars as pl
from conftest import assert_one_line_error, invoke, write_jsonl
from fakes import ScriptedBackend
from typer.testing import CliRunner

from curate.cli import app
from curate.command_config import SplitConfig
from curate.config import RunConfig
from curate.engine import score
from curate.split.directory import make_split
from curate.split.rules import TauRule

BENCHMARK_PROBLEM = ("A train leaves the station at noon traveling at sixty miles per hour toward a city "
                     "that lies one hundred and twenty miles away; when does it arrive there")
ROWS = [{"id": f"q{i:02d}", "question": f"Problem {i}: compute the value of {i} squared plus {i}.",
         "answer": str(i * i + i), "level": i % 5 + 1, "domain": "algebra" if i % 3 else "geometry"}
        for i in range(40)]
ROWS += [{"id": "dup", "question": "problem 0:  compute the value of 0 squared plus 0 .", "answer": "0", "level": 1,
          "domain": "algebra"},
         {"id": "leak", "question": "Rephrased: " + BENCHMARK_PROBLEM + "?", "answer": "2 pm", "level": 2,
          "domain": "algebra"},
         {"id": "broken", "question": "A problem the judge fails on.", "answer": "x", "level": 3, "domain": "algebra"}]


def answer(item_id: str, idx: int):
    if item_id == "broken":
        return RuntimeError("HTTP 500")
    level = next(r["level"] for r in ROWS if r["id"] == item_id)
    return (f"<score>{level}</score>", "stop")


def make_run(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    score(RunConfig.from_flat({"source": str(data), "out": str(tmp_path / "run"), "template": "difficulty/intensity",
                                 "max_failure_fraction": 1.0}), backend=ScriptedBackend(answer))
    benchmark = write_jsonl(tmp_path / "bench.jsonl", [{"question": BENCHMARK_PROBLEM}, {"question": "short"}])
    return tmp_path / "run", benchmark


def digest(directory):
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_split_writes_sides_manifest_and_hygiene_report(tmp_path):
    run, benchmark = make_run(tmp_path)
    manifest = make_split(run, tmp_path / "split", SplitConfig(tau_rule=TauRule(tau=3), decontaminate=[str(benchmark)]))
    sft, rl, unscored = (pl.read_parquet(tmp_path / "split" / f"{s}.parquet") for s in ("sft", "rl", "unscored"))
    assert set(sft["item_id"]).isdisjoint(rl["item_id"])
    assert (sft["score"] <= 3).all() and (rl["score"] > 3).all()
    assert unscored["item_id"].to_list() == ["broken"] and unscored["score"].null_count() == 1
    removed = {row["item_id"]: row["reason"] for row in map(json.loads, (tmp_path / "split" / "removed.jsonl")
                                                             .read_text().splitlines())}
    assert set(removed) == {"dup", "leak"}
    assert "duplicate of q00" in removed["dup"] and "13-gram overlap" in removed["leak"]
    assert manifest["counts"] == {"sft": sft.height, "rl": rl.height, "unscored": 1}
    assert sft.height + rl.height + 1 + len(removed) == len(ROWS)
    assert manifest["tau"] == 3 and manifest["tau_method"] == "fixed" and manifest["run"]["template"].startswith(
        "difficulty/intensity@")
    assert "level" in sft.columns  # input fields are carried through


def test_random_arm_has_the_split_sizes_and_same_seed_gives_same_bytes(tmp_path):
    run, _ = make_run(tmp_path)
    first = make_split(run, tmp_path / "a", SplitConfig(tau_rule=TauRule(tau=3), seed=7))
    make_split(run, tmp_path / "b", SplitConfig(tau_rule=TauRule(tau=3), seed=7))
    make_split(run, tmp_path / "c", SplitConfig(tau_rule=TauRule(tau=3), seed=8))
    assert first["arms"]["random"] == {"sft": first["counts"]["sft"], "rl": first["counts"]["rl"]}
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a")["arms/random/sft.parquet"] != digest(tmp_path / "c")["arms/random/sft.parquet"]
    reversed_sft = pl.read_parquet(tmp_path / "a" / "arms" / "reversed" / "sft.parquet")
    assert (reversed_sft["score"] > 3).all()


def test_cli_quantile_budget_and_stages(tmp_path):
    run, _ = make_run(tmp_path)
    runner = CliRunner()
    budget = json.loads(runner.invoke(app, ["split", str(run), "--out", str(tmp_path / "s1"), "--rl-budget", "10",
                                            "--json"]).stdout)
    assert budget["tau_method"].startswith("budget") and budget["counts"]["rl"] <= 10
    staged = runner.invoke(app, ["split", str(run), "--out", str(tmp_path / "s2"), "--stages", "2", "--json"])
    assert staged.exit_code == 0, staged.output
    stages = [pl.read_parquet(tmp_path / "s2" / "stages" / f"stage_{i}.parquet") for i in (1, 2)]
    assert abs(stages[0].height - stages[1].height) <= 1
    assert stages[0]["score"].max() <= stages[1]["score"].min()
    both = runner.invoke(app, ["split", str(run), "--out", str(tmp_path / "s3"), "--rl-budget", "5", "--quantile", "0.2"])
    assert both.exit_code == 1 and "one way" in both.stderr


def test_cli_export_hf_and_verl_load_in_their_consumers(tmp_path):
    import datasets
    import pyarrow.parquet as pq

    run, _ = make_run(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["split", str(run), "--out", str(tmp_path / "split")]).exit_code == 0
    hf = runner.invoke(app, ["export", str(tmp_path / "split"), "--format", "hf", "--out", str(tmp_path / "hf")])
    assert hf.exit_code == 0, hf.output
    loaded = datasets.load_from_disk(str(tmp_path / "hf"))
    manifest = json.loads((tmp_path / "split" / "manifest.json").read_text())
    assert loaded["sft"].num_rows == manifest["counts"]["sft"] and loaded["rl"].num_rows == manifest["counts"]["rl"]
    assert "score_histogram.png" in (tmp_path / "hf" / "README.md").read_text()
    verl = runner.invoke(app, ["export", str(tmp_path / "split"), "--format", "verl", "--out", str(tmp_path / "verl")])
    assert verl.exit_code == 0, verl.output
    table = pq.read_table(tmp_path / "verl" / "rl.parquet")
    assert {"data_source", "prompt", "ability", "reward_model", "extra_info"} <= set(table.column_names)
    assert table.num_rows == manifest["counts"]["rl"]
    wrong = runner.invoke(app, ["export", str(tmp_path / "split"), "--format", "verl", "--out", str(tmp_path / "v2"),
                                "--push-to-hub", "org/name"])
    assert wrong.exit_code == 1 and "--push-to-hub needs --format hf" in wrong.stderr


def tree(folder):
    """Every path under `folder` (hidden ones included) with its bytes: what a refused command must not change.
    SQLite's shared-memory files, which any reader of a run may create, are left out."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))
            if not p.name.endswith(("-shm", "-wal"))}


def test_split_refuses_to_write_into_a_run_directory(tmp_path):
    """`split RUN --out RUN` overwrote the run's manifest.json; `stats` and a resumed `score` then crashed."""
    run, _ = make_run(tmp_path)
    other = tmp_path / "other-run"
    other.mkdir()
    (other / "manifest.json").write_text((run / "manifest.json").read_text())
    before = tree(tmp_path)
    for out, message in ((run, "is the run directory it reads"), (run / "split", "is inside the run directory"),
                         (tmp_path, "holds the run directory it reads"), (other, "is the run directory"),
                         (other / "split", "is inside the run directory")):
        for overwrite in ((), ("--overwrite",)):
            assert_one_line_error(invoke("split", run, "--out", out, *overwrite), message)
    assert tree(tmp_path) == before
    assert invoke("stats", run, "--resamples", "0").exit_code == 0


def test_export_refuses_its_split_directory_and_run_directories(tmp_path):
    run, _ = make_run(tmp_path)
    assert invoke("split", run, "--out", tmp_path / "split").exit_code == 0
    before = tree(tmp_path)
    for out, message in ((tmp_path / "split", "is the split directory it reads"),
                         (tmp_path / "split" / "export", "is inside the split directory it reads"),
                         (run, "is the run directory"), (run / "export", "is inside the run directory")):
        assert_one_line_error(invoke("export", tmp_path / "split", "--format", "jsonl", "--out", out, "--overwrite"),
                              message)
    assert tree(tmp_path) == before


def test_resplit_and_reexport_need_overwrite_and_leave_no_stale_files(tmp_path):
    """Re-splitting into a folder kept its old stage_3..5, and export shipped them beside the new stages."""
    run, _ = make_run(tmp_path)
    split, export = tmp_path / "split", tmp_path / "export"
    assert invoke("split", run, "--out", split, "--stages", "5").exit_code == 0
    assert invoke("export", split, "--format", "jsonl", "--out", export).exit_code == 0
    before = tree(tmp_path)
    assert_one_line_error(invoke("split", run, "--out", split, "--stages", "2"), "pass --overwrite")
    assert_one_line_error(invoke("export", split, "--format", "parquet", "--out", export), "pass --overwrite")
    assert tree(tmp_path) == before

    assert invoke("split", run, "--out", split, "--stages", "2", "--drop-unscored", "--overwrite").exit_code == 0
    assert sorted(p.name for p in (split / "stages").iterdir()) == ["stage_1.parquet", "stage_2.parquet"]
    assert not (split / "unscored.parquet").exists()
    assert invoke("export", split, "--format", "jsonl", "--out", export, "--overwrite").exit_code == 0
    exported = sorted(p.name for p in export.iterdir())
    assert "stage_3.jsonl" not in exported and "unscored.jsonl" not in exported and "stage_2.jsonl" in exported
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging or old folder


def test_an_empty_out_folder_is_used_without_overwrite(tmp_path):
    run, _ = make_run(tmp_path)
    (tmp_path / "split").mkdir()
    assert invoke("split", run, "--out", tmp_path / "split").exit_code == 0
    assert (tmp_path / "split" / "manifest.json").is_file()


def test_a_failed_split_or_export_leaves_nothing_and_keeps_the_old_folder(tmp_path, monkeypatch):
    """A split that failed half-way left sft/rl/unscored/arms without a manifest."""
    import curate.export.exporters
    import curate.split.directory

    run, _ = make_run(tmp_path)
    assert invoke("split", run, "--out", tmp_path / "old").exit_code == 0
    assert invoke("export", tmp_path / "old", "--format", "parquet", "--out", tmp_path / "export").exit_code == 0
    before = tree(tmp_path)
    real = curate.split.directory.write_atomic

    def failing(path, data):
        if path.name in ("manifest.json", "rl.parquet"):
            raise OSError(28, "No space left on device")
        real(path, data)

    def failing_parquet(frame, path):
        if path.name == "rl.parquet":
            raise OSError(28, "No space left on device")
        real_parquet(frame, path)

    real_parquet = curate.split.directory.write_parquet_atomic
    monkeypatch.setattr(curate.split.directory, "write_atomic", failing)
    monkeypatch.setattr(curate.split.directory, "write_parquet_atomic", failing_parquet)
    monkeypatch.setattr(curate.export.exporters, "write_atomic", failing)
    assert_one_line_error(invoke("split", run, "--out", tmp_path / "new" / "split"), "No space left on device")
    assert_one_line_error(invoke("split", run, "--out", tmp_path / "old", "--tau", "2", "--overwrite"),
                          f"cannot use {tmp_path / 'old'}: No space left on device")
    assert_one_line_error(invoke("export", tmp_path / "old", "--format", "parquet", "--out", tmp_path / "export",
                                 "--overwrite"), "No space left on device")
    assert tree(tmp_path) == before  # nothing new (not even the parent folder "new"), the old folders intact


def fill(folder, leave: int):
    """Fill the small filesystem up to `leave` bytes."""
    import os

    stat = os.statvfs(folder)
    (folder / "filler").write_bytes(b"\0" * max(stat.f_bavail * stat.f_frsize - leave, 0))


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, small_fs):
    run, _ = make_run(tmp_path)
    assert invoke("split", run, "--out", tmp_path / "split").exit_code == 0
    fill(small_fs, 16 * 1024)
    before = tree(small_fs)
    assert_one_line_error(invoke("split", run, "--out", small_fs / "deep" / "split"), "No space left on device")
    for fmt in ("parquet", "jsonl", "hf"):
        assert_one_line_error(invoke("export", tmp_path / "split", "--format", fmt, "--out", small_fs / "export"),
                              "No space left on device")
    assert tree(small_fs) == before


def test_out_that_is_a_file_is_one_line(tmp_path):
    run, _ = make_run(tmp_path)
    assert invoke("split", run, "--out", tmp_path / "split").exit_code == 0
    (tmp_path / "file").write_text("x")
    assert_one_line_error(invoke("split", run, "--out", tmp_path / "file"), "is a file")
    assert_one_line_error(invoke("export", tmp_path / "split", "--format", "hf", "--out", tmp_path / "file"),
                          "is a file")
    assert (tmp_path / "file").read_text() == "x"


def test_a_read_only_parent_is_one_line(tmp_path, make_readonly):
    run, _ = make_run(tmp_path)
    (tmp_path / "locked").mkdir()
    make_readonly(tmp_path / "locked")
    assert_one_line_error(invoke("split", run, "--out", tmp_path / "locked" / "split"),
                          f"cannot use {tmp_path / 'locked' / 'split'}: Read-only file system")
    assert list((tmp_path / "locked").iterdir()) == []


def test_tau_per_domain_is_printed_and_carded_readably(tmp_path):
    """Means of three samples make τ a fraction (3.3333333333333335): printed to three significant digits, one
    `domain τ` per domain, and the card's per-domain detail is a table, not a JSON blob."""
    data = write_jsonl(tmp_path / "data.jsonl", ROWS[:40])
    levels = {r["id"]: r["level"] for r in ROWS}
    score(RunConfig.from_flat({"source": str(data), "out": str(tmp_path / "run"), "template": "difficulty/intensity",
                                 "samples": 3, "temperature": 1.0}),
          backend=ScriptedBackend(lambda item_id, idx: (f"<score>{min(levels[item_id] + (idx == 0), 5)}</score>",
                                                        "stop")))
    split = invoke("split", tmp_path / "run", "--out", tmp_path / "split", "--quantile", "0.3", "--per-domain")
    assert split.exit_code == 0, split.output
    tau = json.loads((tmp_path / "split" / "manifest.json").read_text())["tau"]
    assert tau == {"algebra": 4.333333333333333, "geometry": 4.333333333333333}
    assert "τ │ algebra 4.33, geometry 4.33 (per_domain_quantile" in " ".join(split.stdout.split())
    assert "4.333" not in split.stdout
    assert invoke("export", tmp_path / "split", "--format", "hf", "--out", tmp_path / "hf").exit_code == 0
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    body = card.split("---", 2)[2]
    assert "{" not in body and "4.333" not in body
    assert "| domain | τ | n_at_tau | n_rl | n_scored | n_sft | q | rl_fraction | target_n_rl |" in body
    assert "| algebra | 4.33 | " in body and "| geometry | 4.33 | " in body
