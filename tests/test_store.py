import os
import sqlite3

import polars as pl
import pytest

from curate.errors import RunDirError
from curate.store import RunStore, read_judgments, read_manifest
from curate.tasks.score import Judgment

IDENTITY = {"input_fingerprint": "abc", "template": "t@1", "model": "m"}


def judgment(item_id: str, idx: int, status: str = "ok", score: int | None = 3) -> Judgment:
    return Judgment(item_id, idx, status, score, "", f"text {item_id}/{idx}", "stop", 5, 1, "score_only@1", "t@1",
                    "decoded" if status == "ok" else "", None, None, None, None, None)


def keys(*pairs):
    return pl.DataFrame(list(pairs), schema={"item_id": pl.String, "sample_idx": pl.Int64}, orient="row")


def test_append_then_missing_and_read(tmp_path):
    with RunStore.open(tmp_path, IDENTITY, {"note": "x"}, Judgment) as store:
        store.append([judgment("a", 0), judgment("a", 1, "truncated", None)])
        missing = store.missing(keys(("a", 0), ("a", 1), ("b", 0), ("b", 1)))
    assert missing.rows() == [("b", 0), ("b", 1)]
    frame = read_judgments(tmp_path)
    assert frame.select("item_id", "sample_idx", "status", "score").rows() == [("a", 0, "ok", 3), ("a", 1, "truncated", None)]
    assert frame["raw_text"].to_list() == ["text a/0", "text a/1"]
    assert read_manifest(tmp_path) == {"identity": IDENTITY, "note": "x"}


def test_a_duplicate_rolls_back_the_whole_chunk(tmp_path):
    with RunStore.open(tmp_path, IDENTITY, {}, Judgment) as store:
        store.append([judgment("a", 0)])
        with pytest.raises(sqlite3.IntegrityError):
            store.append([judgment("b", 0), judgment("a", 0)])
    assert read_judgments(tmp_path)["item_id"].to_list() == ["a"]


def test_second_process_is_locked_out(tmp_path):
    with RunStore.open(tmp_path, IDENTITY, {}, Judgment):
        with pytest.raises(RunDirError, match="in use"):
            RunStore.open(tmp_path, IDENTITY, {}, Judgment)
    RunStore.open(tmp_path, IDENTITY, {}, Judgment).close()  # released with the first holder


def test_other_identity_is_refused_naming_the_difference(tmp_path):
    with RunStore.open(tmp_path, IDENTITY, {}, Judgment) as store:
        store.append([judgment("a", 0)])
    with pytest.raises(RunDirError, match=r"template: stored 't@1', now 't@2'"):
        RunStore.open(tmp_path, {**IDENTITY, "template": "t@2"}, {}, Judgment)


def test_a_run_without_judgments_takes_the_new_identity(tmp_path):
    """A setup error (bad model path) after the manifest was written must not lock the folder to those settings."""
    RunStore.open(tmp_path, {**IDENTITY, "model": "./no/such/model"}, {}, Judgment).close()
    RunStore.open(tmp_path, IDENTITY, {}, Judgment).close()
    assert read_manifest(tmp_path)["identity"] == IDENTITY


def test_retired_judgments_keep_the_identity(tmp_path):
    with RunStore.open(tmp_path, IDENTITY, {}, Judgment) as store:
        store.append([judgment("a", 0, "error", None)])
        store.retire(["error"])
    with pytest.raises(RunDirError, match="different run"):
        RunStore.open(tmp_path, {**IDENTITY, "model": "other"}, {}, Judgment)


def test_identity_keys_added_later_default_for_older_runs(tmp_path):
    with RunStore.open(tmp_path, IDENTITY, {}, Judgment) as store:
        store.append([judgment("a", 0)])
    RunStore.open(tmp_path, {**IDENTITY, "dtype": "auto", "use_n": False}, {}, Judgment).close()
    with pytest.raises(RunDirError, match=r"dtype: stored 'auto', now 'bfloat16'"):
        RunStore.open(tmp_path, {**IDENTITY, "dtype": "bfloat16"}, {}, Judgment)


