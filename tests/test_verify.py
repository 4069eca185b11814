"""curate.verify: each verifier on real-shaped and adversarial responses, every status, time bounds, threads."""

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from curate.errors import ConfigError
from curate.verify import VERIFIERS, VerdictStatus, get_verifier
from curate.verify.extract import anchored_answers, last_boxed, numbers, read_number
from curate.verify.isolated import WorkerFailed, WorkerPool
from curate.verify.math import MathVerifier

CORRECT, WRONG, NO_ANSWER, ERROR, TIMEOUT = VerdictStatus

ARC = [{"label": "A", "text": "breaks easily when struck with a hammer"},
       {"label": "B", "text": "bubbles when acid is placed on it"},
       {"label": "C", "text": "is easily scratched by a fingernail"},
       {"label": "D", "text": "reflects light from its surface"}]
ARC_NUMBERED = [{"label": str(position), "text": choice["text"]} for position, choice in enumerate(ARC, start=1)]
TAL = [{"label": label, "text": f"$${digit}$$"} for label, digit in zip("ABCDE", (0, 1, 2, 5, 8), strict=True)]
GENOTYPES = [{"label": "C", "text": "Yy x yy"}, {"label": "A", "text": "YY x yy"}, {"label": "D", "text": "yy x yy"}]
CLOCK = [{"label": label, "text": text} for label, text in zip("ABCD", ("$$1$$ A.M.", "$$7$$ P.M.", "$$7$$ A.M.",
                                                                         "$$7$$ P.M."), strict=True)]
GSM8K_SOLUTION = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72"

