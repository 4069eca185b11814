"""`dereason-train`: train on curate's splits. It prints; the library only logs.

    dereason-train sft   --model M --data SPLIT_DIR --out DIR [flags | --config sft.yaml]
    dereason-train grpo  --model SFT_DIR/final --data SPLIT_DIR --out DIR --verifier math [flags | --config grpo.yaml]
    dereason-train run   RECIPE.yaml [--out DIR]      SFT, then GRPO from its final model (train.run)

Each stage's flags are its config's fields (train.config, made into flags by train.cli.flags). Any of them
may run under `accelerate launch` for several GPUs: `accelerate launch --num_processes 8 -m train.cli run R`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from curate.cli.common import errors, out, setup_logging
from curate.config import read_job_file
from train.cli.flags import config_command
from train.config import STAGE_CONFIGS, stage_config

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train on curate's splits: SFT, then GRPO from its final model, with curate's verifiers as "
                       "rewards.")


def _setup_logging() -> None:
    setup_logging()
    logging.getLogger("train").setLevel(logging.INFO)  # each stage's progress: one line per logging step


def _stage_command(name: str, doc: str) -> Callable[..., None]:
    cls = STAGE_CONFIGS[name]

    def run(flags: dict[str, Any], config_file: Path | None) -> None:
        _setup_logging()
        settings = {**(read_job_file(config_file) if config_file else {}), **flags}
        config = stage_config(cls, settings, f"--config {config_file}" if config_file else f"dereason-train {name}")
        from train.run import STAGES

        _print_record(name, STAGES[name](config))

    return config_command(cls, run, name, doc)


def _print_record(name: str, record: dict[str, Any]) -> None:
    config = record["identity"]["config"]
    out.print(f"{name}: {record['status']} after {record['steps']} steps; final model {Path(config['out']) / record['final']}")


app.command()(_stage_command("sft", "Supervised fine-tuning (TRL SFTTrainer) on a split's conversations; rerun to "
                                    "resume from the last checkpoint."))
app.command()(_stage_command("grpo", "GRPO (TRL GRPOTrainer) on a split's prompts, rewarded by a curate verifier; "
                                     "rerun to resume from the last checkpoint."))


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe: model, data, out, stages and a section per stage "
                                                "(see train.config).")],
    out_dir: Annotated[str | None, typer.Option("--out", help="Run directory (replaces the recipe's out).",
                                                show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run manifest as JSON.")] = False,
) -> None:
    """Train a recipe's stages in order, each from the previous one's final model; rerun to resume where it
    stopped."""
    _setup_logging()
    with errors():
        from train.config import read_recipe
        from train.run import run_recipe

        manifest = run_recipe(read_recipe(recipe, out_dir))
        if as_json:
            print(json.dumps(manifest, sort_keys=True, default=str))
            return
        for stage in manifest["stages"]:
            _print_record(stage["name"], stage)
        out.print(f"run manifest: {Path(manifest['out']) / 'run.json'}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
