"""A pairwise judge's answer → (status, choice, P(A harder)). Strict, declared by the template, never guessed.

A pairwise template (`kind: pairwise`, curate.templates) shows two items, A then B, and asks which is harder; the
parser its header names reads the answer. The statuses are curate.parse's (ok, unparseable, truncated, error), and
only `ok` carries a choice: "A" (the item shown first) or "B". Parsers see only the completion, after a closed
`</think>` block, as curate.parse's do.

Logprobs: where the backend returned top logprobs, those at the position where the letter stands (`locate`: the
answer's first non-space character, found as curate.parse.score_alternatives finds a score digit) give P(A) and
P(B). Every token whose text is the letter, with or without spaces around it, counts towards it: a prefill that
ends in "Problem" is continued with " A", and the top logprobs may hold both " A" and "A", which are summed, not
one kept. `p_a` = P(A) / (P(A) + P(B)) and `mass` = P(A) + P(B), the probability the model gave the two letters at
all. (A prefill that ends in a space moves the next token off the model's usual split: end it on a word.)

The choice, as curate.parse decides a score: greedy with mass ≥ MIN_CHOICE_MASS, the likelier letter ("logprobs";
p_a = 0.5 exactly goes to A); with the answer constrained to the letters, the likelier one whatever the mass
("constrained"); sampled, the letter drawn, even when max_tokens cut the answer right after it ("decoded");
otherwise the decoded answer ("decoded"). p_a and mass are kept whenever the logprobs held a letter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from curate.parse import MIN_SCORE_MASS, Status, answer_part

CHOICES = ("A", "B")
MIN_CHOICE_MASS = MIN_SCORE_MASS  # below it the two letters' distribution says little: the decoded text decides
CHOICE_METHODS = ("logprobs", "constrained", "decoded")


class ParsedChoice(NamedTuple):
    status: Status
    choice: str | None
    detail: str = ""
    method: str = ""  # for ok: one of CHOICE_METHODS
    p_a: float | None = None
    mass: float | None = None


@dataclass(frozen=True)
class LetterChoiceParser:
    """The whole answer is the letter A or B (surrounding whitespace allowed)."""

    name: str = "choice_ab"
    version: int = 1
    reads_logprobs: bool = True

    def parse_answer(self, answer: str) -> ParsedChoice:
        stripped = answer.strip()
        if stripped in CHOICES:
            return ParsedChoice(Status.OK, stripped)
        return ParsedChoice(Status.UNPARSEABLE, None, f"{stripped[:40]!r} is not the letter A or B" if stripped
                            else "empty answer")

    def locate(self, answer: str) -> int | None:
        stripped = answer.lstrip()
        return len(answer) - len(stripped) if stripped else None


CHOICE_PARSERS: dict[str, LetterChoiceParser] = {p.name: p for p in (LetterChoiceParser(),)}


def choice_probabilities(alternatives: Sequence[tuple[str, float]]) -> tuple[float, float] | None:
    """(p_a, mass) from one position's top logprobs; None when neither letter is among them."""
    found = dict.fromkeys(CHOICES, 0.0)
    for token, logprob in alternatives:
        if (letter := token.strip()) in found:
            found[letter] += math.exp(logprob)
    mass = sum(found.values())
    return (found["A"] / mass, mass) if mass > 0 else None


def parse_choice(parser: LetterChoiceParser, text: str, finish_reason: str, error: str = "",
                 alternatives: Sequence[tuple[str, float]] = (), *, sampled: bool = False,
                 constrained: bool = False) -> ParsedChoice:
    """Status and choice of one completion; `alternatives`: the top logprobs where the letter stands;
    `sampled`: temperature > 0; `constrained`: the first token was restricted to the letters."""
    if error:
        return ParsedChoice(Status.ERROR, None, error)
    p_a, mass = choice_probabilities(alternatives) or (None, None)
    if p_a is not None and not sampled and (constrained or mass >= MIN_CHOICE_MASS):
        return ParsedChoice(Status.OK, "A" if p_a >= 0.5 else "B", method="constrained" if constrained else "logprobs",
                            p_a=p_a, mass=mass)
    answer = answer_part(text)
    if (sampled or constrained) and answer is not None and (drawn := parser.parse_answer(answer)).status == Status.OK:
        return drawn._replace(method="constrained" if constrained else "decoded", p_a=p_a, mass=mass)
    if finish_reason == "length":
        parsed = ParsedChoice(Status.TRUNCATED, None, "hit max_tokens before a final answer")
    elif answer is None:
        parsed = ParsedChoice(Status.UNPARSEABLE, None, "a <think> block was opened and never closed")
    else:
        parsed = parser.parse_answer(answer)
    if parsed.status == Status.OK:
        return parsed._replace(method="decoded", p_a=p_a, mass=mass)
    if constrained:
        parsed = parsed._replace(detail=f"{parsed.detail}; the answer was constrained to A or B, but the backend "
                                        "returned another")
    elif alternatives:
        parsed = parsed._replace(detail=f"{parsed.detail}; A and B held {mass or 0:.0%} of the probability where the "
                                        "letter goes")
    return parsed._replace(p_a=p_a, mass=mass)
