"""Judge output → (status, score). Strict, declared by the template, never guessed.

Every judgment ends as exactly one `Status`:
    ok           the answer holds a score in 1..5 in the template's declared format
    unparseable  the model finished, but its answer does not follow the format (detail says how)
    truncated    the model hit max_tokens: whatever it wrote is not a final answer, whatever it holds
    error        the backend failed for this request (detail holds the message)
No score is ever invented: only `ok` carries one.

Parsers only ever see the model's completion, never the prompt, and read only the answer after a
closed `</think>` block, so rubric text echoed by the model or quoted while thinking cannot match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

SCORE_MIN, SCORE_MAX = 1, 5
_THINK_START, _THINK_END = "<think>", "</think>"
_SCORE_DIGITS = "".join(str(k) for k in range(SCORE_MIN, SCORE_MAX + 1))


class Status(StrEnum):
    OK = "ok"
    UNPARSEABLE = "unparseable"
    TRUNCATED = "truncated"
    ERROR = "error"


FAILED = (Status.UNPARSEABLE, Status.TRUNCATED, Status.ERROR)


@dataclass(frozen=True)
class Parsed:
    status: Status
    score: int | None
    detail: str = ""


class Parser(Protocol):
    name: str
    version: int

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

    def parse_answer(self, answer: str) -> Parsed:
        stripped = answer.strip()
        if not stripped:
            return Parsed(Status.UNPARSEABLE, None, "empty answer")
        return _as_score(stripped)


PARSERS: dict[str, Parser] = {p.name: p for p in (TaggedScoreParser(), ScoreOnlyParser())}


def parse_completion(parser: Parser, text: str, finish_reason: str, error: str = "") -> Parsed:
    """Status of one completion. `finish_reason` is 'stop' or 'length' (OpenAI's vocabulary)."""
    if error:
        return Parsed(Status.ERROR, None, error)
    if finish_reason == "length":
        return Parsed(Status.TRUNCATED, None, "hit max_tokens before a final answer")
    answer = _answer_part(text)
    if answer is None:
        return Parsed(Status.UNPARSEABLE, None, "a <think> block was opened and never closed")
    return parser.parse_answer(answer)
