"""The run directory: manifest, judgments store, items, invocation log.

    RUN_DIR/
      manifest.json      the run's identity (input fingerprint, template + hash, parser, model, sampling)
      judgments.sqlite   every judgment, keyed (item_id, sample_idx): SQLite in WAL mode
      items.parquet      the validated items the run scores (extra fields included)
      quarantine.jsonl   bad input rows with reasons, when quarantining
      invocations.jsonl  append-only: each invocation's full config, start time, version
      per_item.parquet, summary.json   aggregates (rewritten after every invocation)

Crash safety: a chunk of judgments is one SQLite transaction, so after a SIGKILL a judgment is
either fully stored or absent; the primary key makes a duplicate impossible rather than unlikely.
Other files are written to a temporary name and renamed. One process at a time holds the run's
lock (an OS lock, released by the kernel if the process dies).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from curate.errors import RunDirError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DATABASE = "judgments.sqlite"
LOCK = ".lock"


class Judgment(NamedTuple):
    """One stored judgment; a tuple, so rows go to SQLite as they are (the engine's hot path)."""

    item_id: str
    sample_idx: int
    status: str
    score: int | None
    detail: str
    raw_text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    parser: str
    template: str
    score_method: str  # "logprobs" or "decoded" for ok judgments, "" otherwise
    expected_score: float | None  # Σ p(k)·k when the first token's logprobs held score tokens
    score_entropy: float | None
    score_mass: float | None  # probability on score tokens before renormalising
    score_probs: str | None  # JSON [p1, ..., p5]
    top_logprobs: str | None  # JSON [[token, logprob], ...] at the first answer token, as returned


COLUMNS = list(Judgment._fields)
PARSED_COLUMNS = ["status", "score", "detail", "parser", "score_method", "expected_score", "score_entropy",
                  "score_mass", "score_probs"]
SCHEMA = {
    "item_id": pl.String, "sample_idx": pl.Int64, "status": pl.String, "score": pl.Int64, "detail": pl.String,
    "raw_text": pl.String, "finish_reason": pl.String, "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64,
    "parser": pl.String, "template": pl.String, "score_method": pl.String, "expected_score": pl.Float64,
    "score_entropy": pl.Float64, "score_mass": pl.Float64, "score_probs": pl.String, "top_logprobs": pl.String,
    "created_at": pl.Float64,
}
_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    item_id TEXT NOT NULL, sample_idx INTEGER NOT NULL, status TEXT NOT NULL, score INTEGER,
    detail TEXT NOT NULL, raw_text TEXT NOT NULL, finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    parser TEXT NOT NULL, template TEXT NOT NULL, score_method TEXT NOT NULL, expected_score REAL,
    score_entropy REAL, score_mass REAL, score_probs TEXT, top_logprobs TEXT, created_at REAL NOT NULL{extra}
)"""


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`."""
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> None:
    """Write to a temporary file beside `path`, then rename; a failure (a full disk) leaves nothing behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        frame.write_parquet(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        # Polars reports a full disk as a ComputeError ending in "(os error 28)": raise the OSError it is.
        code = re.search(r"\(os error (\d+)\)", str(exc)) if isinstance(exc, pl.exceptions.PolarsError) else None
        if code:
            raise OSError(int(code[1]), os.strerror(int(code[1])), str(path)) from exc
        raise


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record, sort_keys=True) + "\n")


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        raise RunDirError(f"{run_dir} is not a run directory (no {MANIFEST})")
    return json.loads(path.read_text(encoding="utf-8"))


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """Read without writing anything, also on a read-only filesystem. A WAL database opened read-only
    needs its -shm file, which SQLite cannot create there; a database without a pending WAL (a run that
    closed cleanly: its last connection checkpointed and removed it) is then opened as immutable."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return connection
    except sqlite3.OperationalError:
        connection.close()
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size:
            raise RunDirError(f"cannot read {path}: it holds uncheckpointed judgments in {wal.name} and its folder "
                              "cannot be written; copy the run directory somewhere writable and read it there") \
                from None
        return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")  # a process crash loses nothing committed
    connection.execute(_TABLE.format(name="judgments", extra=", PRIMARY KEY (item_id, sample_idx)") + " WITHOUT ROWID")
    connection.execute(_TABLE.format(name="retired", extra=", retired_at REAL NOT NULL"))
    return connection