# (verifier, response, reference, choices, status, extracted)
CASES = [
    ("gsm8k", "She sold 48/2 = 24 clips in May, 48+24 = 72 in all.\n#### 72", GSM8K_SOLUTION, None, CORRECT, "72"),
    ("gsm8k", "The total is $1,234.", "Add them.\n#### 1,234", None, CORRECT, "1,234"),
    ("gsm8k", "So she earned \\boxed{\\$1,234}", "#### 1234", None, CORRECT, "1,234"),
    ("gsm8k", "#### Step 1: May\n48/2 = 24\n#### Step 2: total\n24 + 48 = 72", GSM8K_SOLUTION, None, CORRECT, "72"),
    ("gsm8k", "#### 72\nLet me double-check with the 48 clips of April: yes.", GSM8K_SOLUTION, None, CORRECT, "72"),
    ("gsm8k", "That makes 18.00 dollars", "#### 18", None, CORRECT, "18.00"),
    ("gsm8k", "The balance is x = -5", "#### -5", None, CORRECT, "-5"),
    ("gsm8k", "10-5", "#### 5", None, CORRECT, "5"),
    # Repeating the question's numbers is not an answer; the last number read is the question's.
    ("gsm8k", "Natalia sold clips to 48 friends in April and half as many in May.", GSM8K_SOLUTION, None,
     WRONG, "48"),
    ("gsm8k", "72 would be a guess; it is 70", GSM8K_SOLUTION, None, WRONG, "70"),
    ("gsm8k", "It is 1,234,567", "#### 1,234,568", None, WRONG, "1,234,567"),  # exact: no tolerance
    ("gsm8k", "It is \\boxed{72 \\pm 1}", GSM8K_SOLUTION, None, WRONG, "72 \\pm 1"),
    ("gsm8k", "I do not know.", GSM8K_SOLUTION, None, NO_ANSWER, ""),
    ("gsm8k", "The answer is \\boxed{}", GSM8K_SOLUTION, None, NO_ANSWER, ""),
    ("gsm8k", "It is 72", "Natalia sold 48/2 = 24 clips in May.", None, ERROR, ""),
    ("numeric", "It is 0.3333333", "1/3", None, CORRECT, "0.3333333"),
    ("numeric", "It is \\boxed{\\frac{1}{3}}", "0.333333333", None, CORRECT, "1/3"),
    ("numeric", "About 25%", "25", None, CORRECT, "25"),
    ("numeric", "\\boxed{60^\\circ}", "60", None, CORRECT, "60"),
    ("numeric", "It is 1234567", "1234568", None, CORRECT, "1234567"),  # within 1e-6 relative
    ("numeric", "It is 0.334", "1/3", None, WRONG, "0.334"),
    ("numeric", "It is \\boxed{\\sqrt{2}}", "1.41421356", None, WRONG, "\\sqrt{2}"),
    ("numeric", "It is \\boxed{2^{10}}", "1024", None, WRONG, "2^{10}"),
    ("numeric", "It is one third.", "1/3", None, NO_ANSWER, ""),
    ("numeric", "It is 5", "x+1", None, ERROR, ""),
    ("choice", "Acid makes it fizz. The answer is (B).", "B", ARC, CORRECT, "B"),
    ("choice", "\\boxed{B}", "bubbles when acid is placed on it", ARC, CORRECT, "B"),
    ("choice", "\\boxed{\\text{(B)}}", "B", ARC, CORRECT, "B"),
    ("choice", "**Answer**: Bubbles when acid is placed on it.", "B", ARC, CORRECT, "B"),
    ("choice", "A mineral that fizzes. A good answer is below.\nB", "B", ARC, CORRECT, "B"),
    ("choice", "Answer: 2", "2", ARC_NUMBERED, CORRECT, "2"),
    ("choice", "The answer is:\n\n(D) $$5$$", "D", TAL, CORRECT, "D"),
    ("choice", "5A2A ends in 0, so A = 0: \\boxed{0}", "A", TAL, CORRECT, "A"),
    ("choice", "Since 5A2A must end in 0, A is 0. The answer is C? No: the answer is A.", "A", TAL, CORRECT, "A"),
    ("choice", "<think>The answer is B.</think>The answer is C.", "B", ARC, WRONG, "C"),
    ("choice", "\\boxed{7}", "C", TAL, WRONG, "7"),
    # Letters inside words, the article "A" and a number that merely starts with a label are no choice.
    ("choice", "A mineral that bubbles shows a chemical property.", "B", ARC, NO_ANSWER, ""),
    ("choice", "Since 5A2A is divisible by 20, the digit is zero.", "A", TAL, NO_ANSWER, ""),
    ("choice", "The answer is 24", "2", ARC_NUMBERED, NO_ANSWER, ""),
    ("choice", "\\boxed{B}", "B", [{"label": "A", "text": "B"}, {"label": "B", "text": "A"}], CORRECT, "B"),
    ("choice", "\\boxed{Yy x yy}", "C", GENOTYPES, CORRECT, "C"),  # an option's text: case first
    ("choice", "\\boxed{BUBBLES when acid is placed on it}", "B", ARC, CORRECT, "B"),  # then in any case
    ("choice", "\\boxed{yy X YY}", "C", GENOTYPES, WRONG, "yy X YY"),  # several match: no one option
    ("choice", "\\boxed{7 P.M.}", "D", CLOCK, WRONG, "7 P.M."),  # options that share a text cannot be told apart
    ("choice", "B", "E", ARC, ERROR, ""),
    ("choice", "B", "B", None, ERROR, ""),
    ("exact", "The capital is Paris.\n**Answer:** Paris", "paris", None, CORRECT, "** Paris"),
    ("exact", "\\boxed{\\text{Monday}}", "Monday", None, CORRECT, "\\text{Monday}"),
    ("exact", "  Monday. ", "monday", None, CORRECT, "Monday."),
    ("exact", "Tuesday", "Monday", None, WRONG, "Tuesday"),
    ("exact", "", "Monday", None, NO_ANSWER, ""),
    ("exact", "Monday", None, None, ERROR, ""),
    ("math", "So $x = \\boxed{\\frac{12}{13}}$.", "\\frac{12}{13}", None, CORRECT, "\\frac{12}{13}"),
    ("math", "\\boxed{\\dfrac{9}{4}}", "2.25", None, CORRECT, "\\dfrac{9}{4}"),
    ("math", "\\boxed{\\sqrt 2}", "2^{1/2}", None, CORRECT, "\\sqrt 2"),
    ("math", "\\boxed{(-\\infty, 3]}", "(-\\infty,3]", None, CORRECT, "(-\\infty, 3]"),
    ("math", "\\boxed{\\text{Monday}}", "\\text{Monday}", None, CORRECT, "\\text{Monday}"),
    ("math", "\\boxed{E}", "\\text{(E)}", None, CORRECT, "E"),
    ("math", "\\boxed{\\{2, 1\\}}", "\\{1,2\\}", None, CORRECT, "\\{2, 1\\}"),
    ("math", "so the total is -17 apples", "-17", None, CORRECT, "-17"),  # numeric reference: last number
    ("math", "\\boxed{5}", "Thus the sum is $\\boxed{5}$.", None, CORRECT, "5"),  # a full solution
    ("math", "<think>It is \\boxed{3}. No, wait.</think>It is \\boxed{4}", "4", None, CORRECT, "4"),
    ("math", "<think>It is \\boxed{4}. No, wait.</think>It is \\boxed{3}", "4", None, WRONG, "3"),
    ("math", "\\boxed{(-\\infty, 3)}", "(-\\infty,3]", None, WRONG, "(-\\infty, 3)"),
    ("math", "\\boxed{(8,1)}", "(1,8)", None, WRONG, "(8,1)"),
    ("math", "The answer is 12", "\\frac{8-7x}{6}", None, NO_ANSWER, ""),  # a number is read for numbers only
    ("math", "<think>It is \\boxed{4}", "4", None, NO_ANSWER, ""),
    ("math", "so \\boxed{\\frac{1}{", "\\frac{1}{2}", None, NO_ANSWER, ""),
    ("math", "\\boxed{4}", "  ", None, ERROR, ""),
]


