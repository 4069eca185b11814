"""Rewards for RL trainers, from curate's verifiers: the one definition of "is this answer right" (curate.verify).

Which verifier: an item with options is checked by `choice`; any other by the verifier named (default `math`: the
last `\\boxed{}` against the reference by math-verify, so `\\frac12` = `0.5`), with its settings. `model` (a judge
model decides equivalence, curate.verify.model) takes its judge's run settings: `verify_model`, and optionally
`verify_backend`, `verify_base_url`, `verify_template`, `verify_max_tokens` and any other run setting the judge's
backend reads (`device`, `dtype`, `batch_size`, …); a batch's answers go to the judge at once.

verl: `compute_score` is a custom reward function over a `curate export --format verl` row (its
`reward_model.ground_truth` and `extra_info.choices`), loaded by verl itself:
    python -m verl.trainer.main_ppo ... reward.custom_reward_function.path=pkg://curate.rewards \\
        reward.custom_reward_function.name=compute_score
It ignores `data_source`, so it scores an export with any `--data-source`. Another verifier for the items without
options: `+reward.custom_reward_function.reward_kwargs.verifier=gsm8k`. verl needs a number for every response, so
1.0 is a `correct` verdict and 0.0 every other one, a verifier's error or timeout included, as verl's own scorers do.

TRL: `trl_rewards(verifier, settings, format_weight)` gives `GRPOTrainer` reward functions
`*_reward(completions, **kwargs)` over a dataset's columns (`reference`, and `choices` when there are options, as
`curate export --format trl` and dereason-train write them), with their weights; `trl_reward(verifier)` is the
correctness one alone. A judge model sees the prompt TRL passes (`prompts`: its messages' text) as the problem:
    correctness_reward   1.0 correct; 0.0 wrong or no answer; None when the verifier could not decide (error: no
                         reference, or one it cannot read; timeout): TRL leaves a None out of the group's baseline,
                         so a verifier's failure is never scored as the model's mistake.
    format_reward        1.0 when the verifier found a final answer in its format (correct or wrong); 0.0 when it
                         found none; None when it could not decide.
Both share one verdict per (completion, item), so the format reward costs no second verification. Each batch's
verdicts are logged as metrics (`verdicts/<status>`: the share of completions with that status) through the
`log_metric` TRL hands reward functions: TRL logs the mean reward itself, but not why a reward was 0.
    GRPOTrainer(..., reward_funcs=trl_reward("math"), train_dataset=load_dataset("parquet", data_files=...))
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from curate.verify import MODEL_VERIFIER, Verdict, VerdictStatus, Verifier, get_verifier, verify_all

RewardFunction = Callable[..., list[float | None]]
UNDECIDED = (VerdictStatus.ERROR, VerdictStatus.TIMEOUT)
_REMEMBERED_VERDICTS = 4096  # a GRPO step's completions, for the format reward to reuse the correctness one's
_CHOICE = get_verifier("choice")


def named_verifier(name: str, settings: Mapping[str, Any] | None = None) -> Verifier:
    """The verifier `name` with its settings; for `model`, the settings are its judge's (curate.config's
    JudgeVerifierConfig keys: verify_model, …) and its backend's (BackendConfig keys: device, dtype, base_url, …),
    with `seed` and `template_dir` as a run's."""
    if name != MODEL_VERIFIER:
        return get_verifier(name, **dict(settings or {}))
    from curate.config import BackendConfig, JudgeVerifierConfig
    from curate.settings import from_flat, settings_of
    from curate.verify.model import judge_verifier

    given = dict(settings or {})
    seed, template_dir = given.pop("seed", 0), given.pop("template_dir", None)
    judge_keys = settings_of(JudgeVerifierConfig)
    judge = from_flat(JudgeVerifierConfig, {k: v for k, v in given.items() if k in judge_keys}, "verifier settings")
    run = from_flat(BackendConfig, {k: v for k, v in given.items() if k not in judge_keys}, "verifier settings")
    # The judge's backend loads at its first answer and lives as long as the process (a training run).
    return judge_verifier(judge, run, seed, template_dir, ExitStack())


def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """A completion's text: TRL passes a string for a plain prompt, the assistant messages for a conversational one."""
    if isinstance(completion, str):
        return completion
    return "".join(str(message.get("content") or "") for message in completion)


def _options(choices: Sequence[Mapping[str, str]] | None) -> list[dict[str, str]] | None:
    return [{"label": choice["label"], "text": choice["text"]} for choice in choices] if choices else None


