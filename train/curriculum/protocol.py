"""The curriculum protocol, and a curriculum over the categories of a column (difficulty level, stage, domain).

A curriculum chooses which items the next batch trains on and learns from what training saw:

    sample(batch_size) -> indices            rows of the data to generate for next
    update(categories, advantages)           one category and one advantage per completion just trained on
    state_dict() / load_state_dict(state)    JSON-able state (no pickle), restored exactly

`CategoryCurriculum` implements it over a column of categories with a bandit rule (train.curriculum.sec,
train.curriculum.dump): each draw picks a category with the rule's probabilities, then an item of that category
uniformly (with replacement, as both papers' samplers do). A category is known by its value as text, so a level 3
read as 3 or as numpy's int64(3) is one category. The generator is numpy's (seeded); its state is part of the
curriculum's, so a restored curriculum draws what the saved one would have drawn next.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from curate.errors import ConfigError, DataError


class Curriculum(Protocol):
    def sample(self, batch_size: int) -> list[int]: ...

    def update(self, categories: Sequence[Hashable], advantages: Sequence[float]) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Bandit(Protocol):
    """A rule over arms (categories as text): its probabilities for the arms it is asked about, and what it learns
    from each arm's absolute advantages."""

    name: str

    def probabilities(self, arms: Sequence[str]) -> np.ndarray: ...

    def observe(self, magnitudes: dict[str, list[float]]) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def softmax(scores: Iterable[float], temperature: float) -> np.ndarray:
    from scipy.special import softmax as scipy_softmax

    return scipy_softmax(np.asarray(list(scores), dtype=float) / temperature)


def arm(category: Hashable) -> str:
    return str(category)


def magnitudes(categories: Sequence[Hashable], advantages: Sequence[float]) -> dict[str, list[float]]:
    """Each arm's absolute advantages, in the order given."""
    if len(categories) != len(advantages):
        raise ValueError(f"{len(categories)} categories for {len(advantages)} advantages: give one of each per "
                         "completion")
    grouped: dict[str, list[float]] = defaultdict(list)
    for category, advantage in zip(categories, advantages, strict=True):
        grouped[arm(category)].append(abs(float(advantage)))
    return dict(grouped)


class CategoryCurriculum:
    """The Curriculum protocol over `categories` (one per item, in the data's order) with `bandit`'s rule."""

    def __init__(self, bandit: Bandit, categories: Sequence[Hashable], seed: int, field: str = "category"):
        missing = [i for i, category in enumerate(categories) if category is None]
        if missing:
            raise DataError(f"{len(missing)} of {len(categories)} items have no {field!r} (e.g. row {missing[0]}): "
                            "a curriculum draws by category, so give every item one or choose another field")
        members: dict[str, list[int]] = defaultdict(list)
        for index, category in enumerate(categories):
            members[arm(category)].append(index)
        if not members:
            raise DataError("a curriculum needs items to draw from; the data has none")
        self.bandit, self.field = bandit, field
        self.arms = sorted(members)
        self.members = {name: np.asarray(indices) for name, indices in members.items()}
        self.rng = np.random.default_rng(seed)

    def probabilities(self) -> dict[str, float]:
        return dict(zip(self.arms, self.bandit.probabilities(self.arms).tolist(), strict=True))

    def sample(self, batch_size: int, rng: np.random.Generator | None = None) -> list[int]:
        """`batch_size` rows, each of a category drawn with the bandit's probabilities; `rng` (default: the
        curriculum's own) draws them."""
        rng = self.rng if rng is None else rng
        chosen = rng.choice(len(self.arms), size=batch_size, p=self.bandit.probabilities(self.arms))
        return [int(rng.choice(self.members[self.arms[a]])) for a in chosen]

    def update(self, categories: Sequence[Hashable], advantages: Sequence[float]) -> None:
        observed = magnitudes(categories, advantages)
        if unknown := sorted(set(observed) - set(self.members)):
            raise DataError(f"the curriculum over {self.field!r} was given categories {unknown} that none of its "
                            f"items has (its categories: {self.arms})")
        self.bandit.observe(observed)

    def state_dict(self) -> dict[str, Any]:
        return {"bandit": self.bandit.name, "field": self.field, "arms": self.arms,
                "state": self.bandit.state_dict(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = (state["bandit"], state["field"], state["arms"])
        if saved != (self.bandit.name, self.field, self.arms):
            raise ConfigError(f"the curriculum state was saved by {saved[0]} over {saved[1]!r} with categories "
                              f"{saved[2]}; this one is {self.bandit.name} over {self.field!r} with {self.arms}")
        self.bandit.load_state_dict(state["state"])
        self.rng.bit_generator.state = state["rng"]
