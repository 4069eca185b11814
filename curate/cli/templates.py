"""`curate templates`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from curate.cli.common import errors, out


def templates(template_dir: Annotated[str | None, typer.Option(help="Also list templates here.")] = None) -> None:
    """List judge templates with their parsers."""
    from curate.templates import available_templates, load_template

    table = Table("template", "parser", "identity", "description")
    for column in table.columns[:3]:
        column.no_wrap = True  # names are copied into commands: only the description may wrap
    with errors():
        for name in available_templates(template_dir):
            loaded = load_template(name, template_dir)
            table.add_row(name, loaded.parser.name, loaded.content_hash, loaded.description)
    out.print(table)
