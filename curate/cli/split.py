"""`curate split` and `curate export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from curate.cli.common import Overwrite, errors, out, setup_logging
from curate.cli.flags import settings_command
from curate.command_config import ExportConfig, SplitConfig


@settings_command(SplitConfig)
def split(
    run_dir: Annotated[Path, typer.Argument(help="Run directory made by `curate score` (τ is on its judge score) or "
                                                 "`curate pairs` (on its Bradley-Terry strength).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Split directory to write (whole, or not at all).")],
    overwrite: Overwrite = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    *, settings: SplitConfig,
) -> None:
    """Split a scored run into SFT (score ≤ τ) and RL (score > τ), with ablation arms and hygiene."""
    setup_logging()
    with errors():
        from curate.export.card import tau_text
        from curate.split.directory import make_split

        manifest = make_split(run_dir, out_dir, settings, overwrite=overwrite)
        if as_json:
            print(json.dumps(manifest, sort_keys=True, default=str))
            return
        table = Table(title=f"Split {out_dir}", show_header=False)
        table.add_row("τ", f"{tau_text(manifest['tau'])} ({manifest['tau_method']}, {manifest['score_meaning']})")
        for side, count in manifest["counts"].items():
            reasons = manifest["unscored_reasons"] if side == "unscored" and count else {}
            table.add_row(side, f"{count}" + (f" ({', '.join(f'{n} {why}' for why, n in reasons.items())})"
                                              if reasons else ""))
        for arm, counts in manifest["arms"].items():
            table.add_row(f"arm {arm}", f"sft {counts['sft']}, rl {counts['rl']}")
        if manifest["stages"]:
            by = (f"pass rate in {manifest['stage_run']['run_dir']}" if manifest["stage_run"] else
                  f"IRT difficulty in {manifest['stage_irt']['irt_dir']}" if manifest["stage_irt"] else
                  manifest["stage_by"])
            table.add_row(f"RL stages by {by}", ", ".join(f"{k}: {v}" for k, v in manifest["stages"].items()))
        table.add_row("removed by hygiene", f"{manifest['hygiene']['removed']} (see removed.jsonl)")
        out.print(table)


@settings_command(ExportConfig)
def export_command(
    split_dir: Annotated[Path, typer.Argument(help="Split directory made by `curate split`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the export.")],
    push_to_hub: Annotated[str | None, typer.Option(
        help="With --format hf: push to this Hub repo (token from $HF_TOKEN).", show_default=False)] = None,
    public: Annotated[bool, typer.Option("--public", help="Make the pushed dataset public (private by default).")] \
        = False,
    overwrite: Overwrite = False,
    *, settings: ExportConfig,
) -> None:
    """Export a split for the Hub, TRL, verl or plain files."""
    setup_logging()
    with errors():
        from curate.export.card import CARD
        from curate.export.exporters import (
            RESPONSES,
            UNANSWERED,
            check_push,
            export_split,
        )
        from curate.export.exporters import push_to_hub as push

        if push_to_hub:
            check_push(settings.format)  # before anything is written
        written = export_split(split_dir, out_dir, settings, overwrite=overwrite)
        out.print(f"{settings.format} export written to {written}"
                  + (f"; {written / CARD} says how to train on it" if settings.format in ("trl", "verl") else ""))
        if settings.responses is not None:
            made = json.loads((written / RESPONSES).read_text(encoding="utf-8"))
            verified = f"verified by {made['verifier']}" if made["verified"] else "NOT verified"
            out.print(f"SFT responses from {settings.responses} ({verified}): {made['answered']} of "
                      f"{made['sft_items']} items"
                      + (f"; {made['unanswered']} left out, listed in {written / UNANSWERED}" if made["unanswered"]
                         else ""))
        if push_to_hub:
            push(written, push_to_hub, private=not public)
            out.print(f"pushed to {push_to_hub}")
