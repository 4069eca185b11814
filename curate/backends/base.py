"""The backend seam: rendered requests with sampling settings in, completions out as they finish.

One method, synchronous to its caller: `generate` pulls requests lazily from an iterable and yields
completions in any order as they finish. A local model takes a window of requests, sorts it and
yields a batch at a time; vLLM takes a chunk at a time; an async HTTP client pulls the next request
whenever a connection frees up, so it never drains between windows. The engine commits what it
receives; a backend never sees the store.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, NamedTuple, Protocol, TypeVar

from curate.backends.control import control_tokens, encode_wrapped, wrap
from curate.config import SamplingConfig

T = TypeVar("T")
class Request(NamedTuple):
    """One item's chat messages and the sample indices still wanted for it. Messages that end with an
    assistant message are a prefill: the model continues that message rather than starting its own. A
    prefill is the template's own text; every other message is data, never the prompt's structure: a
    control token's text in it (`<|im_end|>`) reaches the model as plain text (`curate.backends.control`)."""

    item_id: str
    sample_indices: tuple[int, ...]
    messages: tuple[dict[str, str], ...]
    # What the first answer token may say, as the task that asks decides it (a judge's score digits); each backend
    # allows every token whose text is one of them, with or without spaces. Empty: any token.
    first_tokens: tuple[str, ...] = ()


Alternatives = tuple[tuple[str, float], ...]  # (token text, logprob), most likely first


class TokenLogprobs(NamedTuple):
    """One generated token's text and the top alternatives the model gave at its position."""

    token: str
    alternatives: Alternatives


class Completion(NamedTuple):
    """One sample's outcome. `finish_reason` uses OpenAI's words: 'stop' or 'length'; '' on error.
    `logprobs`: per generated token, when top logprobs were asked for."""

    item_id: str
    sample_idx: int
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    error: str = ""
    logprobs: tuple[TokenLogprobs, ...] = ()


class Backend(Protocol):
    name: str
    model_id: str

    def generate(self, requests: Iterable[Request], sampling: SamplingConfig) -> Iterator[Completion]:
        """Yield one Completion per (request, sample index), in any order, as they finish."""

    def close(self) -> None:
        """Release the model or connections."""


class _Raised(NamedTuple):
    exception: BaseException


