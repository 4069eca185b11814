"""`curate split` and `curate export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from curate.cli.common import errors, out, setup_logging


def split(
    run_dir: Annotated[Path, typer.Argument(help="Run directory made by `curate score` (τ is on its judge score).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Split directory to write (whole, or not at all).")],
    tau: Annotated[float | None, typer.Option(
        help="SFT: score ≤ τ; RL: score > τ. Default 3 when neither --quantile nor --rl-budget is given.",
        show_default=False)] = None,
    score_column: Annotated[str, typer.Option("--score", help="Item score: mean, median, expected or calibrated.")] = "mean",
    quantile: Annotated[float | None, typer.Option(help="Choose τ so RL gets the hardest fraction q.")] = None,
    rl_budget: Annotated[int | None, typer.Option(help="Choose τ so RL gets at most N items.")] = None,
    per_domain: Annotated[bool, typer.Option(
        help="Apply --quantile within each domain; share --rl-budget across domains by size.")] = False,
    arms: Annotated[str, typer.Option(help="Ablation arms, comma-separated: random,reversed,sft_all,rl_all.")] = "random,reversed,sft_all,rl_all",
    stages: Annotated[int | None, typer.Option(help="Write a k-stage RL curriculum, easy to hard.")] = None,
    stage_by: Annotated[str, typer.Option(
        help="Stage RL items by 'score', by a numeric input field, by the pass rate of a solve run over the same "
             "items (its folder; a lower pass rate is harder), or by the difficulties of an IRT fit of such runs (the "
             "folder `curate irt` wrote; a higher difficulty is harder).")] = "score",
    harder_when: Annotated[str | None, typer.Option(
        help="With --stage-by FIELD: 'high' if a higher value is harder (a level), 'low' if easier (a pass rate).",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random arm (same seed, same bytes).")] = 0,
    dedup: Annotated[bool, typer.Option("--dedup/--no-dedup", help="Remove exact and normalised duplicates.")] = True,
    decontaminate: Annotated[list[str] | None, typer.Option(
        help="Benchmark FILE or FILE:FIELD to decontaminate against (repeatable).")] = None,
    benchmark_field: Annotated[str | None, typer.Option(
        help="Question field of benchmark files given without :FIELD (default: the one of question, problem, "
             "prompt they have).", show_default=False)] = None,
    ngram: Annotated[int, typer.Option(help="n of the word n-gram overlap that counts as contamination.")] = 13,
    drop_unscored: Annotated[bool, typer.Option(help="Do not write unscored.parquet (they are still counted).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing non-empty --out folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Split a scored run into SFT (score ≤ τ) and RL (score > τ), with ablation arms and hygiene."""
    setup_logging()
    with errors():
        from curate.card import tau_text
        from curate.split_dir import make_split

        manifest = make_split(run_dir, out_dir, tau=tau, score=score_column, quantile=quantile, rl_budget=rl_budget,
                              per_domain=per_domain, arms=tuple(a for a in arms.split(",") if a), stages=stages,
                              stage_by=stage_by, harder_when=harder_when, seed=seed, dedup=dedup,
                              benchmarks=tuple(decontaminate or ()), benchmark_field=benchmark_field, ngram=ngram,
                              drop_unscored=drop_unscored, overwrite=overwrite)
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


def export_command(
    split_dir: Annotated[Path, typer.Argument(help="Split directory made by `curate split`.")],
    fmt: Annotated[str, typer.Option("--format", help="hf, parquet, jsonl, trl or verl.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the export.")],
    response_field: Annotated[str | None, typer.Option(
        help="SFT target field for --format trl and verl (default: response).", show_default=False)] = None,
    responses: Annotated[Path | None, typer.Option(
        help="Respond run (`curate respond`) over the split's items: its kept responses are the SFT responses.",
        show_default=False)] = None,
    skip_unanswered: Annotated[bool, typer.Option(
        help="With --responses: leave SFT items without a kept response out (listed in unanswered.jsonl) instead "
             "of refusing the export.")] = False,
    template: Annotated[str | None, typer.Option(
        help="Response template (name or .jinja file) that writes the trl and verl prompts (default: instruct/boxed: "
             "the question, its options, and an instruction to put the final answer in \\boxed{}).",
        show_default=False)] = None,
    system_prompt: Annotated[str | None, typer.Option(
        help="System message put before every trl and verl prompt (refused with a template that writes its own).",
        show_default=False)] = None,
    data_source: Annotated[str | None, typer.Option(
        help="verl `data_source` of every row (default: lighteval/MATH, which verl's default reward scores; any "
             "other needs curate's reward: reward.custom_reward_function.path=pkg://curate.rewards).",
        show_default=False)] = None,
    ability: Annotated[str | None, typer.Option(
        help="verl `ability` of every row (default: the item's domain, else multiple_choice for items with "
             "choices, else unspecified).", show_default=False)] = None,
    push_to_hub: Annotated[str | None, typer.Option(help="With --format hf: push to this Hub repo (token from $HF_TOKEN).")] = None,
    public: Annotated[bool, typer.Option(help="Make the pushed dataset public (private by default).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing non-empty --out folder.")] = False,
) -> None:
    """Export a split for the Hub, TRL, verl or plain files."""
    setup_logging()
    with errors():
        from curate.card import CARD
        from curate.export import RESPONSES, UNANSWERED, check_push, export_split
        from curate.export import push_to_hub as push

        if push_to_hub:
            check_push(fmt)  # before anything is written
        written = export_split(split_dir, fmt, out_dir, response_field=response_field, system_prompt=system_prompt,
                               data_source=data_source, ability=ability, overwrite=overwrite, responses=responses,
                               skip_unanswered=skip_unanswered, template=template)
        out.print(f"{fmt} export written to {written}"
                  + (f"; {written / CARD} says how to train on it" if fmt in ("trl", "verl") else ""))
        if responses is not None:
            made = json.loads((written / RESPONSES).read_text(encoding="utf-8"))
            verified = f"verified by {made['verifier']}" if made["verified"] else "NOT verified"
            out.print(f"SFT responses from {responses} ({verified}): {made['answered']} of {made['sft_items']} items"
                      + (f"; {made['unanswered']} left out, listed in {written / UNANSWERED}" if made["unanswered"]
                         else ""))
        if push_to_hub:
            push(written, push_to_hub, private=not public)
            out.print(f"pushed to {push_to_hub}")
