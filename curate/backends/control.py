"""Messages are data: a control token's text in one ("Why does <|im_end|> end a turn?") is encoded as plain text.

A chat prompt is rendered to text and encoded, so a question holding `<|im_end|>` would hold the real end of turn:
the judge would see the user's turn end mid-question (and a `</think>` would end a thinking judge's thinking).
Here each control token's text in a message is wrapped in two private-use characters before the chat template
renders the messages; the rendered text is cut at the wrapped texts, which are encoded as plain text, and the rest
is encoded as usual, the template's own control tokens included.

Why this way: the template renders the real messages, only wrapped, so a template that looks into a message's
content still sees it; a conversation with nothing to wrap is rendered and encoded exactly as before (the caller
keeps its one-call fast path for those); and only the rare prompts that hold a control token's text pay for
encoding in pieces. transformers 5.20 does the same (`apply_chat_template(..., sanitize_control_tokens=True)`, whose
ids the tests compare these with); its floor here, 5.6, does not, and vLLM 0.32 pins transformers below 5.20.
Rendering each message as a placeholder and encoding it apart instead could change the ids of ordinary prompts
where a message meets the template's text (a merge across the boundary, SentencePiece's leading space), and a
template that reads a message (Qwen3's looks for `</think>` in assistant messages) would render something else.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from curate.errors import BackendError

_MARK_START, _MARK_END = "\U000f0000", "\U000f0001"  # private use: no tokenizer gives them a meaning
_CONTROLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer → (what they were found from, them)


class ControlTokens(NamedTuple):
    """A tokenizer's control tokens: its special tokens, and the added tokens its chat template writes (Qwen3's
    `</think>` is not special, but its template writes it), or those it lists in `chat_control_tokens`."""

    ids: dict[str, int]  # each control token's text → its id
    found: re.Pattern  # a control token's text, or a marker character (data too: wrapped, so never taken for one)
    wrapped: re.Pattern  # a wrapped text (its group), or a lone marker (a template split a wrapped text)


def control_tokens(tokenizer: Any) -> ControlTokens:
    """The tokenizer's control tokens, found once per tokenizer, chat template and vocabulary size."""
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else str(tokenizer.chat_template)
    listed = getattr(tokenizer, "chat_control_tokens", None)  # transformers 5.20 reads it; earlier ones keep it
    key = (template, len(tokenizer), listed)
    cached = _CONTROLS.get(tokenizer)
    if cached is not None and cached[0] == key:
        return cached[1]
    ids = {token.content: token_id for token_id, token in tokenizer.added_tokens_decoder.items()
           if token.special or (token.content in listed if listed is not None
                                else token.content in template and not token.content.isspace())}
    texts = "|".join(re.escape(text) for text in sorted([*ids, _MARK_START, _MARK_END], key=len, reverse=True))
    controls = ControlTokens(ids, re.compile(texts),
                             re.compile(f"{_MARK_START}({texts}){_MARK_END}|[{_MARK_START}{_MARK_END}]"))
    _CONTROLS[tokenizer] = (key, controls)
    return controls


def wrap(messages: Sequence[dict[str, str]], data: int, controls: ControlTokens) -> list[dict[str, str]] | None:
    """The messages with each control token's text in the first `data` of them wrapped in markers; None when there
    is none to wrap."""
    if not any(controls.found.search(message["content"]) for message in messages[:data]):
        return None
    wrapped = f"{_MARK_START}\\g<0>{_MARK_END}"
    return [{**message, "content": controls.found.sub(wrapped, message["content"])} if i < data else dict(message)
            for i, message in enumerate(messages)]


def encode_wrapped(tokenizer: Any, text: str, controls: ControlTokens) -> list[int]:
    """A prompt rendered from wrapped messages as token ids: the wrapped texts as plain text, the rest as usual. A
    lone marker (a template that split a wrapped text) is dropped, but still cuts the text, so what stood on its
    two sides cannot join into a control token."""
    pieces = controls.wrapped.split(text)  # text, wrapped text (None for a lone marker), text, ..., text
    ids = tokenizer.encode(pieces[0], add_special_tokens=False)
    for i, piece in enumerate(pieces[1:], start=1):
        if not piece:
            continue
        if i % 2 == 0:
            ids += _within_prompt(lambda part: tokenizer.encode(part, add_special_tokens=False), piece)
            continue
        as_text = _within_prompt(lambda part: _without_added_tokens(tokenizer, part), piece)
        if controls.ids.get(piece) in as_text:
            raise BackendError(f"the tokenizer encodes the text {piece!r} as its control token even as plain text, "
                               "so a message holding it cannot be given to this model as data")
        ids += as_text
    return ids


def _within_prompt(encode: Callable[[str], list[int]], piece: str) -> list[int]:
    """The ids of a piece from inside a prompt. It is encoded after a newline, whose ids are then dropped: a
    SentencePiece tokenizer puts a space before the start of a text, and a piece inside a prompt is no start."""
    newline, ids = encode("\n"), encode("\n" + piece)
    return ids[len(newline):] if ids[:len(newline)] == newline else encode(piece)


def _without_added_tokens(tokenizer: Any, text: str) -> list[int]:
    """`text` encoded as if the tokenizer had no added tokens: the Rust tokenizer's own steps without its added
    vocabulary (`split_special_tokens` would still find added tokens that are not special, such as Qwen3's
    `</think>`); a tokenizer written in Python can only be told to split its special tokens."""
    rust = getattr(tokenizer, "backend_tokenizer", None)
    if rust is None:
        return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
    if rust.normalizer is not None:
        text = rust.normalizer.normalize_str(text)
    splits = [split for split, _ in rust.pre_tokenizer.pre_tokenize_str(text)] if rust.pre_tokenizer else [text]
    return [token.id for split in splits for token in rust.model.tokenize(split)]
