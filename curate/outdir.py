"""Output folders that appear whole or not at all, for `curate split`, `curate export` and `curate levels`,
and the checks that keep every command from writing over what it reads.

A split or export is written into a hidden sibling of --out and renamed into place (`atomic_directory`).
An existing non-empty --out is replaced only with `overwrite` (the old folder is renamed aside, the new
one renamed in, the old one deleted: a crash leaves one of them, and the next run of the command puts an
orphaned old folder back and deletes the staging folders of dead processes); never a run directory, a
folder the command reads from, one holding either at any depth, or the current folder. Every comparison is
between resolved paths, so no spelling of a path (a symlink, `..`) gets past it.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from curate.errors import ConfigError
from curate.files import process_alive
from curate.store import is_run_dir

log = logging.getLogger(__name__)
# The staging (.tmp) and set-aside (.old) folders of atomic_directory: `.NAME.PID.HEX.tmp`.
_SIBLING = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.(?P<kind>tmp|old)")


def _spelled(given: str | Path, resolved: Path) -> str:
    """How a message names a path: as the user gave it, and what it resolves to when that differs."""
    return str(given) if Path(os.path.abspath(given)) == resolved else f"{given} (that is {resolved})"


def _relation(folder: Path, target: Path) -> str | None:
    return ("is" if folder == target else "is inside" if folder in target.parents
            else "holds" if target in folder.parents else None)


def refuse_overlap(option: str, given: str | Path, inputs: Sequence[tuple[str, Path]]) -> Path:
    """`given` resolved, unless it is, is inside or holds a path the command reads (`inputs`: (what, path));
    then ConfigError naming both as the user spelled them."""
    target = Path(given).resolve()
    for what, path in inputs:
        if relation := _relation(Path(path).resolve(), target):
            raise ConfigError(f"{option} {_spelled(given, target)} {relation} the {what} it reads "
                              f"({_spelled(path, Path(path).resolve())}); choose a path outside it")
    return target


def _runs_inside(folder: Path) -> Iterator[Path]:
    """Run directories at any depth under `folder` (symlinks are not followed: deleting one removes the link)."""
    for parent, subfolders, _ in os.walk(folder):
        for name in subfolders:
            if is_run_dir(Path(parent) / name):
                yield Path(parent) / name


def check_output_dir(target: str | Path, overwrite: bool, inputs: Sequence[tuple[str, Path]] = ()) -> Path:
    """`target` resolved, if a split or export may go there (module docstring); else ConfigError.
    `inputs`: (what, folder) that the command reads."""
    given, target = target, refuse_overlap("--out", target, inputs)
    shown = _spelled(given, target)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--out {shown} is a file; choose a folder")
    if run := next((p for p in (target, *target.parents) if is_run_dir(p)), None):
        raise ConfigError(f"--out {shown} {'is' if run == target else 'is inside'} the run directory {run}: "
                          "writing there would break the run; choose another folder")
    here = Path.cwd().resolve()
    if target == here or target in here.parents:
        raise ConfigError(f"--out {shown} is or holds the current folder, which it would replace; choose another "
                          "folder")
    if not (target.is_dir() and any(target.iterdir())):
        return target
    if not overwrite:
        raise ConfigError(f"--out {shown} exists and is not empty; pass --overwrite to replace it (all its files "
                          "are deleted), or choose another folder")
    if held := next(_runs_inside(target), None):
        raise ConfigError(f"--out {shown} holds the run directory {held}; even with --overwrite, choose another "
                          "folder")
    return target


def check_report_files(option: str, page: str | Path) -> None:
    """Refuse a report (`page` and its statistics as .json beside it) that would replace a file of a run directory
    (RUN/manifest.html would write RUN/manifest.json): inside one, a report creates new files or replaces an
    earlier report, NAME.html with its NAME.json."""
    resolved = Path(page).resolve()
    if not any(is_run_dir(p) for p in resolved.parents):
        return
    data = resolved.with_suffix(".json")
    if clobbered := (resolved if resolved.exists() and resolved.suffix != ".html" else
                     data if data.exists() and not resolved.exists() else None):
        raise ConfigError(f"{option} {_spelled(page, resolved)} would replace {clobbered.name}, a file of the run "
                          f"directory {resolved.parent}; name a new file such as report.html")


def recover_interrupted(target: Path) -> None:
    """Tidy what a killed `atomic_directory` of `target` left beside it: a set-aside old folder whose target is
    gone is put back (the kill came between the two renames), and other staging and set-aside folders of
    processes no longer alive are deleted."""
    if not target.parent.is_dir():
        return
    left = [(p, m) for p in target.parent.iterdir()
            if (m := _SIBLING.fullmatch(p.name)) and m["name"] == target.name and not process_alive(int(m["pid"]))]
    for path, match in sorted(left, key=lambda found: found[1]["kind"] != "old"):
        if match["kind"] == "old" and not target.exists():
            log.warning("putting back %s as %s: a replacement of it was interrupted", path, target)
            os.rename(path, target)
        else:
            log.warning("deleting %s, left by an interrupted run (process %s)", path, match["pid"])
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def atomic_directory(target: str | Path, overwrite: bool = False,
                     inputs: Sequence[tuple[str, Path]] = ()) -> Iterator[Path]:
    """Yield an empty hidden sibling of `target` to write into. When the block succeeds it becomes `target`
    (an old target is renamed aside, the new one renamed in, the old one deleted: a crash leaves one of
    them); when it fails it is deleted, with any parent folder made for it. Refusals: `check_output_dir`."""
    given = target
    target = check_output_dir(target, overwrite, inputs)
    recover_interrupted(target)
    target = check_output_dir(given, overwrite, inputs)  # a folder put back is checked like any other
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
            raise OSError(exc.errno, exc.strerror, str(given)) from exc  # name the folder the user gave
        raise
    shutil.rmtree(aside, ignore_errors=True)
    if aside.exists():
        log.warning("could not delete all of the replaced folder, now %s; delete it by hand", aside)
