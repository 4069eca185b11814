"""What `curate score`, `solve`, `respond` and `pairs` show while they run: the progress bar with a rate since the first
request, and on Ctrl-C what the run directory holds and the command that resumes it."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from curate.cli.common import err
from curate.config import RunConfig, SamplingConfig

if TYPE_CHECKING:  # the backends and the engine load with the run, not with the command line
    from curate.backends import Backend, Completion, Request
    from curate.engine import Progress

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped with Ctrl-C

ACTIVITY = {"score": ("scoring", "judgments"), "solve": ("solving", "responses"),
            "respond": ("responding", "responses"), "pairs": ("comparing", "comparisons")}


def rate_text(done: int, seconds: float, records: str) -> str:
    """`done` records in `seconds` as people read a rate: records per second, or seconds per record when slower."""
    if not done or seconds <= 0:
        return ""
    per_second = done / seconds
    return f"{per_second:.1f} {records}/s" if per_second >= 1 else f"{seconds / done:.1f} s per {records[:-1]}"


class RequestClock:
    """The run's backend, telling `started` when each round of requests begins (its first request is taken): a
    progress rate then counts the time the model was asked, not the time it took to load."""

    def __init__(self, backend: Backend, started: Callable[[], None]):
        self.backend, self.started = backend, started
        self.name, self.model_id = backend.name, backend.model_id

    def generate(self, requests: Iterable[Request], sampling: SamplingConfig) -> Iterator[Completion]:
        def timed() -> Iterator[Request]:
            pending = iter(requests)
            first = next(pending, None)
            if first is not None:
                self.started()
                yield first
                yield from pending

        return self.backend.generate(timed(), sampling)

    def close(self) -> None:
        self.backend.close()


class progress_bar:
    """The bar of a run: records committed of those this round asks for, failures, and the rate since the round's
    first request (the engine reports each committed chunk, so the speed between two reports means nothing)."""

    def __init__(self, kind: str, disabled: bool, clock: Callable[[], float] = time.monotonic):
        self.activity, self.records = ACTIVITY[kind]
        self.bar = Progress(TextColumn(self.activity), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                            TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(), TextColumn("ETA"),
                            TimeRemainingColumn(), console=err, disable=disabled)
        self.task = None
        self.clock, self.since = clock, clock()

    def __enter__(self) -> progress_bar:
        self.bar.start()
        return self

    def requesting(self) -> None:
        self.since = self.clock()

    def update(self, progress: Progress) -> None:
        if self.task is None or self.bar.tasks[0].total != progress.total:  # respond asks in rounds
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(self.activity, total=progress.total, failed=0, rate="")
        self.bar.update(self.task, completed=progress.done, failed=progress.failed,
                        rate=rate_text(progress.done, self.clock() - self.since, self.records))

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


class interrupted:
    """Ctrl-C: what the run directory holds now, the command that resumes it, and exit status 130."""

    def __init__(self, job: RunConfig, kind: str):
        self.job, self.kind = job, kind

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc_type is None or not issubclass(exc_type, KeyboardInterrupt):
            return False
        err.print(f"interrupted: {stored_text(self.job, self.kind)}. Run the same command to resume: "
                  f"{resume_command()}", highlight=False, markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def stored_text(job: RunConfig, kind: str) -> str:
    """How many records the run directory holds of how many the run asks for."""
    import polars as pl

    from curate.store import ITEMS, read_judgments

    run_dir, records = job.out_path, ACTIVITY[kind][1]
    if not (run_dir / ITEMS).is_file():
        return f"nothing was stored in {run_dir} yet"
    stored = read_judgments(run_dir, columns=["item_id"]).height  # the store is opened before items.parquet is written
    items = pl.scan_parquet(run_dir / ITEMS).select(pl.len()).collect().item()
    samples = job.sampling.samples
    bound = "at most " if kind == "respond" else ""  # respond stops asking about an item at its first kept response
    if kind == "pairs":
        from curate.tasks.schedule import schedule_size

        comparisons = job.pairwise.comparisons
        wanted, per = schedule_size(items, comparisons), f"{items} items, {comparisons} comparisons per item"
    else:
        wanted, per = items, f"{items} items"
    return (f"{run_dir} holds {stored} of {bound}{wanted * samples} {records} ({per} × {samples} "
            f"sample{'s' if samples > 1 else ''})")


def resume_command() -> str:
    """The command line that was run: `curate score …`, or `python -m curate.cli score …`."""
    program = "python -m curate.cli" if Path(sys.argv[0]).name == "__main__.py" else Path(sys.argv[0]).name
    return shlex.join([*program.split(), *sys.argv[1:]])
