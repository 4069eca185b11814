"""`dereason-train`: train on curate's splits. It prints; the library only logs.

    dereason-train sft   --model M --data SPLIT_DIR --out DIR [flags | --config sft.yaml]
    dereason-train grpo  --model SFT_DIR/final --data SPLIT_DIR --out DIR --verifier math [flags | --config grpo.yaml]
    dereason-train eval  --model DIR/final --heldout test.jsonl --out DIR --verifier math [--samples k]
    dereason-train run   RECIPE.yaml [--out DIR]      SFT, then GRPO from its final model (train.run)

Each stage's flags are its config's fields (train.config, made into flags by train.cli.flags). Any of them
may run under `accelerate launch` for several GPUs: `accelerate launch --num_processes 8 -m train.cli run R`.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from curate.cli.common import errors, out, setup_logging
from curate.config import read_job_file
from train.cli.flags import config_command
from train.config import stage_config
from train.model import main_process
from train.recipe import STAGE_CONFIGS

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train on curate's splits: SFT, then GRPO from its final model, with curate's verifiers as "
                       "rewards.")


def _setup_logging() -> None:
    setup_logging()
    logging.getLogger("train").setLevel(logging.INFO)  # each stage's progress: one line per logging step
    # TRL 1.16 still passes `gradient_checkpointing`, which transformers 5 renamed: a warning per stage, nothing to do.
    warnings.filterwarnings("ignore", message="`(is_)?gradient_checkpointing` is deprecated", category=FutureWarning)


def _stage_command(name: str, doc: str) -> Callable[..., None]:
    cls = STAGE_CONFIGS[name]

    def run(flags: dict[str, Any], config_file: Path | None) -> None:
        _setup_logging()
        settings = {**(read_job_file(config_file) if config_file else {}), **flags}
        config = stage_config(cls, settings, f"--config {config_file}" if config_file else f"dereason-train {name}")
        from train.run import STAGES

        record = STAGES[name].run(config)
        if main_process():  # under `accelerate launch`, one process reports
            _print_record(name, record)

    return config_command(cls, run, name, doc)


def _print_record(name: str, record: dict[str, Any]) -> None:
    config = record["identity"]["config"]
    if "sets" in record:
        from curate.stats import format_interval

        for set_name, result in record["sets"].items():
            out.print(f"{name} {set_name}: pass@1 {format_interval(result['pass_at_1'], 3)} over {result['measured']} "
                      f"items x {config['samples']} samples ({result['no_countable_attempt']} without a countable "
                      f"answer); solve run {result['solve_run']}")
        return
    out.print(f"{name}: {record['status']} after {record['steps']} steps; final model "
              f"{Path(config['out']) / record['final']}")


app.command()(_stage_command("sft", "Supervised fine-tuning (TRL SFTTrainer) on a split's conversations; rerun to "
                                    "resume from the last checkpoint."))
app.command()(_stage_command("grpo", "GRPO (TRL GRPOTrainer) on a split's prompts, rewarded by a curate verifier; "
                                     "rerun to resume from the last checkpoint."))
app.command(name="eval")(_stage_command("eval", "pass@1, averaged over --samples answers per item, of a model "
                                                "on held-out sets: a `curate solve` run per set; rerun to resume."))


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
        from train.recipe import read_recipe
        from train.run import run_recipe

        manifest = run_recipe(read_recipe(recipe, out_dir))
        if not main_process():
            return
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
