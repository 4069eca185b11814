"""The settings of the commands that read what runs wrote: `curate split`, `export`, `stats`, `compare`, `reparse`
and `templates` (curate.settings; each command's flags are made from them by curate.cli.flags).

A run's own settings are RunConfig's (curate.config); `curate levels` and `curate irt` take LevelsConfig and
RaschConfig, declared beside their rules (curate.split.levels, curate.stats.irt). What an invocation does rather than what
it computes, such as where it writes, whether it may replace a folder, or printing JSON, is no setting: those are
the commands' own options and the functions' own arguments. This module is light to import, so that the command
line makes its flags without loading what the work needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from curate.settings import check, described
from curate.split.rules import ARMS, TauRule

FORMATS = ("hf", "parquet", "jsonl", "trl", "verl")
# The export options that only some formats use.
FORMAT_OPTIONS = {"template": ("trl", "verl"), "system_prompt": ("trl", "verl"), "data_source": ("verl",),
                  "ability": ("verl",)}


@dataclass(frozen=True)
class SplitConfig:
    """`curate split` (curate.split.directory.make_split): τ, the ablation arms, the RL curriculum and hygiene."""

    score: str | None = described("Item score: mean, median, expected or calibrated; strength for a pairs run.",
                                  default=None, unset="mean (a pairs run: strength)")
    tau_rule: TauRule = described("How τ is chosen.", default_factory=TauRule)
    arms: str = described("Ablation arms, comma-separated: random,reversed,sft_all,rl_all.", default=",".join(ARMS))
    stages: int | None = described("Write a k-stage RL curriculum, easy to hard.", default=None)
    stage_by: str = described(
        "Stage RL items by 'score', by a numeric input field, by the pass rate of a solve run over the same items "
        "(its folder; a lower pass rate is harder), or by the difficulties of an IRT fit of such runs (the folder "
        "`curate irt` wrote; a higher difficulty is harder).", default="score")
    harder_when: Literal["high", "low"] | None = described(
        "With --stage-by FIELD: 'high' if a higher value is harder (a level), 'low' if easier (a pass rate).",
        default=None)
    seed: int = described("Seed of the random arm (same seed, same bytes).", default=0)
    dedup: bool = described("Remove exact and normalised duplicates.", default=True)
    decontaminate: list[str] = described("Benchmark FILE or FILE:FIELD to decontaminate against.",
                                         default_factory=list)
    benchmark_field: str | None = described("Question field of benchmark files given without :FIELD.", default=None,
                                            unset="the one of question, problem, prompt they have")
    ngram: int = described("n of the word n-gram overlap that counts as contamination.", default=13)
    drop_unscored: bool = described("Do not write unscored.parquet (they are still counted).", default=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.arm_names) - set(ARMS))
        check(not unknown, f"unknown arm(s) {unknown}; choose from {list(ARMS)}")
        for flag, value in (("--stages", self.stages), ("--ngram", self.ngram)):
            check(value is None or value >= 1, f"{flag} must be at least 1, not {value}")
        check(bool(self.stages) or (self.stage_by == "score" and self.harder_when is None),
              "--stage-by and --harder-when order the RL curriculum: they need --stages")

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(arm for arm in self.arms.split(",") if arm)


@dataclass(frozen=True)
class ExportConfig:
    """`curate export` (curate.export.exporters.export_split): the format, the SFT responses and the trainers' prompts."""

    format: str = described("hf, parquet, jsonl, trl or verl.")
    response_field: str | None = described("SFT target field for --format trl and verl.", default=None,
                                           unset="response")
    responses: str | None = described(
        "Respond run (`curate respond`) over the split's items: its kept responses are the SFT responses.",
        default=None)
    skip_unanswered: bool = described(
        "With --responses: leave SFT items without a kept response out (listed in unanswered.jsonl) instead of "
        "refusing the export.", default=False)
    template: str | None = described(
        "Response template (name or .jinja file) that writes the trl and verl prompts.", default=None,
        unset="instruct/boxed: the question, its options, and an instruction to put the final answer in \\boxed{}")
    system_prompt: str | None = described(
        "System message put before every trl and verl prompt (refused with a template that writes its own).",
        default=None)
    data_source: str | None = described(
        "verl `data_source` of every row: verl's default reward scores lighteval/MATH; any other needs curate's "
        "reward (curate.rewards; the export's README.md gives the line that sets it).", default=None,
        unset="lighteval/MATH")
    ability: str | None = described("verl `ability` of every row.", default=None,
                                    unset="the item's domain, else multiple_choice for items with choices, else "
                                          "unspecified")

    def __post_init__(self) -> None:
        check(self.format in FORMATS, f"unknown export format {self.format!r}; choose from {', '.join(FORMATS)}")
        ignored = [name for name, formats in FORMAT_OPTIONS.items()
                   if getattr(self, name) is not None and self.format not in formats]
        formats = " and ".join(sorted({f for name in ignored for f in FORMAT_OPTIONS[name]}))
        options = ", ".join("--" + name.replace("_", "-") for name in ignored)
        check(not ignored, f"{options}: only the {formats} export uses {'it' if len(ignored) == 1 else 'them'}, and "
                           f"--format {self.format} keeps each item's fields as they are: drop {options}, or export "
                           f"{formats}")
        check(self.responses is None or self.response_field is None,
              "--responses and --response-field both name the SFT response: pass the respond run or the field, not "
              "both")
        check(not self.skip_unanswered or self.responses is not None,
              "--skip-unanswered leaves out SFT items without a kept response of --responses RUN: pass the respond "
              "run too")


