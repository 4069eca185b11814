"""`curate templates`."""

from __future__ import annotations

import textwrap

import typer
from rich.text import Text

from curate.cli.common import EXIT_ERROR, errors, out, print_error
from curate.cli.flags import settings_command
from curate.command_config import TemplatesConfig
from curate.errors import DereasonError, io_error_message

HEADER = ("template", "parser", "identity")


@settings_command(TemplatesConfig)
def templates(*, settings: TemplatesConfig) -> None:
    """List templates: judge templates with their parsers, response and verifier templates. One that does not load gets an error line of
    its own after the list (the others are still listed), and the exit status is then 1."""
    from curate.templates import available_templates, load_template

    with errors():
        names = available_templates(settings.template_dir)
    listed, failures = [], []
    for name in names:
        try:
            loaded = load_template(name, settings.template_dir)
        except DereasonError as exc:
            failures.append(str(exc))
        except OSError as exc:
            failures.append(io_error_message(exc))
        else:
            listed.append((name, loaded.parser.name if loaded.parser else f"({loaded.kind})", loaded.content_hash,
                           loaded.description))
    # One line per template (its name is copied into commands, so it never wraps), its description wrapped below
    # it: as a table column, a description got one word a line on an 80-column terminal.
    widths = [max(len(row[i]) for row in [HEADER, *listed]) for i in range(2)]

    def line(name: str, parser: str, identity: str, style: str = "") -> None:
        out.print(Text(f"{name:<{widths[0]}}  {parser:<{widths[1]}}  {identity}", style=style), no_wrap=True,
                  crop=False)

    line(*HEADER, style="bold")
    for name, parser, identity, description in listed:
        line(name, parser, identity)
        wrapped = textwrap.fill(" ".join(description.split()), width=max(out.width, 40), initial_indent=" " * 4,
                                subsequent_indent=" " * 4, break_on_hyphens=False)  # flags stay whole
        out.print(Text(wrapped + "\n", style="dim"), no_wrap=True, crop=False)
    for message in failures:
        print_error(message)
    if failures:
        raise typer.Exit(EXIT_ERROR)
