"""DUMP (Wang et al., arXiv 2504.09710), as its public code has it (ZhentingWang/DUMP,
verl/utils/curriculum_learning.py: LearnabilityEstimator and CurriculumController.compute_sampling_weights).

Per category (their "data source"), a window of the last `window` absolute advantages (300) and the count n_j of
every advantage it has seen. Its score is UCB_j = mean|A| over the window (0 before any) + sqrt(2 ln(N + 1) /
(n_j + 1)), N the count over all categories (at least 1, as the code has it), and a category is drawn with
probability softmax(UCB_j / temperature), temperature 0.1. One advantage per completion, as their trainer passes
each response's mean token advantage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from curate.settings import check
from train.curriculum.protocol import softmax


class Dump:
    name = "dump"

    def __init__(self, window: int = 300, temperature: float = 0.1):
        check(window >= 1, f"dump: window must be >= 1, got {window}")
        check(temperature > 0, f"dump: temperature must be > 0, got {temperature}")
        self.window, self.temperature = window, temperature
        self.recent: dict[str, list[float]] = {}
        self.seen: dict[str, int] = {}

    def scores(self, arms: Sequence[str]) -> np.ndarray:
        total = max(1, sum(self.seen.values()))
        return np.array([(float(np.mean(self.recent[a])) if self.recent.get(a) else 0.0)
                         + np.sqrt(2 * np.log(total + 1) / (self.seen.get(a, 0) + 1)) for a in arms])

    def probabilities(self, arms: Sequence[str]) -> np.ndarray:
        return softmax(self.scores(arms), self.temperature)

    def observe(self, magnitudes: dict[str, list[float]]) -> None:
        for name, seen in magnitudes.items():
            self.recent[name] = (self.recent.get(name, []) + seen)[-self.window:]
            self.seen[name] = self.seen.get(name, 0) + len(seen)

    def state_dict(self) -> dict[str, Any]:
        return {"recent": {name: list(values) for name, values in self.recent.items()}, "seen": dict(self.seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent = {name: [float(v) for v in values] for name, values in state["recent"].items()}
        self.seen = {name: int(count) for name, count in state["seen"].items()}
