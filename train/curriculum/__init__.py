"""Curricula inside RL: bandit samplers over categories (SEC, DUMP) for TRL's GRPO, for verl, and for any trainer
that can ask for indices and report advantages (the protocol in train.curriculum.protocol).

    protocol.py      Curriculum (sample, update, state_dict, load_state_dict); CategoryCurriculum over a column
    sec.py, dump.py  the two bandit rules, with their papers' defaults
    trl_sampler.py   a torch Sampler in TRL's GRPO repeat order whose prompts the curriculum draws
    verl_adapter.py  a replay buffer for verl 0.9.1's trainer.v1.sampler.custom_sampler, and its checkpoint callback
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from curate.errors import ConfigError
from train.curriculum.dump import Dump
from train.curriculum.protocol import Bandit, CategoryCurriculum, Curriculum
from train.curriculum.sec import Sec

BANDITS: dict[str, type] = {"sec": Sec, "dump": Dump}

__all__ = ["BANDITS", "Bandit", "CategoryCurriculum", "Curriculum", "make_bandit", "make_curriculum"]


def make_bandit(name: str, settings: Mapping[str, Any] | None = None) -> Bandit:
    """The bandit rule `name` (sec or dump) with `settings` (sec: alpha, temperature; dump: window,
    temperature)."""
    if name not in BANDITS:
        raise ConfigError(f"unknown curriculum {name!r}; choose one of {', '.join(BANDITS)}")
    accepted = list(inspect.signature(BANDITS[name]).parameters)
    if unknown := sorted(set(settings or {}) - set(accepted)):
        raise ConfigError(f"curriculum {name} takes the settings {accepted}, not {unknown}")
    try:
        return BANDITS[name](**dict(settings or {}))
    except TypeError as exc:  # a setting of the wrong type
        raise ConfigError(f"curriculum {name}: {exc}") from None


def make_curriculum(name: str, categories: Sequence[Hashable], seed: int, settings: Mapping[str, Any] | None = None,
                    field: str = "category") -> CategoryCurriculum:
    return CategoryCurriculum(make_bandit(name, settings), categories, seed, field)
