"""`dereason-train`: train on curate's splits. It prints; the library only logs.

    dereason-train sft   --model M --data SPLIT_DIR --out DIR [flags | --config sft.yaml]
    dereason-train grpo  --model SFT_DIR/final --data SPLIT_DIR --out DIR --verifier math [flags | --config grpo.yaml]
    dereason-train staged --model M --data SPLIT_DIR --out DIR --verifier math   GRPO over the split's stages, each
                                                                                re-estimated first (train.staged)
    dereason-train eval  --model DIR/final --heldout test.jsonl --out DIR --verifier math [--samples k]
    dereason-train judge --data items.jsonl --label level --out DIR [--per-level N]   a distilled judge (train.judge)
    dereason-train run   RECIPE.yaml [--out DIR]      SFT, then GRPO from its final model (train.run)
    dereason-train arms  RECIPE.yaml [--out DIR]      every ablation arm of a split, and their table (train.arms)
    dereason-train tiny-cpu [--out runs/tiny-cpu] [--seeds N]   the whole pipeline on a synthetic task, per seed, on a
                                                                CPU, and the table across seeds (train.tinycpu)

Each stage's flags are its config's fields (train.config, made into flags by curate.cli.flags). Any of them
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
from curate.cli.flags import settings_command
from train.model import main_process
from train.recipe import STAGE_CONFIGS

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,  # as curate's (curate.cli)
                  help="Train on curate's splits: SFT, then GRPO from its final model, with curate's verifiers as "
                       "rewards.")


def _setup_logging() -> None:
    setup_logging()
    logging.getLogger("train").setLevel(logging.INFO)  # each stage's progress: one line per logging step
    # TRL 1.16 still passes `gradient_checkpointing`, which transformers 5 renamed: a warning per stage, nothing to do.
    warnings.filterwarnings("ignore", message="`(is_)?gradient_checkpointing` is deprecated", category=FutureWarning)


def _stage_command(name: str, doc: str) -> Callable[..., None]:
    def command(*, settings: Any) -> None:
        _setup_logging()
        with errors():
            from train.run import STAGES

            record = STAGES[name].run(settings)
        if main_process():  # under `accelerate launch`, one process reports
            _print_record(name, record)

    command.__name__, command.__qualname__, command.__doc__ = name, name, doc
    return settings_command(STAGE_CONFIGS[name])(command)


def _print_record(name: str, record: dict[str, Any]) -> None:
    config = record["identity"]["config"]
    if "sets" in record:
        from curate.stats.metrics import format_interval

        for set_name, result in record["sets"].items():
            out.print(f"{name} {set_name}: pass@1 {format_interval(result['pass_at_1'], 3)} over {result['measured']} "
                      f"items x {config['samples']} samples ({result['no_countable_attempt']} without a countable "
                      f"answer); solve run {result['solve_run']}")
        return
    for stage in record.get("stages", []) if name == "staged" else []:
        counts = stage["reestimate"]
        trained = (f"trained {stage['steps']} steps (ended by {stage['ended_by']})" if stage["status"] == "trained"
                   else "skipped")
        out.print(f"staged {stage['stage']}: kept {counts['kept']} of {counts['items']} items ({counts['below_band']} "
                  f"below the band, {counts['above_band']} above, {counts['unmeasured']} unmeasured); {trained}; "
                  f"solve run {stage['solve_run']}", soft_wrap=True)  # one line whatever the path: it is copied
    out.print(f"{name}: {record['status']} after {record['steps']} steps; final model "
              f"{Path(config['out']) / record['final']}")
    if "judge" in record:
        from curate.stats.metrics import format_interval

        heldout = record["judge"]["heldout"]
        out.print(f"judge on {heldout['items']} held-out items: Spearman with their level "
                  f"{format_interval(heldout['vs_level'].get('spearman'), 3)} (curate stats of {heldout['run']})")


app.command()(_stage_command("sft", "Supervised fine-tuning (TRL SFTTrainer) on a split's conversations; rerun to "
                                    "resume from the last checkpoint."))
app.command()(_stage_command("grpo", "GRPO (TRL GRPOTrainer) on a split's prompts, rewarded by a curate verifier; "
                                     "rerun to resume from the last checkpoint."))
app.command()(_stage_command("staged", "GRPO over a split's curriculum stages in order, each measured again first "
                                       "with the current model (a curate solve run), its items outside "
                                       "--reestimate-band dropped and the rest trained easiest first; rerun to "
                                       "resume."))
app.command(name="eval")(_stage_command("eval", "pass@1, averaged over --samples answers per item, of a model "
                                                "on held-out sets: a `curate solve` run per set; rerun to resume."))
app.command()(_stage_command("judge", "Distil a difficulty judge: fine-tune a chat model to answer a judge template "
                                      "with each item's level 1..5 (from a field, a score or solve run, or an IRT "
                                      "fit), then check it on held-out items; rerun to resume."))


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


def _print_table(manifest: dict[str, Any], lines: list[str] = ()) -> None:
    """The arms table as markdown (no rich markup: its intervals are in brackets), then where it was written; a
    failed arm makes the exit status 3 once the table is out."""
    from train.armtable import FAILED, markdown

    table, where = manifest["table"], Path(manifest["out"])
    for line in lines:
        print(line)
    print(markdown(table, table["notes"]), end="")
    out.print(f"table: {where / 'table.md'}, {where / 'table.json'}, {where / 'table.png'}", highlight=False)
    _exit_on_failures([row["arm"] for row in table["rows"] if row["status"] == FAILED], where)


def _exit_on_failures(failed: list[str], where: Path | str) -> None:
    """Exit status 3 when an arm failed, saying where its traceback is."""
    from curate.cli.common import EXIT_FAILURES, print_error

    if failed:
        print_error(f"{len(failed)} arm(s) failed ({', '.join(failed)}): their rows say why, and each one's "
                    f"error.log under {where} has the traceback; rerun the same command to try them again")
        raise typer.Exit(EXIT_FAILURES)


@app.command()
def arms(
    recipe: Annotated[Path, typer.Argument(help="YAML arms recipe: a run recipe whose data is a split directory, with "
                                                "an eval section and optionally an arms section (see train.arms).")],
    out_dir: Annotated[str | None, typer.Option("--out", help="Arms directory (replaces the recipe's out).",
                                                show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Train every ablation arm of a split (difficulty, random, reversed, sft_all, rl_all) with matched budgets,
    evaluate each on the same held-out sets, and print the comparison table; rerun to resume."""
    _setup_logging()
    with errors():
        from train.arms import read_arms_recipe, run_arms

        manifest = run_arms(read_arms_recipe(recipe, out_dir))
        if not main_process():
            return
        if as_json:
            print(json.dumps(manifest["table"], sort_keys=True, default=str))
            return
        _print_table(manifest)


