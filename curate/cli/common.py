"""What every `curate` command shares: the consoles, exit codes, one-line errors and logging setup (the flags are
made from the config dataclasses by curate.cli.flags)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from curate.errors import DereasonError, io_error_message

out = Console()
err = Console(stderr=True, soft_wrap=True)
EXIT_ERROR, EXIT_FAILURES = 1, 3
# The option of every command that writes a folder whole (curate.outdir), with the --out it replaces.
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty --out folder.")]


def print_error(message: str) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)


class errors:
    """Turn dereason's own errors, and the operating system's (disk full, read-only, missing folder),
    into one red line and exit status 1. Anything else is a bug and keeps its traceback."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc_type is not None and issubclass(exc_type, DereasonError):
            print_error(str(exc))
            raise typer.Exit(EXIT_ERROR)
        if exc_type is not None and issubclass(exc_type, OSError):
            print_error(io_error_message(exc))  # type: ignore[arg-type]
            raise typer.Exit(EXIT_ERROR)
        return False


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    # Other libraries' bars (hub downloads, GGUF dequantising, `datasets` saving) would interleave with ours.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
