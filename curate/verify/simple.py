"""Verifiers that need no computer algebra: numbers, GSM8K, multiple choice, and normalised strings.

Where each one finds the response's final answer (after any closed `<think>` block; see curate.verify.extract
for what a number, a box and an "answer:" are):

numeric  the last `#### N` line (N alone on it, as `read_number` reads one: a markdown heading such as
         `#### Step 2: …` is not one), else the last `\\boxed{}` (which must be one number), else the last
         number in the text. Correct when |answer − reference| ≤ max(rel_tol·|reference|, abs_tol), computed
         exactly (defaults 1e-6 and 1e-9). The reference must be one number (`3/4`, `\\frac{3}{4}`, `25%` = 25).
gsm8k    the same answer, compared exactly (GSM8K answers are whole numbers or short decimals: a tolerance
         would let 1,234,567 pass for 1,234,568). The reference is the number after its last `####` (a GSM8K
         solution) or a bare number.
choice   the item's options decide: the answer is the label in the last `\\boxed{}` (which must name an
         option: a label, "(B)", "B. text", or an option's text), else the label right after the last
         "answer is" / "answer:" that names one, else a last line that is a label or an option's text. Labels
         in running text are matched as whole tokens and case-sensitively, so the article "a" or the "A" inside
         "5A2A" is never an answer. An option's text matches case-sensitively first (genotypes "YY x yy" and
         "Yy x yy" are different options), then in any case; a text that several options share names none.
         The reference may be a label or an option's text.
exact    the last `\\boxed{}`, else what follows the last "answer is" / "answer:", else the whole answer;
         compared with the reference after `normalise` (case, spacing, `$`, `\\text{}`, edge punctuation).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from curate.verify.base import (
    EMPTY_BOX,
    Verdict,
    VerdictStatus,
    reference_and_answer,
    require_number,
)
from curate.verify.extract import (
    Number,
    anchored_answers,
    last_boxed,
    normalise,
    numbers,
    read_number,
)

_HASHES_LINE = re.compile(r"####(?P<rest>[^\n]*)")


@dataclass(frozen=True)
class NumericVerifier:
    name: str = "numeric"
    version: int = 1
    rel_tol: float = 1e-6
    abs_tol: float = 1e-9

    def __post_init__(self):
        require_number(self, "rel_tol", positive=False)
        require_number(self, "abs_tol", positive=False)

    def verify(self, response: str, item: Mapping[str, Any]) -> Verdict:
        read = reference_and_answer(response, item, self._reference)
        if isinstance(read, Verdict):
            return read
        reference, answer = read
        found = final_number(answer)
        if isinstance(found, Verdict):
            return found
        bound = max(Fraction(str(self.rel_tol)) * abs(reference.value), Fraction(str(self.abs_tol)))
        if abs(found.value - reference.value) <= bound:
            return Verdict(VerdictStatus.CORRECT, found.text)
        return Verdict(VerdictStatus.WRONG, found.text, f"read {found.value}, the reference is {reference.value}")

    def _reference(self, text: str) -> Number | Verdict:
        return self.reference_number(text) or Verdict(
            VerdictStatus.ERROR, "", f"{self.name}: cannot read one number in the reference {text[-60:]!r}")

    def reference_number(self, reference: str) -> Number | None:
        return read_number(reference)


@dataclass(frozen=True)
class Gsm8kVerifier(NumericVerifier):
    name: str = "gsm8k"
    rel_tol: float = 0.0
    abs_tol: float = 0.0

    def reference_number(self, reference: str) -> Number | None:
        return read_number(reference.rsplit("####", 1)[-1])


def final_number(answer: str) -> Number | Verdict:
    """The answer's final number (the numeric ladder in the module docstring), or the verdict saying why not."""
    for line in reversed(_HASHES_LINE.findall(answer)):
        number = read_number(line)
        if number is not None:
            return number
    boxed = last_boxed(answer)
    if boxed == "":
        return EMPTY_BOX
    if boxed is not None:
        number = read_number(boxed)
        return number or Verdict(VerdictStatus.WRONG, boxed, "the boxed answer is not one number")
    found = numbers(answer)
    return found[-1] if found else Verdict(VerdictStatus.NO_ANSWER, "", "no number in the answer")


