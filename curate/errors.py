"""Every exception dereason raises on purpose, in one tree.

    DereasonError
    ├── ConfigError            a job's settings are invalid (bad value, unknown backend or parser)
    ├── DataError              input rows are unusable (missing/empty/non-string question, duplicate id)
    ├── TemplateError          a judge template cannot be loaded or rendered (names template and line)
    ├── BackendError           a backend cannot start (missing package, model not loadable)
    ├── RunDirError            a run directory belongs to a different job, or is locked by a live run
    └── FailureThresholdError  a finished run has more failed judgments than the job allows

Errors of the operating system (disk full, read-only filesystem, a path that is a file) stay
`OSError`s; `io_error_message` turns one into the line the CLI prints.

Failures of single judgments (a model that answers nonsense, a request that errors) are not
exceptions: they are stored as data with an explicit status (see `curate.parse.Status`).
"""

from __future__ import annotations

import errno
import os


class DereasonError(Exception):
    """Base class: catch this to handle every deliberate dereason error."""


class ConfigError(DereasonError):
    """A setting is invalid; the message names the setting and the allowed values."""


class DataError(DereasonError):
    """Input rows are unusable; the message names the file, the rows and the field."""


class TemplateError(DereasonError):
    """A template cannot be loaded or rendered; the message names the template and the line."""


class BackendError(DereasonError):
    """A backend cannot be created or cannot load its model."""


class RunDirError(DereasonError):
    """The run directory cannot be used for this job (other identity, or locked)."""


class FailureThresholdError(DereasonError):
    """More judgments failed than the job's `max_failure_fraction` allows."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


_IO_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EROFS: "the filesystem is read-only: write elsewhere",
    errno.EACCES: "check its permissions or write elsewhere",
    errno.EPERM: "check its permissions or write elsewhere",
    errno.ENOENT: "check that the path exists",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EISDIR: "this path is a folder, not a file",
    errno.EEXIST: "this path exists already",
}


def io_error_message(exc: OSError) -> str:
    """One line for an operating-system error: what failed, where, and what to do."""
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    where = f" {exc.filename}" if exc.filename else ""
    hint = _IO_HINTS.get(exc.errno or -1)
    return f"cannot use{where}: {reason}" + (f" ({hint})" if hint else "")
