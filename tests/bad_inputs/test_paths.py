"""No command deletes, replaces or writes over what it reads, whatever the spelling of the paths (symlinks, `..`),
and what a killed split or export leaves beside its --out is tidied by the next run of it."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, invoke, write_jsonl
from fakes import ScriptedBackend

from curate.config import RunConfig
from curate.engine import score
from curate.store import read_judgments

ROWS = [{"id": f"q{i:02d}", "question": f"Problem {i}: what is {i} times {i + 2}?", "level": i % 5 + 1}
        for i in range(20)]


def scored(run_dir: Path, data: Path) -> Path:
    level = {r["id"]: r["level"] for r in ROWS}
    score(RunConfig.from_flat({"source": str(data), "out": str(run_dir), "template": "difficulty/intensity"}),
          backend=ScriptedBackend(lambda item_id, idx: (f"<score>{level[item_id]}</score>", "stop")))
    return run_dir


@pytest.fixture
def holder(tmp_path) -> Path:
    """holder/a/b/run (a run), holder/a/b/split (its split), and `link` → holder."""
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    holder = tmp_path / "holder"
    scored(holder / "a" / "b" / "run", data)
    assert invoke("split", holder / "a" / "b" / "run", "--out", holder / "a" / "b" / "split").exit_code == 0
    (tmp_path / "link").symlink_to(holder)
    return holder


def test_split_over_a_folder_holding_its_run_through_a_symlink_is_refused(holder, tmp_path):
    link = tmp_path / "link"
    result = invoke("split", link / "a" / "b" / "run", "--out", holder / "a", "--overwrite")
    assert_one_line_error(result, "holds the run directory it reads")
    result = invoke("split", holder / "a" / "b" / "run", "--out", link / "a", "--overwrite")
    assert_one_line_error(result, f"--out {link / 'a'} (that is {holder / 'a'}) holds the run directory it reads")
    assert read_judgments(holder / "a" / "b" / "run").height == 20


def test_export_over_a_folder_holding_its_split_through_a_symlink_is_refused(holder, tmp_path):
    result = invoke("export", tmp_path / "link" / "a" / "b" / "split", "--format", "jsonl", "--out", holder / "a",
                    "--overwrite")
    assert_one_line_error(result, "holds the split directory it reads")
    assert (holder / "a" / "b" / "split" / "sft.parquet").is_file()


def test_dot_dot_spellings_are_resolved_too(holder):
    spelled = holder / "a" / "b" / ".." / ".." / "a"
    result = invoke("split", holder / "a" / "b" / "run", "--out", spelled, "--overwrite")
    assert_one_line_error(result, "holds the run directory it reads")


def test_overwrite_never_deletes_a_run_directory_at_any_depth(holder, tmp_path):
    other = write_jsonl(tmp_path / "other.jsonl", ROWS[:5])
    scored(tmp_path / "elsewhere" / "x" / "y" / "z" / "run", other)
    result = invoke("split", holder / "a" / "b" / "run", "--out", tmp_path / "elsewhere", "--overwrite")
    assert_one_line_error(result, f"holds the run directory {tmp_path / 'elsewhere' / 'x' / 'y' / 'z' / 'run'}")
    assert read_judgments(tmp_path / "elsewhere" / "x" / "y" / "z" / "run").height == 5


def test_score_refuses_a_folder_that_is_neither_new_empty_nor_a_run(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    result = invoke("score", data, "--out", tmp_path / "home")
    assert_one_line_error(result, f"--out {tmp_path / 'home'} is not a run directory and is not empty (it holds "
                                  "notes.txt); give a new or empty folder")
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["notes.txt"]
    assert_one_line_error(invoke("score", data, "--out", "/"), "--out / is not a run directory and is not empty")


def test_a_report_never_replaces_a_file_of_a_run(holder):
    run = holder / "a" / "b" / "run"
    manifest = (run / "manifest.json").read_text()
    assert_one_line_error(invoke("stats", run, "--report", run / "manifest.html"),
                          "would replace manifest.json, a file of the run directory")
    assert_one_line_error(invoke("stats", run, "--report", run / "judgments.sqlite"),
                          "would replace judgments.sqlite, a file of the run directory")
    assert (run / "manifest.json").read_text() == manifest
    assert invoke("stats", run, "--report", run / "report.html").exit_code == 0  # new files, then its own again
    assert invoke("stats", run, "--report", run / "report.html").exit_code == 0


def _kill_inside_atomic_directory(command: list[str], out: Path, moment: str) -> None:
    """Run `curate COMMAND` in a child that SIGKILLs itself at `moment` of atomic_directory: 'staged' (its
    staging folder written whole) or 'set_aside' (the old --out renamed aside, the new one not yet in)."""
    child = f"""
import os, signal, sys
import curate.outdir as outdir
real_rename = os.rename
def rename(src, dst):
    real_rename(src, dst)
    if {moment!r} == "set_aside" and str(dst).endswith(".old"):
        os.kill(os.getpid(), signal.SIGKILL)
if {moment!r} == "staged":
    def rename(src, dst):
        if str(src).endswith(".tmp"):
            os.kill(os.getpid(), signal.SIGKILL)
        real_rename(src, dst)
outdir.os = type(os)("os_with_a_kill")
outdir.os.__dict__.update(os.__dict__)
outdir.os.rename = rename
from curate.cli import app
sys.argv = ["curate", *{[str(c) for c in command]!r}]
app()
"""
    finished = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert finished.returncode == -signal.SIGKILL, finished.stderr


def _beside(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_the_next_run_deletes_what_a_killed_split_left(holder, tmp_path):
    out = tmp_path / "split"
    command = ["split", holder / "a" / "b" / "run", "--out", out]
    _kill_inside_atomic_directory(command, out, "staged")
    assert len(_beside(out)) == 1 and not out.exists()
    assert invoke(*command).exit_code == 0
    assert _beside(out) == [] and (out / "manifest.json").is_file()


def test_an_interrupted_replacement_puts_the_old_folder_back(holder, tmp_path):
    out = tmp_path / "export"
    command = ["export", holder / "a" / "b" / "split", "--format", "jsonl", "--out", out]
    assert invoke(*command).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "sft.jsonl").write_text("the old export\n")
    _kill_inside_atomic_directory([*command, "--overwrite"], out, "set_aside")
    assert not out.exists() and any(name.endswith(".old") for name in _beside(out))
    result = invoke(*command)  # without --overwrite: the old folder is back, and is not replaced
    assert_one_line_error(result, "exists and is not empty; pass --overwrite")
    assert (out / "sft.jsonl").read_text() == "the old export\n" and _beside(out) == []
    assert invoke(*command, "--overwrite").exit_code == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_live_process_keeps_its_staging_folder(holder, tmp_path):
    out = tmp_path / "split"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        staging = tmp_path / f".split.{sleeper.pid}.0123abcd.tmp"
        staging.mkdir()
        assert invoke("split", holder / "a" / "b" / "run", "--out", out).exit_code == 0
        assert staging.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
