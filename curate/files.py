"""Files that appear whole or not at all: every file dereason writes goes through here.

`write_atomic` and `write_parquet_atomic` write a temporary file beside the target (`.NAME.PID.HEX.tmp`), fsync it
and rename it over the target, so a crash (SIGKILL, a full disk) never leaves a half-written file that looks
complete; `append_jsonl` appends one whole line (logs that only grow). The temporaries of a killed process are
deleted by the next invocation that writes there (`remove_stale_temporaries`; a live process's are kept). Output
folders, written the same way, are curate.outdir's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any

import polars as pl

log = logging.getLogger(__name__)

# The temporary names of write_atomic and write_parquet_atomic: `.NAME.PID.HEX.tmp`.
_TEMPORARY = re.compile(r"\..+\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (its temporary files may still be in use)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary files that killed processes left in `folder` (live processes' are kept)."""
    for path in folder.iterdir():
        if (match := _TEMPORARY.fullmatch(path.name)) and path.is_file() and not process_alive(int(match["pid"])):
            log.info("deleting %s, left by a killed process", path)
            path.unlink(missing_ok=True)


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


def write_parquet_atomic(frame: pl.DataFrame, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write to a temporary file beside `path`, then rename; a failure (a full disk) leaves nothing behind.
    `metadata`: the file's key-value metadata (pl.read_parquet_metadata reads it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        frame.write_parquet(tmp, metadata=metadata)
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
