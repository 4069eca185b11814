"""What every verifier answers, and what they share: how to read the reference and the model's answer part.

A `Verdict` is exactly one `VerdictStatus`:
    correct    the response's final answer matches the item's reference
    wrong      the response has a final answer, and it does not match
    no_answer  the response holds no final answer in the verifier's declared format
    error      the item cannot be verified (no reference, a reference the verifier cannot read, no options
               for a choice verifier) or the verifier itself failed; `detail` says which
    timeout    checking took longer than the verifier's time bound
Only `correct` means right; nothing is folded into a silent False.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from curate.errors import ConfigError
from curate.parse import answer_part


class VerdictStatus(StrEnum):
    CORRECT = "correct"
    WRONG = "wrong"
    NO_ANSWER = "no_answer"
    ERROR = "error"
    TIMEOUT = "timeout"


class Verdict(NamedTuple):
    status: VerdictStatus
    extracted: str = ""  # the final answer as read from the response; "" when none was found
    detail: str = ""  # why, in one line


class Verifier(Protocol):
    """Is a response's final answer right for an item? `item` is a row of curate's items frame (at least
    `reference`: str | None and `choices`: None | [{"label", "text"}, …]). Never raises for a bad item or a
    bad response: those are verdicts."""

    name: str
    version: int

    def verify(self, response: str, item: Mapping[str, Any]) -> Verdict: ...


@runtime_checkable
class BatchVerifier(Protocol):
    """A verifier that decides a batch at once (one that asks a model: a request per response, sent together)."""

    def verify_batch(self, responses: Sequence[str], items: Sequence[Mapping[str, Any]]) -> list[Verdict]: ...


def require_number(verifier: Verifier, setting: str, positive: bool) -> None:
    """Raise ConfigError unless the verifier's setting is a finite number >= 0 (> 0 if `positive`)."""
    value = getattr(verifier, setting)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            (0 < value if positive else 0 <= value) and value < math.inf):
        raise ConfigError(f"verifier {verifier.name!r}: {setting} must be a number {'>' if positive else '>='} 0, "
                          f"not {value!r}")


def reference_of(item: Mapping[str, Any]) -> str | None:
    """The item's reference answer, stripped; None when it has none (null, blank or not text)."""
    reference = item.get("reference")
    return (reference.strip() or None) if isinstance(reference, str) else None


NO_REFERENCE = Verdict(VerdictStatus.ERROR, "", "the item has no reference answer to verify against")
UNCLOSED_THINK = Verdict(VerdictStatus.NO_ANSWER, "", "a <think> block was opened and never closed")
EMPTY_BOX = Verdict(VerdictStatus.NO_ANSWER, "", "the last \\boxed{} is empty or never closed")
T = TypeVar("T")


def reference_and_answer(response: str, item: Mapping[str, Any],
                         read_reference: Callable[[str], T | Verdict]) -> tuple[T, str] | Verdict:
    """What every rule verifier reads before deciding: the item's reference, as `read_reference` takes it (or the
    `error` verdict it gives for one it cannot read), and the response's answer part (after its last closed
    `</think>`). An item that cannot be verified is said first, then a response without an answer part."""
    reference = reference_of(item)
    if reference is None:
        return NO_REFERENCE
    read = read_reference(reference)
    if isinstance(read, Verdict):
        return read
    answer = answer_part(response)
    if answer is None:
        return UNCLOSED_THINK
    return read, answer
