"""What every `curate` command shares: the consoles, exit codes, one-line errors, logging setup, and
option help taken from the config dataclasses (a setting is declared once)."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import fields
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from curate.config import SECTIONS, RunConfig
from curate.errors import ConfigError, DereasonError, io_error_message

out = Console()
err = Console(stderr=True, soft_wrap=True)
EXIT_ERROR, EXIT_FAILURES = 1, 3
# Section classes last: their fields win over RunConfig's same-named section fields (`endpoint`).
HELP = {f.name: f.metadata.get("help", "") for cls in (RunConfig, *SECTIONS.values()) for f in fields(cls)}


def option(name: str, *flags: str) -> Any:
    """A typer option whose help text is the config field's."""
    return typer.Option(*flags, help=HELP[name], show_default=False)


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


def key_values(flag: str, pairs: list[str]) -> dict[str, Any]:
    """A repeatable KEY=VALUE flag's values as a mapping, each VALUE read as YAML (`2`, `true`, `[a, b]`)."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} takes KEY=VALUE, got {pair!r}")
        parsed[key] = yaml.safe_load(value)
    return parsed