@dataclass(frozen=True)
class ChoiceVerifier:
    name: str = "choice"
    version: int = 1

    def verify(self, response: str, item: Mapping[str, Any]) -> Verdict:
        choices = item.get("choices")
        if not choices:
            return Verdict(VerdictStatus.ERROR, "", "the item has no options to choose from")

        def expected_label(reference: str) -> str | Verdict:
            return option_named(reference, choices) or Verdict(
                VerdictStatus.ERROR, "", f"the reference {reference[:60]!r} is neither a label ({_labels(choices)}) "
                                         "nor an option's text")

        read = reference_and_answer(response, item, expected_label)
        if isinstance(read, Verdict):
            return read
        expected, answer = read
        chosen = chosen_option(answer, choices)
        if isinstance(chosen, Verdict):
            return chosen
        if chosen == expected:
            return Verdict(VerdictStatus.CORRECT, chosen)
        return Verdict(VerdictStatus.WRONG, chosen, f"chose {chosen}, the reference is {expected}")


def option_named(text: str, choices: Sequence[Mapping[str, str]]) -> str | None:
    """The label of the option that text names as a whole: its label ("B", "(B)", "b."), its text, or both
    ("B. Paris"); None if it names none, or several options that share that text."""
    wanted = normalise(text, fold_case=False)
    for choice in choices:  # labels first: "B" is option B even where another option's text is "B"
        if wanted.casefold() == normalise(choice["label"]):
            return choice["label"]
    for fold_case in (False, True):  # case first: genotypes "YY x yy" and "Yy x yy" are different options
        named = [choice["label"] for choice in choices if _names(wanted, choice, fold_case)]
        if named:
            return named[0] if len(named) == 1 else None
    return None


def _names(wanted: str, choice: Mapping[str, str], fold_case: bool) -> bool:
    wanted = wanted.casefold() if fold_case else wanted
    option = normalise(choice["text"], fold_case)
    prefixed = re.match(re.escape(choice["label"]) + r"[\s.):]+(.*)", wanted, re.IGNORECASE)
    return wanted == option or (prefixed is not None and normalise(prefixed[1], fold_case) == option)


def chosen_option(answer: str, choices: Sequence[Mapping[str, str]]) -> str | Verdict:
    """The label the answer settles on (the choice ladder in the module docstring), or the verdict why none."""
    labels = sorted((choice["label"] for choice in choices), key=len, reverse=True)
    leading_label = re.compile(r"[\s*(\[:]*(?i:(?:option|choice)\s*)?\(?(" + "|".join(map(re.escape, labels)) +
                               r")(?![^\W_])")
    boxed = last_boxed(answer)
    if boxed == "":
        return EMPTY_BOX
    if boxed is not None:
        match = leading_label.match(boxed)
        label = option_named(boxed, choices) or (match[1] if match else None)
        return label or Verdict(VerdictStatus.WRONG, boxed, "the boxed answer names no one option")
    for statement in reversed(anchored_answers(answer)):
        match = leading_label.match(statement)
        label = (match[1] if match else None) or option_named(statement, choices)
        if label is not None:
            return label
    last_line = answer.strip().rsplit("\n", 1)[-1]
    label = option_named(last_line, choices) if last_line else None
    return label or Verdict(VerdictStatus.NO_ANSWER, "", f"no final choice among {_labels(choices)}")


def _labels(choices: Sequence[Mapping[str, str]]) -> str:
    return ", ".join(choice["label"] for choice in choices)


@dataclass(frozen=True)
class ExactVerifier:
    name: str = "exact"
    version: int = 1

    def verify(self, response: str, item: Mapping[str, Any]) -> Verdict:
        read = reference_and_answer(response, item, str)
        if isinstance(read, Verdict):
            return read
        reference, answer = read
        boxed = last_boxed(answer)
        anchored = anchored_answers(answer)
        final = boxed if boxed is not None else anchored[-1] if anchored else answer.strip()
        read, wanted = normalise(final), normalise(reference)
        if not read:
            return EMPTY_BOX if boxed is not None else Verdict(VerdictStatus.NO_ANSWER, "", "the answer is empty")
        if read == wanted:
            return Verdict(VerdictStatus.CORRECT, final)
        return Verdict(VerdictStatus.WRONG, final, f"{read[:60]!r} is not {wanted[:60]!r}")
