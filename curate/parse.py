"""Judge output → (status, score). Strict, declared by the template, never guessed.

Every judgment ends as exactly one `Status`:
    ok           the answer holds a score in 1..5 in the template's declared format
    unparseable  the model finished, but its answer does not follow the format (detail says how)
    truncated    the model hit max_tokens: whatever it wrote is not a final answer, whatever it holds
    error        the backend failed for this request (detail holds the message)
No score is ever invented: only `ok` carries one.

Parsers only ever see the model's completion, never the prompt, and read only the answer after a
closed `</think>` block, so rubric text echoed by the model or quoted while thinking cannot match.

Logprob scoring: a parser that `reads_logprobs` (score-only templates, whose whole answer is one
score token) takes the top logprobs of the first answer token when the backend returns them. The
probabilities of the tokens "1".."5" (spacing variants summed) are renormalised into a distribution;
its argmax is the score, and its expected value Σ p(k)·k and entropy are kept with the mass the model
put on score tokens at all. Below MIN_SCORE_MASS the distribution says little, so the decoded text
is parsed instead. `method` records which way each score was obtained: "logprobs" or "decoded".

That argmax is the greedy answer. A run that samples (temperature > 0) wants each sample's own
answer instead, or every sample of an item would get the same score: there the score is the token
the sample drew, read from its decoded text ("decoded"), and the distribution still gives the
expected score, entropy and mass. A score-only answer is its first token, so a drawn score digit
counts even when max_tokens (typically 1) cut the answer off right after it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol

SCORE_MIN, SCORE_MAX = 1, 5
_THINK_START, _THINK_END = "<think>", "</think>"
_SCORE_DIGITS = "".join(str(k) for k in range(SCORE_MIN, SCORE_MAX + 1))
MIN_SCORE_MASS = 0.5


class Status(StrEnum):
    OK = "ok"
    UNPARSEABLE = "unparseable"
    TRUNCATED = "truncated"
    ERROR = "error"


FAILED = (Status.UNPARSEABLE, Status.TRUNCATED, Status.ERROR)


@dataclass(frozen=True)
class Distribution:
    """p(score = k) for k in SCORE_MIN..SCORE_MAX, renormalised; `mass` is their total before that."""

    probs: tuple[float, ...]
    mass: float

    @property
    def expected(self) -> float:
        return sum(p * k for k, p in enumerate(self.probs, start=SCORE_MIN))

    @property
    def entropy(self) -> float:
        return -sum(p * math.log(p) for p in self.probs if p > 0)

    @property
    def argmax(self) -> int:
        return SCORE_MIN + self.probs.index(max(self.probs))  # ties go to the lower score


def score_distribution(top_logprobs: Sequence[tuple[str, float]]) -> Distribution | None:
    """The score distribution in a first token's top logprobs; None if no score token is among them."""
    raw = [0.0] * (SCORE_MAX - SCORE_MIN + 1)
    for token, logprob in top_logprobs:
        stripped = token.strip()
        if len(stripped) == 1 and stripped in _SCORE_DIGITS:
            raw[int(stripped) - SCORE_MIN] += math.exp(logprob)
    mass = sum(raw)
    return Distribution(tuple(p / mass for p in raw), mass) if mass > 0 else None


class Parsed(NamedTuple):
    status: Status
    score: int | None
    detail: str = ""
    method: str = ""  # for ok: "logprobs" or "decoded"
    distribution: Distribution | None = None  # whenever logprobs held score tokens


class Parser(Protocol):
    name: str
    version: int
    reads_logprobs: bool

    def parse_answer(self, answer: str) -> Parsed:
        """Parse the final answer (thinking already removed) of a completion that finished."""


def _answer_part(text: str) -> str | None:
    """The text after the last closed thinking block; None if a thinking block is still open."""
    answer = text.rsplit(_THINK_END, 1)[-1]
    return None if _THINK_START in answer else answer