def verdicts(verifier: Verifier, responses: Sequence[str], references: Sequence[str | None],
             choices: Sequence[Sequence[Mapping[str, str]] | None], questions: Sequence[str] | None = None
             ) -> list[Verdict]:
    """A verdict per response: `choice` for the items with options, `verifier` (in one batch) for the others.
    `questions` reach a judge model's prompt (a rule verifier does not read them)."""
    questions = questions if questions is not None else [""] * len(responses)
    items = [{"question": question, "reference": reference, "choices": _options(options)}
             for question, reference, options in zip(questions, references, choices, strict=True)]
    found: list[Verdict | None] = [_CHOICE.verify(response, item) if item["choices"] else None
                                   for response, item in zip(responses, items, strict=True)]
    rest = [i for i, verdict in enumerate(found) if verdict is None]
    for i, verdict in zip(rest, verify_all(verifier, [responses[i] for i in rest], [items[i] for i in rest]),
                          strict=True):
        found[i] = verdict
    return found  # type: ignore[return-value]  # every position is filled


def reward(response: str, reference: str | None, choices: Sequence[Mapping[str, str]] | None,
           verifier: str = "math") -> float:
    """verl's kind of reward: 1.0 when the response's final answer is right for the item, else 0.0."""
    (verdict,) = verdicts(named_verifier(verifier), [response], [reference], [choices])
    return float(verdict.status == VerdictStatus.CORRECT)


def compute_score(data_source: str, solution_str: str, ground_truth: str | None,
                  extra_info: Mapping[str, Any] | None = None, verifier: str = "math", **kwargs: Any) -> float:
    """verl's custom reward function signature; `kwargs` takes what verl adds (its reward router, sandbox)."""
    return reward(solution_str, ground_truth, (extra_info or {}).get("choices"), verifier)


def trl_rewards(verifier: str = "math", settings: Mapping[str, Any] | None = None,
                format_weight: float = 0.0) -> tuple[list[RewardFunction], list[float]]:
    """The TRL reward functions and their weights: correctness (weight 1), and format when `format_weight` > 0."""
    checker = named_verifier(verifier, settings)
    remembered: OrderedDict[tuple, Verdict] = OrderedDict()

    def batch_verdicts(completions: Sequence[Any], reference: Sequence[str | None], choices: Sequence[Any] | None,
                       prompts: Sequence[Any] | None) -> list[Verdict]:
        options = list(choices) if choices is not None else [None] * len(completions)
        questions = [completion_text(p) for p in prompts] if prompts is not None else [""] * len(completions)
        keys = [(completion_text(c), r, repr(o), q)
                for c, r, o, q in zip(completions, reference, options, questions, strict=True)]
        new = [i for i, key in enumerate(keys) if key not in remembered]
        for i, verdict in zip(new, verdicts(checker, [keys[i][0] for i in new], [reference[i] for i in new],
                                            [options[i] for i in new], [questions[i] for i in new]), strict=True):
            remembered[keys[i]] = verdict
        found = [remembered[key] for key in keys]
        while len(remembered) > _REMEMBERED_VERDICTS:
            remembered.popitem(last=False)
        return found

    def correctness_reward(completions: Sequence[Any], reference: Sequence[str | None],
                           choices: Sequence[Any] | None = None, prompts: Sequence[Any] | None = None,
                           log_metric: Callable[[str, float], None] | None = None, **kwargs: Any) -> list[float | None]:
        found = batch_verdicts(completions, reference, choices, prompts)
        if log_metric is not None:
            counts = Counter(verdict.status for verdict in found)
            for status in VerdictStatus:
                log_metric(f"verdicts/{status.value}", counts[status] / len(found))
        return [None if v.status in UNDECIDED else float(v.status == VerdictStatus.CORRECT) for v in found]

    def format_reward(completions: Sequence[Any], reference: Sequence[str | None],
                      choices: Sequence[Any] | None = None, prompts: Sequence[Any] | None = None,
                      **kwargs: Any) -> list[float | None]:
        return [None if v.status in UNDECIDED else float(v.status != VerdictStatus.NO_ANSWER)
                for v in batch_verdicts(completions, reference, choices, prompts)]

    if format_weight > 0:
        return [correctness_reward, format_reward], [1.0, format_weight]
    return [correctness_reward], [1.0]


def trl_reward(verifier: str = "math", **settings: Any) -> RewardFunction:
    """The correctness reward alone (see trl_rewards)."""
    return trl_rewards(verifier, settings)[0][0]
