"""`curate` command line: it prints (progress bars, tables); the library only logs.

One module per group of commands; this one only names them.
"""

from __future__ import annotations

import typer

from curate.cli import irt, levels, score, split, stats, templates

# Click's own help: rich's tables cut long defaults short ("difficulty/intensity_score_onl…") and show <bool> beside
# every flag; click's wraps each help whole, defaults included.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Difficulty-aware curation of reasoning data.")
app.command()(score.score)
app.command()(score.solve)
app.command()(score.respond)
app.command()(score.pairs)
app.command()(score.reparse)
app.command()(stats.stats)
app.command()(stats.compare)
app.command()(split.split)
app.command(name="export")(split.export_command)
app.command()(templates.templates)
app.command()(levels.levels)
app.command()(irt.irt)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