def _as_score(token: str) -> Parsed:
    if len(token) == 1 and token in _SCORE_DIGITS:  # ASCII only: str.isdigit() accepts '²' and '٤'
        return Parsed(Status.OK, int(token))
    return Parsed(Status.UNPARSEABLE, None, f"{token[:40]!r} is not an integer score in {SCORE_MIN}..{SCORE_MAX}")


@dataclass(frozen=True)
class TaggedScoreParser:
    """A free-form rationale that ends with `<score>N</score>`; only whitespace may follow the tag."""

    name: str = "tagged_score"
    version: int = 1
    reads_logprobs: bool = False
    _tag = re.compile(r"<score>(.*?)</score>", re.DOTALL)

    def parse_answer(self, answer: str) -> Parsed:
        matches = list(self._tag.finditer(answer))
        if not matches:
            return Parsed(Status.UNPARSEABLE, None, "no <score>…</score> tag in the answer")
        last = matches[-1]
        if answer[last.end():].strip():
            return Parsed(Status.UNPARSEABLE, None, "text follows the final <score> tag")
        return _as_score(last.group(1).strip())


@dataclass(frozen=True)
class ScoreOnlyParser:
    """The whole answer is one score digit (surrounding whitespace allowed)."""

    name: str = "score_only"
    version: int = 1
    reads_logprobs: bool = True

    def parse_answer(self, answer: str) -> Parsed:
        stripped = answer.strip()
        if not stripped:
            return Parsed(Status.UNPARSEABLE, None, "empty answer")
        return _as_score(stripped)


PARSERS: dict[str, Parser] = {p.name: p for p in (TaggedScoreParser(), ScoreOnlyParser())}


def parse_completion(parser: Parser, text: str, finish_reason: str, error: str = "",
                     top_logprobs: Sequence[tuple[str, float]] = (), *, sampled: bool = False) -> Parsed:
    """Status of one completion. `finish_reason` is 'stop' or 'length' (OpenAI's vocabulary);
    `top_logprobs` are the (token, logprob) alternatives at the first answer token, if any;
    `sampled`: the completion was sampled (temperature > 0), so its score is what it drew."""
    if error:
        return Parsed(Status.ERROR, None, error)
    distribution = score_distribution(top_logprobs) if parser.reads_logprobs and top_logprobs else None
    if sampled and distribution is not None:
        drawn = _parse_drawn(parser, text, finish_reason)
        return drawn._replace(method="decoded" if drawn.status == Status.OK else "", distribution=distribution)
    if distribution is not None and distribution.mass >= MIN_SCORE_MASS:
        return Parsed(Status.OK, distribution.argmax, method="logprobs", distribution=distribution)
    decoded = _parse_decoded(parser, text, finish_reason)
    if decoded.status == Status.OK:
        return Parsed(Status.OK, decoded.score, method="decoded", distribution=distribution)
    if top_logprobs and parser.reads_logprobs:
        mass = distribution.mass if distribution else 0.0
        detail = f"{decoded.detail}; score tokens held {mass:.0%} of the first token's probability"
        return Parsed(decoded.status, None, detail, distribution=distribution)
    return decoded


def _parse_drawn(parser: Parser, text: str, finish_reason: str) -> Parsed:
    """A sampled answer scored from logprobs: a complete score, even if max_tokens cut it off there."""
    answer = _answer_part(text)
    drawn = parser.parse_answer(answer) if answer is not None else None
    return drawn if drawn is not None and drawn.status == Status.OK else _parse_decoded(parser, text, finish_reason)


def _parse_decoded(parser: Parser, text: str, finish_reason: str) -> Parsed:
    if finish_reason == "length":
        return Parsed(Status.TRUNCATED, None, "hit max_tokens before a final answer")
    answer = _answer_part(text)
    if answer is None:
        return Parsed(Status.UNPARSEABLE, None, "a <think> block was opened and never closed")
    return parser.parse_answer(answer)
