"""GRPO rewards: TRL-style functions `*_reward(completions, **kwargs) -> list[float | None]` around curate's
verifiers, so that training rewards exactly what `curate solve` counts as solved.

`rewards(verifier, settings, format_weight)` builds them: the verifier by name with its settings
(`curate.verify.get_verifier`: a model-based verifier that needs a backend is made whole the same way), and
returns the functions with their weights. The item's `reference` and `choices` reach them as dataset columns,
which TRL passes to every reward function as keyword arguments.

    correctness_reward   1.0 when the verdict is correct; 0.0 when wrong or no answer; None when the verifier
                         could not decide (error: no reference or a reference it cannot read; timeout). TRL
                         leaves a None out of the group's baseline, so a verifier's failure is never scored as
                         the model's mistake.
    format_reward        1.0 when the verifier found a final answer in its format (correct or wrong); 0.0 when
                         it found none; None when it could not decide.

Each batch's verdicts are also logged as metrics (`verdicts/<status>`: the fraction of completions with that
status), through the `log_metric` callable TRL hands reward functions: TRL logs the mean reward, the fraction
of groups whose rewards do not vary and the completion lengths itself, but not why a reward was 0.
Both functions share one verdict per (completion, item), so the format reward costs no second verification.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from curate.verify import Verdict, VerdictStatus, get_verifier

RewardFunction = Callable[..., list[float | None]]
UNDECIDED = (VerdictStatus.ERROR, VerdictStatus.TIMEOUT)


def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """A completion's text: TRL passes a string for a plain prompt, the assistant messages for a conversational one."""
    if isinstance(completion, str):
        return completion
    return "".join(str(message.get("content") or "") for message in completion)


def rewards(verifier: str, settings: Mapping[str, Any] | None = None,
            format_weight: float = 0.0) -> tuple[list[RewardFunction], list[float]]:
    """The reward functions and their weights: correctness (weight 1), and format when `format_weight` > 0."""
    checker = get_verifier(verifier, **dict(settings or {}))

    @lru_cache(maxsize=4096)
    def verdict(text: str, reference: str | None, choices: tuple[tuple[str, str], ...] | None) -> Verdict:
        options = [{"label": label, "text": option} for label, option in choices] if choices is not None else None
        return checker.verify(text, {"reference": reference, "choices": options})

    def verdicts(completions: Sequence[Any], reference: Sequence[str | None],
                 choices: Sequence[Any] | None) -> list[Verdict]:
        options = choices if choices is not None else [None] * len(completions)
        return [verdict(completion_text(c), r, None if o is None else tuple((x["label"], x["text"]) for x in o))
                for c, r, o in zip(completions, reference, options, strict=True)]

    def correctness_reward(completions: Sequence[Any], reference: Sequence[str | None],
                           choices: Sequence[Any] | None = None, log_metric: Callable[[str, float], None] | None = None,
                           **kwargs: Any) -> list[float | None]:
        found = verdicts(completions, reference, choices)
        if log_metric is not None:
            counts = Counter(v.status for v in found)
            for status in VerdictStatus:
                log_metric(f"verdicts/{status.value}", counts[status] / len(found))
        return [None if v.status in UNDECIDED else float(v.status == VerdictStatus.CORRECT) for v in found]

    def format_reward(completions: Sequence[Any], reference: Sequence[str | None],
                      choices: Sequence[Any] | None = None, **kwargs: Any) -> list[float | None]:
        return [None if v.status in UNDECIDED else float(v.status != VerdictStatus.NO_ANSWER)
                for v in verdicts(completions, reference, choices)]

    if format_weight > 0:
        return [correctness_reward, format_reward], [1.0, format_weight]
    return [correctness_reward], [1.0]
