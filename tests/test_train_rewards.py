"""train.rewards: TRL-style reward functions around curate's verifiers, fed the reference (and options) through
the dataset's columns as TRL passes them."""

import pytest

from curate.errors import ConfigError
from train.rewards import completion_text, rewards

CHOICES = [{"label": "A", "text": "oxygen"}, {"label": "B", "text": "neon"}]


def test_correct_wrong_and_no_answer_completions_get_one_zero_zero():
    (correctness,), weights = rewards("numeric")
    got = correctness(["so \\boxed{7}", "so \\boxed{8}", "I cannot say."], reference=["7", "7", "7"])
    assert got == [1.0, 0.0, 0.0] and all(type(r) is float for r in got) and weights == [1.0]


def test_an_item_the_verifier_cannot_decide_gets_no_reward_not_zero():
    """No reference (or one the verifier cannot read) is the machinery's failure: None, which TRL leaves out of the
    group's baseline, never the model's 0."""
    (correctness,), _ = rewards("numeric")
    assert correctness(["\\boxed{7}", "\\boxed{7}"], reference=[None, "seven"]) == [None, None]


def test_conversational_completions_and_choices_reach_the_verifier():
    """TRL passes a conversational prompt's completions as assistant messages, and the `choices` column as lists
    of {label, text}; the choice verifier reads the option's text."""
    (correctness,), _ = rewards("choice")
    completions = [[{"role": "assistant", "content": "The noble gas is \\boxed{B}"}],
                   [{"role": "assistant", "content": "The answer is oxygen"}],
                   [{"role": "assistant", "content": "no idea"}]]
    assert correctness(completions, reference=["B", "B", "B"], choices=[CHOICES] * 3) == [1.0, 0.0, 0.0]
    assert completion_text(completions[0]) == "The noble gas is \\boxed{B}"


def test_format_reward_and_the_verdict_metrics():
    functions, weights = rewards("gsm8k", format_weight=0.25)
    correctness, form = functions
    assert [f.__name__ for f in functions] == ["correctness_reward", "format_reward"] and weights == [1.0, 0.25]
    logged = {}
    completions, reference = ["#### 12", "#### 13", "twelve", "#### 12"], ["12", "12", "12", None]
    assert correctness(completions, reference=reference, log_metric=logged.__setitem__) == [1.0, 0.0, 0.0, None]
    assert form(completions, reference=reference) == [1.0, 1.0, 0.0, None]
    assert logged == {"verdicts/correct": 0.25, "verdicts/wrong": 0.25, "verdicts/no_answer": 0.25,
                      "verdicts/error": 0.25, "verdicts/timeout": 0.0}


def test_the_verifier_is_chosen_by_name_with_its_settings():
    (loose,), _ = rewards("numeric", {"rel_tol": 0.1})
    (strict,), _ = rewards("numeric")
    assert loose(["\\boxed{10.5}"], reference=["10"]) == [1.0] and strict(["\\boxed{10.5}"], reference=["10"]) == [0.0]
    with pytest.raises(ConfigError, match="unknown verifier 'llm'"):
        rewards("llm")
    with pytest.raises(ConfigError, match="has no setting timeout_s"):
        rewards("numeric", {"timeout_s": 3})