def test_out_pointing_at_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a run directory"):
        RunStore.open(tmp_path / "file", IDENTITY, {}, Judgment)


def test_a_full_disk_is_an_os_error_naming_the_database_and_keeps_what_was_committed(small_fs):
    run_dir = small_fs / "run"
    with RunStore.open(run_dir, IDENTITY, {}, Judgment) as store:
        store.append([judgment("a", 0)])
        big = [judgment(f"b{i}", 0)._replace(raw_text="x" * 4000) for i in range(200)]
        with pytest.raises(OSError, match="No space left on device") as raised:
            store.append(big)
    assert raised.value.filename.endswith("judgments.sqlite")
    assert read_judgments(run_dir)["item_id"].to_list() == ["a"]


def test_a_finished_run_reads_on_a_read_only_filesystem(tmp_path, make_readonly):
    run_dir = tmp_path / "ro" / "run"
    with RunStore.open(run_dir, IDENTITY, {}, Judgment) as store:
        store.append([judgment("a", 0), judgment("b", 0)])
    make_readonly(tmp_path / "ro")
    assert read_judgments(run_dir)["item_id"].to_list() == ["a", "b"]
    assert not list(run_dir.glob("*-shm"))


def test_retire_moves_failures_aside_keeping_them(tmp_path):
    with RunStore.open(tmp_path, IDENTITY, {}, Judgment) as store:
        store.append([judgment("a", 0), judgment("b", 0, "error", None), judgment("c", 0, "truncated", None),
                      judgment("d", 0, "unparseable", None)])
        assert store.retire(["error", "truncated"]) == 2
        assert store.missing(keys(("a", 0), ("b", 0), ("c", 0), ("d", 0))).rows() == [("b", 0), ("c", 0)]
    assert sorted(read_judgments(tmp_path, table="retired")["item_id"].to_list()) == ["b", "c"]


def test_no_temporary_files_are_left(tmp_path):
    with RunStore.open(tmp_path, IDENTITY, {}, Judgment) as store:
        store.append([judgment("a", 0)])
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_reading_a_directory_without_a_run_says_so(tmp_path):
    with pytest.raises(RunDirError, match="no judgments"):
        read_judgments(tmp_path)


# The judgments table as every run before the task seam made it: a run directory from then must stay readable
# and resumable, so the table the score task's record type makes has to be this one, column for column.
TABLE_BEFORE_TASKS = """CREATE TABLE judgments (
    item_id TEXT NOT NULL, sample_idx INTEGER NOT NULL, status TEXT NOT NULL, score INTEGER,
    detail TEXT NOT NULL, raw_text TEXT NOT NULL, finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    parser TEXT NOT NULL, template TEXT NOT NULL, score_method TEXT NOT NULL, expected_score REAL,
    score_entropy REAL, score_mass REAL, score_probs TEXT, top_logprobs TEXT, created_at REAL NOT NULL,
    PRIMARY KEY (item_id, sample_idx)) WITHOUT ROWID"""


def test_the_score_task_makes_the_table_runs_were_made_with(tmp_path):
    import sqlite3

    before = sqlite3.connect(tmp_path / "before.sqlite")
    before.execute(TABLE_BEFORE_TASKS)
    with RunStore.open(tmp_path / "run", IDENTITY, {}, Judgment) as store:
        store.append([judgment("a", 0)])
    now = sqlite3.connect(tmp_path / "run" / "judgments.sqlite")
    assert now.execute("PRAGMA table_info(judgments)").fetchall() == before.execute(
        "PRAGMA table_info(judgments)").fetchall()


def test_reading_a_column_another_task_does_not_store_names_the_run_kind(tmp_path):
    from curate.errors import RunDirError
    from curate.tasks.responses import Response

    with RunStore.open(tmp_path, {**IDENTITY, "task": "solve"}, {}, Response) as store:
        store.append([Response("a", 0, "correct", "", "#### 4", "stop", 5, 3, "t@1", "gsm8k@1", "4")])
    assert read_judgments(tmp_path)["answer"].to_list() == ["4"]
    with pytest.raises(RunDirError, match="is a solve run: its records have no score"):
        read_judgments(tmp_path, columns=["item_id", "score"])


