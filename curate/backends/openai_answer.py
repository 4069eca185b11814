"""What an OpenAI-compatible server answered, read into completions: no shape of answer crashes a run.

Servers differ, and some misbehave: an answer with no choices, a body that is not JSON or not a JSON
object, an error body that is not UTF-8, a choice without a message, a null content, a finish reason
outside OpenAI's vocabulary, no usage, logprobs of another shape. Each ends in one of two ways:

- the answer as a whole is unusable (`read_answer` raises `MalformedAnswer`): that is what a proxy
  or an overloaded server sends now and then, so it is retried like a dropped connection and becomes
  an error row only after the last retry;
- one choice is unusable (`completions` returns an error completion for that sample): the same
  server would answer the same way again, so it is stored at once, with the reason, and
  `--retry-failed` can ask again later.

A null content is an empty answer (a reasoning model cut off while thinking sends one), which the
parser then judges. Token counts the server does not report are 0.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Sequence
from typing import Any

from curate.backends.base import Completion, TokenLogprobs

MAX_DETAIL_CHARS = 500
# OpenAI's two words, and other servers' words for them (TGI ends with "eos_token" or "stop_sequence").
FINISH_REASONS = {"stop": "stop", "length": "length", "eos_token": "stop", "stop_sequence": "stop"}


class RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class MalformedAnswer(RetryableError):
    """A 200 whose body is no usable answer."""


class RequestFailed(Exception):
    """A request the server refused for itself (e.g. 400, prompt too long): no retry, an error row."""


class MalformedChoice(Exception):
    """One choice of an answer is unusable: that sample's error row."""


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_DETAIL_CHARS]


def server_message(body: bytes) -> str:
    """The server's own words from an error body, on one line, whatever the body's encoding: the
    message of a JSON error (OpenAI, vLLM, FastAPI's `detail`), else the body as text."""
    text = body.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return one_line(_error_text(parsed) or text)


def _error_text(parsed: Any) -> str:
    if not isinstance(parsed, dict):
        return ""
    error = parsed.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    for candidate in (error, parsed.get("message"), parsed.get("detail")):
        if isinstance(candidate, str) and candidate.strip():
            return candidate
    return ""


def _kind(value: Any) -> str:
    """A JSON value's type in JSON's words."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def read_answer(body: bytes) -> dict[str, Any]:
    """A 200's body as an answer holding at least one choice, or MalformedAnswer saying what it is."""
    try:
        answer = json.loads(body)
    except ValueError as exc:  # cut short, or not even UTF-8: the answer never fully arrived
        raise MalformedAnswer(f"a 200 answer that is not JSON ({len(body)} bytes)") from exc
    if not isinstance(answer, dict):
        raise MalformedAnswer(f"a 200 answer that is a JSON {_kind(answer)}, not an object")
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        said = _error_text(answer)
        raise MalformedAnswer("a 200 answer with no choices" + (f": {one_line(said)}" if said else ""))
    return answer


def completions(answer: dict[str, Any], item_id: str, sample_indices: Sequence[int], chat: bool) -> list[Completion]:
    """One completion per choice, in the choices' index order, for at most `len(sample_indices)` samples."""
    choices = sorted(answer["choices"], key=_index)[:len(sample_indices)]
    prompt_tokens, completion_tokens = _token_counts(answer.get("usage"), len(choices))
    return [_completion(item_id, idx, choice, chat, prompt_tokens, completion_tokens)
            for idx, choice in zip(sample_indices, choices, strict=False)]


def _index(choice: Any) -> int:
    index = choice.get("index") if isinstance(choice, dict) else None
    return index if isinstance(index, int) else 0  # the sort is stable: unnumbered choices keep their order


def _count(usage: dict[str, Any], name: str) -> int:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _token_counts(usage: Any, choices: int) -> tuple[int, int]:
    """(prompt tokens, completion tokens per choice); 0 for what the server does not report."""
    usage = usage if isinstance(usage, dict) else {}
    return _count(usage, "prompt_tokens"), _count(usage, "completion_tokens") // choices


