"""Output folders that appear whole or not at all, for `curate split` and `curate export`.

A split or export is written into a hidden sibling of --out and renamed into place (`atomic_directory`).
An existing non-empty --out is replaced only with `overwrite` (the old folder is renamed aside, the new
one renamed in, the old one deleted: a crash leaves one of them); never a run directory, a folder the
command reads from, one holding either, or the current folder.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from curate.errors import ConfigError
from curate.store import DATABASE, MANIFEST

log = logging.getLogger(__name__)


def is_run_dir(path: Path) -> bool:
    manifest = path / MANIFEST
    if (path / DATABASE).is_file():
        return True
    try:
        return manifest.is_file() and "identity" in json.loads(manifest.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return False


def check_output_dir(target: str | Path, overwrite: bool, inputs: Sequence[tuple[str, Path]] = ()) -> Path:
    """`target` made absolute, if a split or export may go there (module docstring); else ConfigError.
    `inputs`: (what, folder) that the command reads."""
    target = Path(os.path.abspath(target))
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--out {target} is a file; choose a folder")
    for what, folder in inputs:
        folder = Path(os.path.abspath(folder))
        relation = ("is" if folder == target else "is inside" if folder in target.parents
                    else "holds" if target in folder.parents else None)
        if relation:
            raise ConfigError(f"--out {target} {relation} the {what} it reads ({folder}); choose a folder outside it")
    if run := next((p for p in (target, *target.parents) if is_run_dir(p)), None):
        raise ConfigError(f"--out {target} {'is' if run == target else 'is inside'} the run directory {run}: "
                          "writing there would break the run; choose another folder")
    if target == Path.cwd() or target in Path.cwd().parents:
        raise ConfigError(f"--out {target} is or holds the current folder, which it would replace; choose another "
                          "folder")
    if not (target.is_dir() and any(target.iterdir())):
        return target
    if not overwrite:
        raise ConfigError(f"--out {target} exists and is not empty; pass --overwrite to replace it (all its files "
                          "are deleted), or choose another folder")
    if held := next((p for p in target.iterdir() if p.is_dir() and is_run_dir(p)), None):
        raise ConfigError(f"--out {target} holds the run directory {held}; even with --overwrite, choose another "
                          "folder")
    return target


@contextmanager
def atomic_directory(target: str | Path, overwrite: bool = False,
                     inputs: Sequence[tuple[str, Path]] = ()) -> Iterator[Path]:
    """Yield an empty hidden sibling of `target` to write into. When the block succeeds it becomes `target`
    (an old target is renamed aside, the new one renamed in, the old one deleted: a crash leaves one of
    them); when it fails it is deleted, with any parent folder made for it. Refusals: `check_output_dir`."""
    target = check_output_dir(target, overwrite, inputs)
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]  # innermost first
    stem = f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}"
    staging, aside = target.with_name(f"{stem}.tmp"), target.with_name(f"{stem}.old")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        yield staging
        replacing = target.is_dir() and any(target.iterdir())
        if replacing:
            os.rename(target, aside)
        try:
            os.rename(staging, target)  # onto nothing, or onto an empty folder
        except BaseException:
            if replacing:
                os.rename(aside, target)
            raise
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in made:
            with suppress(OSError):
                folder.rmdir()
        if isinstance(exc, OSError) and (exc.filename is None or str(staging) in str(exc.filename)):
            raise OSError(exc.errno, exc.strerror, str(target)) from exc  # name the folder the user gave
        raise
    shutil.rmtree(aside, ignore_errors=True)
    if aside.exists():
        log.warning("could not delete all of the replaced folder, now %s; delete it by hand", aside)