def _stored_run(tmp_path):
    with RunStore.open(tmp_path, IDENTITY, {}, Judgment) as store:
        store.append([judgment(f"i{n:03d}", 0) for n in range(400)])
    return tmp_path / "judgments.sqlite"


@pytest.mark.parametrize("damage", ["zero bytes", "deleted"])
def test_a_manifest_whose_judgments_are_lost_is_refused_not_started_again(tmp_path, damage):
    database = _stored_run(tmp_path)
    if damage == "deleted":
        database.unlink()
    else:
        database.write_bytes(b"")
    state = "is missing" if damage == "deleted" else r"holds no judgments table \(it was emptied or replaced\)"
    with pytest.raises(RunDirError, match=f"judgments.sqlite {state}, but .*manifest.json records a run made there: "
                                          "its judgments are lost"):
        RunStore.open(tmp_path, {**IDENTITY, "model": "another"}, {}, Judgment)
    assert read_manifest(tmp_path)["identity"] == IDENTITY


@pytest.mark.parametrize("damage", ["half truncated", "random bytes"])
def test_a_damaged_database_is_one_error_naming_the_file(tmp_path, damage):
    database = _stored_run(tmp_path)
    content = database.read_bytes()
    database.write_bytes(content[: len(content) // 2] if damage == "half truncated" else os.urandom(len(content)))
    hint = "restore it from a backup"
    with pytest.raises(RunDirError, match=f"cannot read {database}: .*; the file is damaged: {hint}"):
        read_judgments(tmp_path)
    with pytest.raises(RunDirError, match=f"cannot read {database}: .*; the file is damaged: {hint}"):
        with RunStore.open(tmp_path, IDENTITY, {}, Judgment) as store:
            store.missing(keys(("i000", 0)))


def test_temporary_files_of_killed_processes_are_deleted_when_the_run_is_opened(tmp_path):
    import subprocess
    import sys

    _stored_run(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".per_item.parquet.{int(dead.stdout)}.0123abcd.tmp"
    live = tmp_path / f".summary.json.{os.getpid()}.0123abcd.tmp"
    stale.write_text("half")
    live.write_text("being written")
    RunStore.open(tmp_path, IDENTITY, {}, Judgment).close()
    assert not stale.exists() and live.exists()


def test_reading_in_batches_gives_the_frame_built_from_every_row_at_once(tmp_path, monkeypatch):
    """The read turns rows into columns a batch at a time (memory at 10M judgments): batch edges, all-null
    columns within a batch, floats and unicode come out as one frame built from every row would hold them."""
    records = [judgment(f"é{i % 4}", i, "ok" if i % 3 else "unparseable", None if i % 3 == 0 else i % 5)
               ._replace(expected_score=None if i < 4 else i / 7, raw_text=f"☃ {i}") for i in range(11)]
    with RunStore.open(tmp_path, IDENTITY, {}, Judgment) as store:
        store.append(records)
    connection = sqlite3.connect(tmp_path / "judgments.sqlite")
    stored = {row[1]: {"TEXT": pl.String, "INTEGER": pl.Int64, "REAL": pl.Float64}[row[2]]
              for row in connection.execute("PRAGMA table_info(judgments)")}
    whole = pl.DataFrame(connection.execute("SELECT * FROM judgments ORDER BY item_id, sample_idx").fetchall(),
                         schema=stored, orient="row")
    connection.close()
    monkeypatch.setattr("curate.store.READ_BATCH_ROWS", 4)
    assert read_judgments(tmp_path).equals(whole)
    two = ["item_id", "expected_score"]
    assert read_judgments(tmp_path, columns=two).equals(whole.select(two))
    assert read_judgments(tmp_path, table="retired").schema == {**stored, "retired_at": pl.Float64}