def _completion(item_id: str, idx: int, choice: Any, chat: bool, prompt_tokens: int,
                completion_tokens: int) -> Completion:
    try:
        if not isinstance(choice, dict):
            raise MalformedChoice(f"the choice is a JSON {_kind(choice)}, not an object")
        text = _text(choice, chat)
        logprobs = _token_logprobs(choice.get("logprobs"), chat)
    except MalformedChoice as exc:
        return Completion(item_id, idx, "", "", prompt_tokens, completion_tokens, error=f"malformed answer: {exc}")
    reason = choice.get("finish_reason")
    finish_reason = FINISH_REASONS.get(reason) if isinstance(reason, str) else None
    if finish_reason is None:
        why = ("the answer has no finish_reason, so a complete answer cannot be told from one cut at max_tokens"
               if reason is None else f"the server ended the answer with finish_reason {one_line(str(reason))!r}")
        return Completion(item_id, idx, text, "", prompt_tokens, completion_tokens, error=why)
    return Completion(item_id, idx, text, finish_reason, prompt_tokens, completion_tokens, logprobs=logprobs)


def _text(choice: dict[str, Any], chat: bool) -> str:
    if chat:
        message = choice.get("message")
        if not isinstance(message, dict):
            raise MalformedChoice("the choice has no message object")
        content, where = message.get("content"), "message.content"
    else:
        content, where = choice.get("text"), "text"
    if content is None:
        return ""
    if not isinstance(content, str):
        raise MalformedChoice(f"{where} is a JSON {_kind(content)}, not a string")
    return content


def _token_logprobs(logprobs: Any, chat: bool) -> tuple[TokenLogprobs, ...]:
    """Per generated token, its text and alternatives: chat's `logprobs.content[i]` ({token, top_logprobs:
    [{token, logprob}]}), or completions' `logprobs.tokens[i]` with `logprobs.top_logprobs[i]` ({token: logprob}).
    Servers that ignore logprobs (transformers serve) send none."""
    if logprobs is None:
        return ()
    _expect(logprobs, dict, "logprobs")
    if chat:
        positions = logprobs.get("content") or []
        _expect(positions, list, "logprobs.content")
        for i, position in enumerate(positions):
            _expect(position, dict, f"logprobs.content[{i}]")
        tokens = [position.get("token") for position in positions]
        alternatives = [position.get("top_logprobs") or [] for position in positions]
        for i, entries in enumerate(alternatives):
            _expect(entries, list, f"logprobs.content[{i}].top_logprobs")
            for entry in entries:
                _expect(entry, dict, f"logprobs.content[{i}].top_logprobs[…]")
        pairs = [[(entry.get("token"), entry.get("logprob")) for entry in entries] for entries in alternatives]
        where = "logprobs.content"
    else:
        tokens, alternatives = logprobs.get("tokens") or [], logprobs.get("top_logprobs") or []
        _expect(tokens, list, "logprobs.tokens")
        _expect(alternatives, list, "logprobs.top_logprobs")
        if len(alternatives) != len(tokens):
            raise MalformedChoice(f"logprobs has {len(tokens)} tokens but {len(alternatives)} top_logprobs entries")
        for i, entries in enumerate(alternatives):
            _expect(entries or {}, dict, f"logprobs.top_logprobs[{i}]")
        pairs = [list((entries or {}).items()) for entries in alternatives]
        where = "logprobs.top_logprobs"
    for i, token in enumerate(tokens):
        if not isinstance(token, str):
            raise MalformedChoice(f"{where}[{i}] has token {one_line(json.dumps(token))[:40]}, not a string")
    for position in pairs:
        for token, logprob in position:
            if not isinstance(token, str) or isinstance(logprob, bool) or not isinstance(logprob, int | float):
                raise MalformedChoice(f"{where} holds {one_line(json.dumps([token, logprob]))[:80]}, not a token "
                                      "and its logprob")
    return tuple(TokenLogprobs(token, tuple((t, float(lp)) for t, lp in position))
                 for token, position in zip(tokens, pairs, strict=True))


def _expect(value: Any, kind: type, where: str) -> None:
    if not isinstance(value, kind):
        raise MalformedChoice(f"{where} is a JSON {_kind(value)}, not {'an object' if kind is dict else 'an array'}")
