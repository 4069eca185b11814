"""SEC, Self-Evolving Curriculum (Chen et al., arXiv 2505.14970): categories are the arms of a non-stationary
bandit. Each arm's value Q(c) starts at 0; a batch's reward for c is the mean absolute advantage of its category-c
completions, and Q(c) <- alpha r + (1 - alpha) Q(c) for each category the batch held (TD(0)). A category is drawn
with probability softmax(Q(c) / temperature). The paper's alpha = 0.5 and temperature = 1.0 are the defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from curate.settings import check
from train.curriculum.protocol import softmax


class Sec:
    name = "sec"

    def __init__(self, alpha: float = 0.5, temperature: float = 1.0):
        check(0 < alpha <= 1, f"sec: alpha must be in (0, 1], got {alpha}")
        check(temperature > 0, f"sec: temperature must be > 0, got {temperature}")
        self.alpha, self.temperature = alpha, temperature
        self.values: dict[str, float] = {}

    def probabilities(self, arms: Sequence[str]) -> np.ndarray:
        return softmax((self.values.get(a, 0.0) for a in arms), self.temperature)

    def observe(self, magnitudes: dict[str, list[float]]) -> None:
        for name, seen in magnitudes.items():
            reward = float(np.mean(seen))
            self.values[name] = self.alpha * reward + (1 - self.alpha) * self.values.get(name, 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"values": dict(self.values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = {name: float(value) for name, value in state["values"].items()}
