"""Tasks the engine runs (curate.tasks.base has the seam): `score` judges, `solve` and `respond` answer, `pairs`
compares."""

from __future__ import annotations

from typing import Any

from curate.errors import ConfigError
from curate.parse import PARSERS
from curate.parse_choice import CHOICE_PARSERS
from curate.tasks.base import Task
from curate.tasks.pairs import PairsTask
from curate.tasks.responses import ResponseTask
from curate.tasks.score import ScoreTask
from curate.verify import MODEL_VERIFIER, get_verifier

RESPONSE_TASKS = ("solve", "respond")


def rebuild_task(identity: dict[str, Any], parser_name: str | None = None, verifier: str | None = None) -> Task:
    """The task a run directory's identity describes, for deciding its stored records again (a reparse):
    with another parser (score and pairs runs) or verifier (solve and respond runs) when one is named."""
    task = identity["task"]
    if task in ("score", "pairs") and verifier is not None:
        raise ConfigError(f"--verify applies to solve and respond runs; this is a {task} run (use --parser)")
    if task == "pairs":
        name = parser_name or identity["parser"]
        if name not in CHOICE_PARSERS:
            raise ConfigError(f"unknown pairwise parser {name!r}; choose one of {sorted(CHOICE_PARSERS)}")
        return PairsTask(CHOICE_PARSERS[name], template_identity="", comparisons=identity["comparisons"],
                         schedule_seed=identity["schedule_seed"], sampled=identity["temperature"] > 0,
                         constrained=identity["constrain_score"])
    if task == "score":
        name = parser_name or identity["parser"]
        if name not in PARSERS:
            raise ConfigError(f"unknown parser {name!r}; choose one of {sorted(PARSERS)}")
        return ScoreTask(PARSERS[name], template_identity="", sampled=identity["temperature"] > 0,
                         constrained=identity["constrain_score"])
    if task in RESPONSE_TASKS:
        if parser_name is not None:
            raise ConfigError(f"--parser applies to score runs; this is a {task} run (use --verify)")
        name = verifier or identity["verifier"]
        if name == MODEL_VERIFIER:
            raise ConfigError("a reparse decides stored responses again without calling a model, and --verify model "
                              "asks a judge model: rerun the run's command with --retry-failed to have the judge "
                              "decide its errors again, or reparse with a rule verifier (--verify math, exact, ...)")
        return ResponseTask(task, get_verifier(name) if name else None, template_identity="")
    raise ConfigError(f"this run directory was made by a task this version does not know: {task!r}")


__all__ = ["RESPONSE_TASKS", "PairsTask", "ResponseTask", "ScoreTask", "Task", "rebuild_task"]
