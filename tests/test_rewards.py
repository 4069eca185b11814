"""curate.rewards: curate's verifiers as verl's custom reward function and as TRL reward functions, fed the reference
(and options) through the dataset's columns as TRL passes them. (verl loading and calling it on an export:
tests/test_export_verl.py; TRL's GRPOTrainer calling it: tests/test_export.py and the train tests.)"""

import pytest

from curate.errors import ConfigError
from curate.rewards import completion_text, compute_score, reward, trl_reward, trl_rewards

OPTIONS = [{"label": "A", "text": "oxygen"}, {"label": "B", "text": "neon"}]


@pytest.mark.parametrize("response, reference, choices, expected", [
    ("so \\boxed{0.5}", "\\frac{1}{2}", None, 1.0),  # math-verify: equivalent, not equal
    ("so \\boxed{0.6}", "\\frac{1}{2}", None, 0.0),
    ("<think>\\boxed{3}</think> The answer is \\boxed{2}.", "2", None, 1.0),  # only the answer after thinking counts
    ("<think>\\boxed{2}", "2", None, 0.0),  # still thinking: no answer
    ("\\boxed{2}", None, None, 0.0),  # no reference: the verifier's error is no reward
    ("\\boxed{B}", "B", OPTIONS, 1.0), ("\\boxed{neon}", "B", OPTIONS, 1.0), ("\\boxed{A}", "neon", OPTIONS, 0.0),
])
def test_reward_is_one_only_for_a_correct_verdict(response, reference, choices, expected):
    assert reward(response, reference, choices) == expected


def test_compute_score_takes_verls_call():
    """verl calls it by keyword, with extra_info from the row (choices there) and arguments of its own."""
    call = {"data_source": "lighteval/MATH", "reward_router_address": None}
    assert compute_score(solution_str="\\boxed{neon}", ground_truth="B", extra_info={"choices": OPTIONS, "index": 3},
                         **call) == 1.0
    assert compute_score(solution_str="\\boxed{12}", ground_truth="12", extra_info=None, **call) == 1.0
    checked = "#### 12\nCheck: 12 + 1 = 13"  # math reads the last number, gsm8k the #### line
    assert compute_score(solution_str=checked, ground_truth="12", extra_info={"choices": None}, **call) == 0.0
    assert compute_score(solution_str=checked, ground_truth="12", verifier="gsm8k", **call) == 1.0  # reward_kwargs


def test_trl_reward_reads_conversational_and_plain_completions():
    dereason = trl_reward("math")
    assert dereason.__name__ == "correctness_reward"
    completions = [[{"role": "assistant", "content": "It is \\boxed{4}."}], "\\boxed{5}", "\\boxed{neon}"]
    assert dereason(completions, reference=["4", "4", "B"], choices=[None, None, OPTIONS], item_id=["a", "b", "c"]) == [
        1.0, 0.0, 1.0]
    assert dereason(["\\boxed{4}"], reference=["4"]) == [1.0]  # a dataset without a choices column
    with pytest.raises(ConfigError, match="unknown verifier 'maths'"):
        trl_reward("maths")


CHOICES = [{"label": "A", "text": "oxygen"}, {"label": "B", "text": "neon"}]


def test_correct_wrong_and_no_answer_completions_get_one_zero_zero():
    (correctness,), weights = trl_rewards("numeric")
    got = correctness(["so \\boxed{7}", "so \\boxed{8}", "I cannot say."], reference=["7", "7", "7"])
    assert got == [1.0, 0.0, 0.0] and all(type(r) is float for r in got) and weights == [1.0]


def test_an_item_the_verifier_cannot_decide_gets_no_reward_not_zero():
    """No reference (or one the verifier cannot read) is the machinery's failure: None, which TRL leaves out of the
    group's baseline, never the model's 0."""
    (correctness,), _ = trl_rewards("numeric")
    assert correctness(["\\boxed{7}", "\\boxed{7}"], reference=[None, "seven"]) == [None, None]


def test_conversational_completions_and_choices_reach_the_verifier():
    """TRL passes a conversational prompt's completions as assistant messages, and the `choices` column as lists
    of {label, text}; the choice verifier reads the option's text."""
    (correctness,), _ = trl_rewards("choice")
    completions = [[{"role": "assistant", "content": "The noble gas is \\boxed{B}"}],
                   [{"role": "assistant", "content": "The answer is oxygen"}],
                   [{"role": "assistant", "content": "no idea"}]]
    assert correctness(completions, reference=["B", "B", "B"], choices=[CHOICES] * 3) == [1.0, 0.0, 0.0]
    assert completion_text(completions[0]) == "The noble gas is \\boxed{B}"


def test_format_reward_and_the_verdict_metrics():
    functions, weights = trl_rewards("gsm8k", format_weight=0.25)
    correctness, form = functions
    assert [f.__name__ for f in functions] == ["correctness_reward", "format_reward"] and weights == [1.0, 0.25]
    logged = {}
    completions, reference = ["#### 12", "#### 13", "twelve", "#### 12"], ["12", "12", "12", None]
    assert correctness(completions, reference=reference, log_metric=logged.__setitem__) == [1.0, 0.0, 0.0, None]
    assert form(completions, reference=reference) == [1.0, 1.0, 0.0, None]
    assert logged == {"verdicts/correct": 0.25, "verdicts/wrong": 0.25, "verdicts/no_answer": 0.25,
                      "verdicts/error": 0.25, "verdicts/timeout": 0.0}


def test_the_verifier_is_chosen_by_name_with_its_settings():
    (loose,), _ = trl_rewards("numeric", {"rel_tol": 0.1})
    (strict,), _ = trl_rewards("numeric")
    assert loose(["\\boxed{10.5}"], reference=["10"]) == [1.0] and strict(["\\boxed{10.5}"], reference=["10"]) == [0.0]
    with pytest.raises(ConfigError, match="unknown verifier 'llm'"):
        trl_rewards("llm")
    with pytest.raises(ConfigError, match="has no setting timeout_s"):
        trl_rewards("numeric", {"timeout_s": 3})


def test_a_judge_model_as_the_reward_is_asked_once_per_answer_and_never_about_options():
    from curate.testing import FakeOpenAIServer

    with FakeOpenAIServer(answer_format="verdict") as judge:
        (correctness, form), _ = trl_rewards("model", {"verify_model": "judge", "backend": "openai",
                                                       "base_url": judge.base_url}, format_weight=0.5)
        completions = ["so \\boxed{3}", "so \\boxed{4}", "\\boxed{3.0}", "\\boxed{neon}"]
        reference, choices = ["3.0", "3.0", "3.0", "B"], [None, None, None, CHOICES]
        prompts = [[{"role": "user", "content": f"What is {n} - {n} + 3?"}] for n in range(4)]
        assert correctness(completions, reference=reference, choices=choices, prompts=prompts) == [1.0, 0.0, 1.0, 1.0]
        assert form(completions, reference=reference, choices=choices, prompts=prompts) == [1.0, 1.0, 1.0, 1.0]
        asked = [body["messages"][-1]["content"] for body in judge.bodies]
    # 3.0 equals its reference and neon is option B by rule: only "3" and "4" reach the judge, once each.
    assert sorted(asked) == sorted(f"Problem:\nWhat is {n} - {n} + 3?\n\nReference answer: 3.0\nCandidate answer: {a}"
                                   "\n\nIs the candidate answer equivalent to the reference answer? Reply yes or no."
                                   for n, a in ((0, 3), (1, 4)))
