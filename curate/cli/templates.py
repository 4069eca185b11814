"""`curate templates`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from curate.cli.common import EXIT_ERROR, errors, out, print_error
from curate.errors import DereasonError, io_error_message


def templates(template_dir: Annotated[str | None, typer.Option(help="Also list templates here.")] = None) -> None:
    """List templates: judge templates with their parsers, response and verifier templates. One that does not load gets an error line of
    its own after the table (the others are still listed), and the exit status is then 1."""
    from curate.templates import available_templates, load_template

    table = Table("template", "parser", "identity", "description")
    for column in table.columns[:3]:
        column.no_wrap = True  # names are copied into commands: only the description may wrap
    with errors():
        names = available_templates(template_dir)
    failures = []
    for name in names:
        try:
            loaded = load_template(name, template_dir)
        except DereasonError as exc:
            failures.append(str(exc))
        except OSError as exc:
            failures.append(io_error_message(exc))
        else:
            table.add_row(name, loaded.parser.name if loaded.parser else f"({loaded.kind})",
                          loaded.content_hash, loaded.description)
    out.print(table)
    for message in failures:
        print_error(message)
    if failures:
        raise typer.Exit(EXIT_ERROR)