@pytest.mark.parametrize(("name", "response", "reference", "choices", "status", "extracted"), CASES)
def test_verdict(name, response, reference, choices, status, extracted):
    verdict = get_verifier(name).verify(response, {"reference": reference, "choices": choices})
    assert (verdict.status, verdict.extracted) == (status, extracted), verdict.detail
    assert verdict.detail or status == CORRECT  # every verdict but a plain correct says why


def test_the_table_covers_every_status_of_every_verifier():
    """timeout comes from test_a_runaway_comparison_ends_as_timeout; only math can time out."""
    for name in VERIFIERS:
        covered = {status for verifier, *_, status, _ in CASES if verifier == name}
        assert covered == set(VerdictStatus) - {TIMEOUT}, name


@pytest.mark.parametrize("name", sorted(VERIFIERS))
@pytest.mark.parametrize("reference", [None, "", "   "])
def test_an_item_without_a_reference_is_an_error_never_wrong(name, reference):
    verdict = get_verifier(name).verify("\\boxed{A}", {"reference": reference, "choices": ARC})
    assert verdict.status == ERROR and "no reference" in verdict.detail


@pytest.mark.parametrize("name", sorted(VERIFIERS))
@pytest.mark.parametrize("response", ["", "\ud800 \\boxed{\ud800}", "}{ \\boxed{", "9" * 5000, "<think></think>"])
def test_odd_responses_give_a_verdict_never_an_exception(name, response):
    verdict = get_verifier(name).verify(response, {"reference": "1/2", "choices": ARC})
    assert verdict.status in (WRONG, NO_ANSWER, ERROR)


def test_a_runaway_comparison_ends_as_timeout_and_the_next_one_works():
    """10^{10^{10}} keeps sympy busy for minutes; math-verify's own timeout would say a silent False."""
    patient = get_verifier("math")
    assert patient.verify("\\boxed{1}", {"reference": "1"}).status == CORRECT  # a worker runs: its start is not timed
    verdict = MathVerifier(timeout_s=0.5).verify("\\boxed{10^{10^{10}}}", {"reference": "3"})
    assert (verdict.status, verdict.extracted) == (TIMEOUT, "10^{10^{10}}") and "0.5 s" in verdict.detail
    assert patient.verify("\\boxed{3}", {"reference": "3"}).status == CORRECT