def read_judgments(run_dir: str | Path, table: str = "judgments", columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Stored judgments as a Polars frame (one row per item_id, sample_idx), without locking.
    `columns` narrows what is read (all of SCHEMA by default)."""
    path = Path(run_dir) / DATABASE
    if not path.exists():
        raise RunDirError(f"{run_dir} holds no judgments ({DATABASE} missing)")
    schema = {name: SCHEMA[name] for name in (columns or SCHEMA)}
    connection = _connect_readonly(path)
    try:
        rows = connection.execute(f"SELECT {', '.join(schema)} FROM {table} ORDER BY item_id, sample_idx").fetchall()
    finally:
        connection.close()
    return pl.DataFrame(rows, schema=schema, orient="row")


class RunStore:
    """The writable side of a run directory, held by one process at a time."""

    def __init__(self, run_dir: Path, connection: sqlite3.Connection, lock_handle: Any):
        self.run_dir = run_dir
        self._connection = connection
        self._lock_handle = lock_handle

    @classmethod
    def open(cls, run_dir: str | Path, identity: dict[str, Any], manifest_extra: dict[str, Any]) -> RunStore:
        """Create the run directory, or reopen it if its identity matches; lock it for this process.

        A run directory that holds no judgment yet (a setup error stopped the first attempt: a bad model
        path, a missing backend) takes the new identity: nothing stored could be mixed up."""
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise RunDirError(f"{run_dir} is a file, not a run directory; choose another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        lock_handle = (run_dir / LOCK).open("a+")
        try:
            fcntl.flock(lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_handle.close()
            raise RunDirError(f"{run_dir} is in use by another curate process; wait for it or use another --out") \
                from None
        try:
            with _sqlite_errors(run_dir / DATABASE):
                connection = _connect(run_dir / DATABASE)
            store = cls(run_dir, connection, lock_handle)
            manifest_path = run_dir / MANIFEST
            if manifest_path.exists() and store._holds_judgments():
                _check_identity(run_dir, read_manifest(run_dir).get("identity", {}), identity)
            else:
                if manifest_path.exists():
                    log.info("%s holds no judgment yet: it takes this invocation's identity", run_dir)
                write_atomic(manifest_path, json.dumps({"identity": identity, **manifest_extra}, indent=2,
                                                       sort_keys=True))
        except BaseException:
            lock_handle.close()
            raise
        return store

    def _holds_judgments(self) -> bool:
        return any(self._connection.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                   for table in ("judgments", "retired"))

    def update_identity(self, changes: dict[str, Any]) -> None:
        """Record in the manifest that the stored judgments now depend on other settings (a re-parse)."""
        manifest = read_manifest(self.run_dir)
        manifest["identity"] = {**manifest["identity"], **changes}
        write_atomic(self.run_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))

    def stored_keys(self) -> pl.DataFrame:
        rows = self._connection.execute("SELECT item_id, sample_idx FROM judgments").fetchall()
        return pl.DataFrame(rows, schema={"item_id": pl.String, "sample_idx": pl.Int64}, orient="row")

    def missing(self, wanted: pl.DataFrame) -> pl.DataFrame:
        """The (item_id, sample_idx) pairs of `wanted` that are not stored yet, in `wanted`'s order."""
        return wanted.join(self.stored_keys(), on=["item_id", "sample_idx"], how="anti", maintain_order="left")

    def append(self, judgments: Sequence[Judgment]) -> None:
        """Store judgments in one transaction: all of them, or (after a crash) none."""
        now = time.time()
        with _sqlite_errors(self.run_dir / DATABASE), self._transaction():
            self._connection.executemany(
                f"INSERT INTO judgments ({', '.join(COLUMNS)}, created_at) VALUES ({', '.join('?' * len(COLUMNS))}, ?)",
                [(*j, now) for j in judgments])

    def retire(self, statuses: Iterable[str]) -> int:
        """Move judgments with these statuses to the `retired` table, so they are requested again."""
        statuses = list(statuses)
        marks = ", ".join("?" * len(statuses))
        with _sqlite_errors(self.run_dir / DATABASE), self._transaction():
            self._connection.execute(
                f"INSERT INTO retired SELECT *, ? FROM judgments WHERE status IN ({marks})", (time.time(), *statuses))
            return self._connection.execute(f"DELETE FROM judgments WHERE status IN ({marks})", statuses).rowcount

    def update_parsed(self, judgments: Iterable[Judgment]) -> None:
        """Rewrite what parsing decides (status, score, detail, parser, score_*) of stored judgments."""
        with _sqlite_errors(self.run_dir / DATABASE), self._transaction():
            self._connection.executemany(
                f"UPDATE judgments SET {', '.join(f'{c} = ?' for c in PARSED_COLUMNS)} "
                "WHERE item_id = ? AND sample_idx = ?",
                [(*(getattr(j, c) for c in PARSED_COLUMNS), j.item_id, j.sample_idx) for j in judgments])

    def _transaction(self) -> sqlite3.Connection:
        return _Transaction(self._connection)

    def close(self) -> None:
        self._connection.close()
        self._lock_handle.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# SQLite's own result codes for "the disk is full", "read-only", "I/O error", "cannot open", as errno values.
_SQLITE_ERRNO = {13: errno.ENOSPC, 8: errno.EROFS, 10: errno.EIO, 14: errno.EACCES}


@contextmanager
def _sqlite_errors(path: Path) -> Iterator[None]:
    """SQLite reports a full disk or a read-only file as its own OperationalError: raise it as the OSError it
    is, naming the file (a committed chunk stays committed: rerunning resumes)."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        code = _SQLITE_ERRNO.get(getattr(exc, "sqlite_errorcode", -1) & 0xFF)
        if code is None:
            raise
        raise OSError(code, f"{os.strerror(code)} ({exc}); what was committed before stays, rerun to resume",
                      str(path)) from exc


class _Transaction:
    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.connection.execute("ROLLBACK" if exc_type else "COMMIT")


# Identity keys added after runs were made without them, with the value those runs implicitly had.
IDENTITY_DEFAULTS: dict[str, Any] = {"dtype": "auto", "endpoint": "chat", "tokenizer": None, "tokenizer_fingerprint": "",
                                     "use_n": False, "engine_args": {}, "constrain_score": False}


def _check_identity(run_dir: Path, stored: dict[str, Any], wanted: dict[str, Any]) -> None:
    stored = {**{k: v for k, v in IDENTITY_DEFAULTS.items() if k in wanted}, **stored}
    differences = [f"{key}: stored {stored.get(key)!r}, now {wanted.get(key)!r}"
                   for key in sorted(set(stored) | set(wanted)) if stored.get(key) != wanted.get(key)]
    if differences:
        raise RunDirError(f"{run_dir} holds a different run ({'; '.join(differences)}). Resuming would mix "
                          "judgments of two jobs: use a new --out, or restore the original settings.")