@app.command(name="tiny-cpu")
def tiny_cpu(
    recipe: Annotated[Path | None, typer.Option("--recipe", help="The tiny-cpu recipe (default: the shipped "
                                                                 "train/recipes/tiny-cpu.yaml).",
                                                show_default=False)] = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="Where everything is written (default: the recipe's "
                                                              "out, runs/tiny-cpu).", show_default=False)] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Run seeds 0 to N - 1, each a whole run "
                                                                     "(default: the recipe's seeds, 8).",
                                              show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report and the table as JSON.")] = False,
) -> None:
    """The whole pipeline on a synthetic addition task, on a CPU, once per seed: pre-train a tiny solver and a tiny
    judge, score the items with curate's engine, split them, train every arm; then print the table across seeds;
    rerun to resume."""
    _setup_logging()
    with errors():
        from train.armtable import FAILED
        from train.tinycpu import RECIPE, read_tiny_cpu, run_tiny_cpu, summary
        from train.tinyreport import TABLE

        report = run_tiny_cpu(*read_tiny_cpu(recipe or RECIPE, out_dir, seeds))
        if as_json:
            print(json.dumps({key: value for key, value in report.items() if key not in ("arms_manifests", "markdown")},
                             sort_keys=True, default=str))
            return
        for seed, manifest in report["arms_manifests"].items():
            print(f"seed {seed}: its table {Path(manifest['out']) / 'table.md'}")
            for line in summary(report["per_seed"][seed]):
                print(line)
        print(report["markdown"], end="")
        out.print(f"table: {Path(report['out']) / TABLE}", highlight=False)
        _exit_on_failures([f"{row['arm']} of seed {seed}" for seed, manifest in report["arms_manifests"].items()
                           for row in manifest["table"]["rows"] if row["status"] == FAILED], report["out"])


def main() -> None:
    app()


if __name__ == "__main__":
    main()
