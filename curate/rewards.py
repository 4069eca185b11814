"""Rewards for RL trainers, from curate's verifiers: the one definition of "is this answer right" (curate.verify).

An item with options is checked by the `choice` verifier, any other by `verifier` (default `math`: the last
`\\boxed{}` against the reference by math-verify, so `\\frac12` = `0.5`). The reward is 1.0 for a `correct`
verdict and 0.0 for every other (wrong, no_answer, and error or timeout: an item without a reference, a check that
ran out of time), as verl's own scorers do.

verl: `compute_score` is a custom reward function over a `curate export --format verl` row (its
`reward_model.ground_truth` and `extra_info.choices`), loaded by verl itself:
    python -m verl.trainer.main_ppo ... reward.custom_reward_function.path=pkg://curate.rewards \\
        reward.custom_reward_function.name=compute_score
It ignores `data_source`, so it scores an export with any `--data-source`. Another verifier for the items without
options: `+reward.custom_reward_function.reward_kwargs.verifier=gsm8k`.

TRL: `trl_reward(verifier)` is a `GRPOTrainer` reward function over the columns of a `--format trl` grpo.parquet
(`reference`, `choices`):
    GRPOTrainer(..., reward_funcs=trl_reward("math"), train_dataset=load_dataset("parquet", data_files=...))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from curate.verify import VerdictStatus, get_verifier


def reward(response: str, reference: str | None, choices: Sequence[Mapping[str, str]] | None,
           verifier: str = "math") -> float:
    """1.0 when the response's final answer is right for the item (see the module docstring), else 0.0."""
    checker = get_verifier("choice" if choices else verifier)
    verdict = checker.verify(response, {"reference": reference, "choices": list(choices) if choices else None})
    return float(verdict.status == VerdictStatus.CORRECT)


def compute_score(data_source: str, solution_str: str, ground_truth: str | None,
                  extra_info: Mapping[str, Any] | None = None, verifier: str = "math", **kwargs: Any) -> float:
    """verl's custom reward function signature; `kwargs` takes what verl adds (its reward router, sandbox)."""
    return reward(solution_str, ground_truth, (extra_info or {}).get("choices"), verifier)


def trl_reward(verifier: str = "math") -> Callable[..., list[float]]:
    """A TRL reward function: TRL passes the completions and the dataset's other columns by name."""
    get_verifier(verifier)  # an unknown name fails here, not at the first training step

    def dereason_reward(completions: list, reference: list, choices: list | None = None, **kwargs: Any) -> list[float]:
        options = choices or [None] * len(completions)
        return [reward(_text(completion), answer, option, verifier)
                for completion, answer, option in zip(completions, reference, options, strict=True)]

    dereason_reward.__name__ = f"dereason_{verifier}"  # TRL logs each reward under its function's name
    return dereason_reward


def _text(completion: str | list[Mapping[str, str]]) -> str:
    """A completion's text: conversational datasets give [{"role": "assistant", "content": …}]."""
    return completion if isinstance(completion, str) else completion[-1]["content"]
