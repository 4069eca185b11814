"""Judge output → (status, score). Strict, declared by the template, never guessed.

Every judgment ends as exactly one `Status`:
    ok           the answer holds a score in 1..5 in the template's declared format
    unparseable  the model finished, but its answer does not follow the format (detail says how)
    truncated    the model hit max_tokens: whatever it wrote is not a final answer, whatever it holds
    error        the backend failed for this request (detail holds the message)
No score is ever invented: only `ok` carries one.

Parsers only ever see the model's completion, never the prompt, and read only the answer after a
closed `</think>` block, so rubric text echoed by the model or quoted while thinking cannot match.

Logprob scoring: a parser that `reads_logprobs` says where in an answer its score digit stands
(`locate`): the first answer character for score-only templates, the inside of the final
`<score>` tag for tagged ones. With per-token top logprobs from the backend, `score_alternatives`
finds the token that begins there (after a closed `</think>`, so thinking models are read where
they answer) and returns that position's alternatives. The probabilities of the tokens "1".."5"
(spacing variants summed) are renormalised into a distribution; its argmax is the score, and its
expected value Σ p(k)·k and entropy are kept with the mass the model put on score tokens at all.
Below MIN_SCORE_MASS the distribution says little, so the decoded text is parsed instead.

A run that constrains the first answer token to the score tokens (`constrain_score`) gets a score
from every answer: the distribution over the score tokens whatever mass they held, which the
judgment records so that a low one can be seen.

`method` records which way each score was obtained: "logprobs" (the distribution at the score
position), "constrained" (the same, with the answer restricted to score tokens) or "decoded".

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
SCORE_DIGITS = "".join(str(k) for k in range(SCORE_MIN, SCORE_MAX + 1))
MIN_SCORE_MASS = 0.5
METHODS = ("logprobs", "constrained", "decoded")  # how an ok judgment's score was obtained


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
    """The score distribution in one position's top logprobs; None if no score token is among them."""
    raw = [0.0] * (SCORE_MAX - SCORE_MIN + 1)
    for token, logprob in top_logprobs:
        stripped = token.strip()
        if len(stripped) == 1 and stripped in SCORE_DIGITS:
            raw[int(stripped) - SCORE_MIN] += math.exp(logprob)
    mass = sum(raw)
    return Distribution(tuple(p / mass for p in raw), mass) if mass > 0 else None


class Parsed(NamedTuple):
    status: Status
    score: int | None
    detail: str = ""
    method: str = ""  # for ok: "logprobs", "constrained" or "decoded"
    distribution: Distribution | None = None  # whenever logprobs held score tokens


class Parser(Protocol):
    name: str
    version: int
    reads_logprobs: bool
    whole_answer_is_score: bool  # so the answer's first token may be constrained to the score tokens

    def parse_answer(self, answer: str) -> Parsed:
        """Parse the final answer (thinking already removed) of a completion that finished."""

    def locate(self, answer: str) -> int | None:
        """Offset in the final answer where the score digit stands (or would stand); None if nowhere."""


def answer_part(text: str) -> str | None:
    """The text after the last closed thinking block; None if a thinking block is still open."""
    answer = text.rsplit(_THINK_END, 1)[-1]
    return None if _THINK_START in answer else answer


def _as_score(token: str) -> Parsed:
    if len(token) == 1 and token in SCORE_DIGITS:  # ASCII only: str.isdigit() accepts '²' and '٤'
        return Parsed(Status.OK, int(token))
    return Parsed(Status.UNPARSEABLE, None, f"{token[:40]!r} is not an integer score in {SCORE_MIN}..{SCORE_MAX}")


@dataclass(frozen=True)
class TaggedScoreParser:
    """A free-form rationale that ends with `<score>N</score>`; only whitespace may follow the tag."""

    name: str = "tagged_score"
    version: int = 2  # 2: reads logprobs at the score tag (1 stored the first token's, which say nothing here)
    reads_logprobs: bool = True
    whole_answer_is_score: bool = False
    _tag = re.compile(r"<score>\s*(.*?)\s*</score>", re.DOTALL)

    def parse_answer(self, answer: str) -> Parsed:
        matches = list(self._tag.finditer(answer))
        if not matches:
            return Parsed(Status.UNPARSEABLE, None, "no <score>…</score> tag in the answer")
        last = matches[-1]
        if answer[last.end():].strip():
            return Parsed(Status.UNPARSEABLE, None, "text follows the final <score> tag")
        return _as_score(last.group(1))

    def locate(self, answer: str) -> int | None:
        matches = list(self._tag.finditer(answer))
        if not matches or answer[matches[-1].end():].strip():
            return None
        return matches[-1].start(1)