@dataclass(frozen=True)
class ScoreStatistics:
    """What `curate stats` and `curate compare` share: the item score they read, and their intervals' bootstrap."""

    score: str | None = described("Item score: mean, median or expected; strength for a pairs run.", default=None,
                                  unset="each run's own: mean (a pairs run: strength)")
    resamples: int = described("Bootstrap resamples for the 95% intervals (0: none).", default=1000)


@dataclass(frozen=True)
class StatsConfig(ScoreStatistics):
    """`curate stats` (curate.stats.analysis.analyze_run): what the judge run's scores are checked against."""

    reference: str | None = described(
        "Input field with a numeric reference difficulty label (e.g. level, 1..5).", default=None)
    pass_rate: str | None = described(
        "Measured pass rates: a solve run directory (`curate solve` over the same items; any folder holding a "
        "manifest.json is read as a run), or else an input field holding pass rates in 0..1.", default=None)
    calibrate: str | None = described(
        "Fit an isotonic map from the item score onto this input field, or onto a solve run's pass rates (a run "
        "directory, as for --pass-rate), and save it with the run.", default=None)
    irt: list[str] = described(
        "A solve run over the same items, one model of a crowd; repeat for each (two or more): the judge is checked "
        "against Rasch (IRT) difficulties fitted over all their rollouts.", default_factory=list)
    unsolved_at: float = described("Pass rate at or below which an item counts as not solved.", default=0.0)

    def __post_init__(self) -> None:
        check(0 <= self.unsolved_at <= 1, f"--unsolved-at {self.unsolved_at} must lie in 0..1: it is the pass rate "
                                          "at or below which an item counts as not solved")


@dataclass(frozen=True)
class CompareConfig(ScoreStatistics):
    """`curate compare` (curate.stats.analysis.analyze_comparison)."""

    allow_different_items: bool = described(
        "Compare by id even where the two runs' items differ in question, reference or choices.", default=False)


@dataclass(frozen=True)
class ReparseConfig:
    """`curate reparse` (curate.engine.reparse): what decides the stored outputs instead of the run's own."""

    parser: str | None = described("Parser to use instead of the template's (score and pairs runs).", default=None,
                                   unset="the template's")
    verify: str | None = described("Verifier to use instead of the run's (solve, respond runs).", default=None,
                                   unset="the run's")


@dataclass(frozen=True)
class TemplatesConfig:
    """`curate templates`."""

    template_dir: str | None = described("Also list templates here.", default=None)

