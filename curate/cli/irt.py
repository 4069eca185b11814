"""`curate irt SOLVE_RUN SOLVE_RUN ... --out IRT_DIR`: Rasch difficulties of the items from solve runs alone.

The fit is curate.stats.irt's, the directory curate.stats.irt_dir's (its docstring lists the files, and it logs the fit's
notes as warnings); this module reads the options and prints a summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from curate.cli.common import Overwrite, errors, out, setup_logging
from curate.cli.flags import settings_command
from curate.stats.irt import RaschConfig


def _print_fit(manifest: dict[str, Any], out_dir: Path) -> None:
    fit, counts = manifest["fit"], manifest["counts"]
    table = Table(title=f"IRT {out_dir}: {manifest['items']} items, {len(manifest['runs'])} models", show_header=False)
    for status, count in counts.items():
        table.add_row(f"items {status.replace('_', ' ')}", f"{count:>6}")
    table.add_row("fit", f"{'converged' if fit['converged'] else 'did not converge'} in {fit['iterations']} "
                         f"iterations; {fit['identification']}")
    out.print(table)


@settings_command(RaschConfig)
def irt(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="Solve runs (`curate solve`) over the same items, each one model of the crowd (two or more).",
        show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", help="IRT directory to write (whole, or not at all).")],
    overwrite: Overwrite = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the IRT directory's manifest.json.")] = False,
    *, settings: RaschConfig,
) -> None:
    """Rasch (IRT) difficulties of the items, fitted over the rollouts of several solve runs, one model each."""
    setup_logging()
    with errors():
        from curate.stats.irt_dir import IRT_ITEMS, make_irt
        from curate.store import MANIFEST

        make_irt(run_dirs, out_dir, settings, overwrite=overwrite)
        if as_json:
            print((out_dir / MANIFEST).read_text(encoding="utf-8"), end="")
            return
        _print_fit(json.loads((out_dir / MANIFEST).read_text(encoding="utf-8")), out_dir)
        out.print(f"difficulties: {out_dir / IRT_ITEMS}")