@dataclass(frozen=True)
class ScoreOnlyParser:
    """The whole answer is one score digit (surrounding whitespace allowed)."""

    name: str = "score_only"
    version: int = 1
    reads_logprobs: bool = True
    whole_answer_is_score: bool = True

    def parse_answer(self, answer: str) -> Parsed:
        stripped = answer.strip()
        if not stripped:
            return Parsed(Status.UNPARSEABLE, None, "empty answer")
        return _as_score(stripped)

    def locate(self, answer: str) -> int | None:
        stripped = answer.lstrip()
        return len(answer) - len(stripped) if stripped else None


PARSERS: dict[str, Parser] = {p.name: p for p in (TaggedScoreParser(), ScoreOnlyParser())}


def score_alternatives(parser: Parser, tokens: Sequence[tuple[str, Sequence[tuple[str, float]]]]
                       ) -> tuple[tuple[str, float], ...]:
    """The top logprobs where the parser's score digit was generated, from per-token (token text,
    alternatives) pairs; empty if the answer has no such place. Offsets are taken in the tokens' own
    concatenation, so a tokenizer whose pieces do not join into the decoded text cannot shift them."""
    text = "".join(token for token, _ in tokens)
    answer = answer_part(text)
    offset = parser.locate(answer) if answer is not None else None
    if offset is None:
        return ()
    offset += len(text) - len(answer)
    end = 0
    for token, alternatives in tokens:
        end += len(token)
        if end > offset:
            return tuple(alternatives)
    return ()


def parse_completion(parser: Parser, text: str, finish_reason: str, error: str = "",
                     top_logprobs: Sequence[tuple[str, float]] = (), *, sampled: bool = False,
                     constrained: bool = False) -> Parsed:
    """Status of one completion. `finish_reason` is 'stop' or 'length' (OpenAI's vocabulary);
    `top_logprobs` are the (token, logprob) alternatives at the score position (`score_alternatives`);
    `sampled`: the completion was sampled (temperature > 0), so its score is what it drew;
    `constrained`: its first token was restricted to the score tokens."""
    if error:
        return Parsed(Status.ERROR, None, error)
    distribution = score_distribution(top_logprobs) if parser.reads_logprobs and top_logprobs else None
    if constrained:
        return _parse_constrained(parser, text, finish_reason, distribution, sampled)
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
        detail = f"{decoded.detail}; score tokens held {mass:.0%} of the probability at the score position"
        return Parsed(decoded.status, None, detail, distribution=distribution)
    return decoded


def _parse_constrained(parser: Parser, text: str, finish_reason: str, distribution: Distribution | None,
                       sampled: bool) -> Parsed:
    """A first token restricted to the score tokens: the greedy score is the distribution's argmax (or the
    token itself when the backend's top logprobs held no score token), a sampled one the token drawn."""
    if distribution is not None and not sampled:
        return Parsed(Status.OK, distribution.argmax, method="constrained", distribution=distribution)
    drawn = _parse_drawn(parser, text, finish_reason)
    if drawn.status != Status.OK:  # the backend did not honour the constraint
        return drawn._replace(detail=f"{drawn.detail}; the answer was constrained to a score token, "
                                     "but the backend returned another", distribution=distribution)
    return drawn._replace(method="constrained", distribution=distribution)


def _parse_drawn(parser: Parser, text: str, finish_reason: str) -> Parsed:
    """A sampled answer scored from logprobs: a complete score, even if max_tokens cut it off there."""
    answer = answer_part(text)
    drawn = parser.parse_answer(answer) if answer is not None else None
    return drawn if drawn is not None and drawn.status == Status.OK else _parse_decoded(parser, text, finish_reason)


def _parse_decoded(parser: Parser, text: str, finish_reason: str) -> Parsed:
    if finish_reason == "length":
        return Parsed(Status.TRUNCATED, None, "hit max_tokens before a final answer")
    answer = answer_part(text)
    if answer is None:
        return Parsed(Status.UNPARSEABLE, None, "a <think> block was opened and never closed")
    return parser.parse_answer(answer)
