"""Online difficulty filtering for GRPO (balanced filtering, Bae et al., arXiv 2504.03380): of each generation
batch, keep the prompt groups whose accuracy lies in [low, high], and generate more groups until the batch is full.

Accuracy is the mean verdict of the stage's own verifier over a group's completions (the correctness reward, not
the weighted sum with the format reward; completions the verifier could not decide are left out of the mean, and a
group with none decided is out of the band). Refills are whole generation batches of prompts drawn at random from
the training data (with a curriculum: drawn by the curriculum), from a generator seeded by the stage's seed, the
step and the round, so a resumed stage refills as an uninterrupted one. At most `extra_rounds` refills per step;
a step still short after them stops training with a one-line error: the data has run out of groups in the band.

Each step logs `online_filter/kept_fraction` (groups in the band over groups generated, over every round),
`online_filter/extra_rounds` and `online_filter/generated_groups` (groups generated over groups trained: 1.0 when
nothing was refilled). TRL's own metrics of the step (reward, frac_reward_zero_std, ...) are over every round's
generations. Advantages are TRL's, computed within each round's generation batch; with scale_rewards=batch the
scale is that round's. One process only (a group spans processes under `accelerate launch`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from curate.errors import ConfigError, DataError
from curate.settings import check

PROMPT_KEYS = ("prompt_ids", "prompt_mask")  # left-padded; every other 2-D tensor is right-padded


def parse_band(text: str, setting: str = "online_filter") -> tuple[float, float]:
    """`LOW,HIGH` → (low, high), 0 <= low <= high <= 1; `setting` names it in errors."""
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise ConfigError(f"{setting} takes LOW,HIGH (two accuracies, e.g. 0.2,0.8), got {text!r}") from None
    check(0 <= low <= high <= 1, f"{setting}: need 0 <= LOW <= HIGH <= 1, got {text!r}")
    return low, high


def groups_in_band(correct: Sequence[float | None], group_size: int, low: float, high: float) -> list[bool]:
    """Whether each consecutive group of `group_size` verdicts (1.0, 0.0, None undecided) has its accuracy in
    [low, high]."""
    verdicts = np.array([np.nan if v is None else float(v) for v in correct]).reshape(-1, group_size)
    decided = ~np.isnan(verdicts)
    counts = decided.sum(axis=1)
    accuracy = np.where(counts > 0, np.nansum(verdicts, axis=1) / np.maximum(counts, 1), np.nan)
    return [bool(counts[g] > 0 and low <= accuracy[g] <= high) for g in range(len(accuracy))]


def merged(parts: list[tuple[dict[str, Any], list[int]]], pad_token_id: int) -> dict[str, Any]:
    """The rows `rows` of each generation output, as one output: 1-D tensors joined, prompt tensors left-padded and
    the others right-padded to the widest part, `num_items_in_batch` counted again over the kept completions."""
    import torch
    import torch.nn.functional as F

    merged_output: dict[str, Any] = {}
    for key, first in parts[0][0].items():
        if key == "num_items_in_batch":
            continue
        if not isinstance(first, torch.Tensor) or first.dim() > 2:
            raise ConfigError(f"online_filter cannot join the generation output {key!r} (multimodal inputs or tools "
                              "are not supported)")
        pieces = [output[key][torch.as_tensor(rows, device=first.device)] for output, rows in parts]
        if first.dim() == 2:
            width = max(piece.size(1) for piece in pieces)
            fill = pad_token_id if key.endswith("_ids") else 0
            pieces = [F.pad(piece, (width - piece.size(1), 0) if key in PROMPT_KEYS else (0, width - piece.size(1)),
                            value=fill) for piece in pieces]
        merged_output[key] = torch.cat(pieces)
    mask = merged_output["completion_mask"]
    merged_output["num_items_in_batch"] = (mask * merged_output.get("tool_mask", 1)).sum()
    return merged_output


class OnlineFilter:
    def __init__(self, low: float, high: float, extra_rounds: int, seed: int):
        self.low, self.high, self.extra_rounds, self.seed = low, high, extra_rounds, seed
        self.last_correct: list[float | None] = []

    def recorded(self, correctness: Callable[..., list[float | None]]) -> Callable[..., list[float | None]]:
        """The correctness reward, remembering its last verdicts (the accuracy the filter reads)."""

        @functools.wraps(correctness)
        def reward(*args: Any, **kwargs: Any) -> list[float | None]:
            self.last_correct = list(correctness(*args, **kwargs))
            return self.last_correct

        return reward

    def fill(self, trainer: Any, rows: list[dict[str, Any]],
             generate: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> dict[str, Any]:
        """The generation output of `rows` (consecutive groups of trainer.num_generations) with the groups out of the
        band replaced by refilled ones; `generate(rows)` generates and scores (TRL's step)."""
        size = trainer.num_generations
        needed = len(rows) // size
        parts: list[tuple[dict[str, Any], list[int]]] = []
        taken = in_band = generated = rounds = 0
        while True:
            output = generate(rows)
            keep = groups_in_band(self.last_correct, size, self.low, self.high)
            in_band, generated = in_band + sum(keep), generated + len(keep)
            chosen = [g for g, k in enumerate(keep) if k][:needed - taken]
            if chosen:
                parts.append((output, [g * size + j for g in chosen for j in range(size)]))
                taken += len(chosen)
            if taken == needed:
                break
            if rounds == self.extra_rounds:
                raise DataError(f"online filter, step {trainer.state.global_step + 1}: only {taken} of {needed} prompt "
                                f"groups had an accuracy in [{self.low}, {self.high}] after {rounds} extra generation "
                                f"round(s) ({generated} groups generated): the data has run out of groups in the band "
                                "for this model; widen --online-filter, raise --online-filter-rounds or train on "
                                "other data")
            rounds += 1
            rows = self.refill(trainer, rounds, needed)
        metrics = trainer._metrics["train"]
        metrics["online_filter/kept_fraction"].append(in_band / generated)
        metrics["online_filter/extra_rounds"].append(float(rounds))
        metrics["online_filter/generated_groups"].append(generated / needed)
        return merged(parts, trainer.processing_class.pad_token_id)

    def refill(self, trainer: Any, round_number: int, groups: int) -> list[dict[str, Any]]:
        """`groups` prompts of the training data, each repeated for its group: drawn by the curriculum when there
        is one, else uniformly; seeded by (seed, step, round)."""
        rng = np.random.default_rng([self.seed, trainer.state.global_step, round_number])
        dataset = trainer.train_dataset
        curriculum = getattr(trainer, "curriculum", None)
        indices = (curriculum.sample(groups, rng) if curriculum is not None
                   else rng.integers(0, len(dataset), size=groups).tolist())
        return [dataset[int(i)] for i in indices for _ in range(trainer.num_generations)]
