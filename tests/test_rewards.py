"""curate.rewards: curate's verifiers as verl's custom reward function and as a TRL reward function. (verl loading
and calling it on an export: tests/test_export_verl.py; TRL's GRPOTrainer calling it: tests/test_export.py.)"""

import pytest

from curate.errors import ConfigError
from curate.rewards import compute_score, reward, trl_reward

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
    assert dereason.__name__ == "dereason_math"
    completions = [[{"role": "assistant", "content": "It is \\boxed{4}."}], "\\boxed{5}", "\\boxed{neon}"]
    assert dereason(completions, reference=["4", "4", "B"], choices=[None, None, OPTIONS], item_id=["a", "b", "c"]) == [
        1.0, 0.0, 1.0]
    assert dereason(["\\boxed{4}"], reference=["4"]) == [1.0]  # a dataset without a choices column
    with pytest.raises(ConfigError, match="unknown verifier 'maths'"):
        trl_reward("maths")