_EXHAUSTED = object()


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """`items`, each produced in a background thread while the consumer works on the one before: a local backend
    renders and tokenizes its next window while the model runs this one (the tokenizer and torch release the
    GIL). What the producer raises is raised here; leaving the loop early stops the producer."""
    ready: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand_over(value: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(value, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not hand_over(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - raised again in the consumer's thread
            hand_over(_Raised(exc))
            return
        hand_over(_EXHAUSTED)

    producer = threading.Thread(target=produce, name="dereason-prefetch", daemon=True)
    producer.start()
    try:
        while (item := ready.get()) is not _EXHAUSTED:
            if isinstance(item, _Raised):
                raise item.exception
            yield item
    finally:
        stop.set()
        producer.join()


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter); itertools.batched is 3.12+."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def sample_seed(base_seed: int, item_id: str, sample_idx: int) -> int:
    """A seed for one (item, sample) that does not depend on batching, order or resumption."""
    digest = hashlib.sha256(f"{base_seed}\x1f{item_id}\x1f{sample_idx}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def continues_answer(messages: Sequence[dict[str, str]]) -> bool:
    """Whether the messages end with the start of the assistant's answer (a template's prefill)."""
    return bool(messages) and messages[-1]["role"] == "assistant"


def prompt_texts(tokenizer: Any, conversations: Sequence[Sequence[dict[str, str]]]) -> list[str]:
    """Each conversation's chat prompt, rendered in one call per kind (new turn, prefilled): transformers' checks
    per call cost more than rendering a short prompt."""
    texts: list[str] = [""] * len(conversations)
    for prefilled in (False, True):
        chosen = [i for i, messages in enumerate(conversations) if continues_answer(messages) == prefilled]
        if chosen:
            rendered = tokenizer.apply_chat_template([list(conversations[i]) for i in chosen], tokenize=False,
                                                     add_generation_prompt=not prefilled,
                                                     continue_final_message=prefilled)
            for i, text in zip(chosen, rendered, strict=True):
                texts[i] = text
    return texts


def prompt_token_ids(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """The chat prompt as token ids: the template writes the control tokens; the messages are data."""
    return prompts_token_ids(tokenizer, [messages])[0]


def prompts_token_ids(tokenizer: Any, conversations: Sequence[Sequence[dict[str, str]]]) -> list[list[int]]:
    """Each conversation's chat prompt as token ids, in which only the chat template writes control tokens: a control
    token's text in a message is encoded as plain text (`curate.backends.control`). A conversation with none is
    rendered and encoded as it always was, with the others in one call (a fast tokenizer spreads it over cores)."""
    controls = control_tokens(tokenizer)
    wrapped = [wrap(messages, _data_messages(messages), controls) for messages in conversations]
    texts = prompt_texts(tokenizer, [messages if marked is None else marked
                                     for messages, marked in zip(conversations, wrapped, strict=True)])
    plain = [i for i, marked in enumerate(wrapped) if marked is None]
    ids = [[] if marked is None else encode_wrapped(tokenizer, text, controls)
           for marked, text in zip(wrapped, texts, strict=True)]
    for i, encoded in zip(plain, _encode(tokenizer, [texts[i] for i in plain]), strict=True):
        ids[i] = encoded
    return ids


def completion_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str | list[int]:
    """The chat prompt for a completions endpoint: its text, which any server takes, unless a message holds a control
    token's text, which the server would encode as the control token; then its token ids, as `prompts_token_ids`."""
    controls = control_tokens(tokenizer)
    marked = wrap(messages, _data_messages(messages), controls)
    text = prompt_texts(tokenizer, [messages if marked is None else marked])[0]
    return text if marked is None else encode_wrapped(tokenizer, text, controls)


def _data_messages(messages: Sequence[dict[str, str]]) -> int:
    """How many of the messages, from the first, are data: all but a prefill, which is the template's own text."""
    return len(messages) - continues_answer(messages)


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Each text's token ids, encoded in one call."""
    if not texts:
        return []
    rust = _plain_rust_tokenizer(tokenizer)
    if rust is not None:
        return [encoding.ids for encoding in rust.encode_batch_fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def _plain_rust_tokenizer(tokenizer: Any) -> Any:
    """The Rust tokenizer under a transformers tokenizer whose call would hand it the texts unchanged, else None.
    That call converts every encoding in Python afterwards, which takes as long as encoding (3,000 prompts: 0.88 s
    against 0.48 s). It changes the ids when the tokenizer's file keeps a truncation or padding (the call turns them
    off), when the tokenizer is to split special tokens, or when its class encodes in its own way (Code Llama's)."""
    rust = getattr(tokenizer, "backend_tokenizer", None)
    if rust is None or rust.truncation is not None or rust.padding is not None \
            or rust.encode_special_tokens != bool(getattr(tokenizer, "split_special_tokens", False)):
        return None
    from transformers import PreTrainedTokenizerFast

    kind = type(tokenizer)
    plain = issubclass(kind, PreTrainedTokenizerFast) and kind.__call__ is PreTrainedTokenizerFast.__call__ \
        and kind._encode_plus is PreTrainedTokenizerFast._encode_plus
    return rust if plain else None


def first_token_ids(tokenizer: Any, first_tokens: Sequence[str]) -> list[int]:
    """Every token whose text is one of `first_tokens` (a Request's), with or without surrounding spaces ("3",
    " 3", "▁3")."""
    wanted = set(first_tokens)
    characters = {character for text in wanted for character in text}
    candidates = [i for i, piece in enumerate(tokenizer.convert_ids_to_tokens(range(len(tokenizer))))
                  if piece is not None and characters & set(piece)]
    return [i for i, text in zip(candidates, token_texts(tokenizer, candidates), strict=True) if text.strip() in wanted]


def token_texts(tokenizer: Any, token_ids: Sequence[int]) -> list[str]:
    """Each token's text on its own. No ids give no texts: transformers 5.6 decodes an empty batch as ['']."""
    return tokenizer.batch_decode([[i] for i in token_ids]) if token_ids else []


def context_exceeded(prompt_tokens: int, context: int, setting: str) -> str:
    """The error detail of a prompt that leaves the model no position to answer in."""
    return (f"prompt has {prompt_tokens} tokens; the model's context is {context} positions ({setting}); "
            "shorten the question or use a model with a longer context")