def test_math_verifies_from_worker_threads():
    """math-verify's own timeouts raise outside the main thread; an HTTP backend verifies from its threads."""
    verifier = get_verifier("math")
    answers = ["\\frac{1}{2}", "0.5", "\\frac{2}{4}", "1/3"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        statuses = list(pool.map(lambda answer: verifier.verify(f"\\boxed{{{answer}}}", {"reference": "1/2"}).status,
                                 answers))
    assert statuses == [CORRECT, CORRECT, CORRECT, WRONG]


def test_a_worker_that_cannot_run_gives_an_error_verdict(monkeypatch):
    import curate.verify.math as math_module
    monkeypatch.setattr(math_module, "_WORKERS", WorkerPool("curate.verify.no_such_module", "check", 1))
    verdict = MathVerifier().verify("\\boxed{1}", {"reference": "1"})
    assert verdict.status == ERROR and "No module named 'curate.verify.no_such_module'" in verdict.detail


def test_worker_pool_reports_failures_and_ignores_what_the_function_prints():
    pool = WorkerPool("builtins", "print", 1)
    assert pool.call(["printed to the worker's stdout, which is not the reply channel"], 5) is None
    with pytest.raises(WorkerFailed, match="JSONDecodeError"):
        WorkerPool("json", "loads", 1).call(["{not json"], 5)
    with pytest.raises(WorkerFailed, match="exited with status 3"):
        WorkerPool("os", "_exit", 1).call([3], 5)
    pool.close()


def test_get_verifier_names_the_choices():
    with pytest.raises(ConfigError, match="verifier 'maths': choose one of math, gsm8k, numeric, choice, exact, model$"):
        get_verifier("maths")


def test_get_verifier_takes_settings_and_refuses_bad_ones():
    assert get_verifier("numeric", rel_tol=0.01).verify("3.01", {"reference": "3"}).status == CORRECT
    assert get_verifier("numeric").verify("3.01", {"reference": "3"}).status == WRONG
    refusals = [(("numeric",), {"tol": 0.1}, "'numeric' has no setting tol: its settings are rel_tol, abs_tol"),
                (("exact",), {"case": False}, "'exact' has no setting case: it has no settings"),
                (("numeric",), {"rel_tol": "0.1"}, "'numeric': rel_tol must be a number >= 0, not '0.1'"),
                (("gsm8k",), {"abs_tol": -1}, "'gsm8k': abs_tol must be a number >= 0, not -1"),
                (("math",), {"timeout_s": 0}, "'math': timeout_s must be a number > 0, not 0"),
                (("math",), {"timeout_s": float("inf")}, "'math': timeout_s must be a number > 0, not inf")]
    for args, settings, message in refusals:
        with pytest.raises(ConfigError, match=re.escape(message)):
            get_verifier(*args, **settings)


@pytest.mark.parametrize(("text", "boxed"), [
    ("no box", None),
    ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("$\\fbox{ x }$", "x"),
    ("\\boxed{3} and at last \\boxed{\\frac{1}{", ""),  # the last box decides, even when never closed
])
def test_last_boxed(text, boxed):
    assert last_boxed(text) == boxed


@pytest.mark.parametrize(("text", "read"), [
    ("H2O costs 3,4 or 1,234 (x2), -\\frac{3}{4}, 10-5, 1.5e3 and .5", ["3", "4", "1,234", "-3/4", "10", "5",
                                                                         "1.5e3", ".5"]),
    ("1{,}000 or 1\\,000 and 2/0", ["1000", "1000"]),
    ("1e999999999 or " + "9" * 5000 + " or 7", ["1", "7"]),  # unreadable numbers are skipped, fast
])
def test_numbers(text, read):
    assert [number.text for number in numbers(text)] == read


@pytest.mark.parametrize(("text", "value"), [
    ("72", 72), ("\\$1,234.50", 1234.5), ("25\\%", 25), ("x = -5", -5), ("18 \\text{ dollars}", 18),
    ("x+1", None), ("\\sqrt{2}", None), ("2\\pi", None), ("2^{10}", None), ("3, 4", None), ("5 cm", None),
])
def test_read_number(text, value):
    number = read_number(text)
    assert (number.value if number else None) == value


def test_anchored_answers():
    text = ("To answer this, add.\nThe answer is (B).\n**Answer**: C? No, the answer is A\n"
            "Final answer:\n\n  D\nanswered: E")
    assert anchored_answers(text) == ["(B).", "C? No, the", "A", "D"]
