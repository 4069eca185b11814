"""Local `transformers` backend: batched decoding with left padding, on CPU or GPU.

It runs its own decode loop rather than `model.generate` for one reason: `generate` samples every
row from the process-wide RNG, so a row's tokens depend on which rows share its batch. Here each
(item, sample) draws from its own counter-based stream keyed by `sample_seed` (curate.backends.
sampling), so a resumed run, a different batch size or another order gives the same judgments as
one uninterrupted run. The loop otherwise does what `generate` does, at its speed: sampling stays on
the device, and each step syncs with the host once, to learn whether every row has stopped.

Scheduling: requests are taken a window at a time and sorted by prompt length, so a batch pads
little. The next window is rendered and tokenized in a background thread while the model runs this
one (the first window is small, so the model starts early), where a core is free for it: beside an
accelerator, or when torch's threads leave one. Every prompt of a template starts with
the same tokens (chat preamble and rubric): that shared prefix is run once, its KV cache kept and
copied across each batch, and only the rest of each prompt is run per row (left-padded between
prefix and suffix, with explicit position ids, so every row sees exactly the positions it would
alone). Only the last position's logits are computed.

Batches hold at most `batch_size` rows and `max_batch_tokens` tokens (rows × (longest prompt +
longest generation allowed)); a row over the budget runs alone. A batch that runs out of memory is
split in two and each half retried, down to one row; a row that cannot run even alone ends as an
error row saying so, and the rest of the run goes on.

The model's context (`max_position_embeddings`) bounds every row: a prompt that fills it ends as an
error row without reaching the model, and a row whose prompt plus max_tokens would overrun it may
generate only up to the end of the context, ending 'length' (stored as truncated) if it gets there.
"""

from __future__ import annotations

import copy
import gc
import inspect
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import torch

from curate.backends.base import (
    Completion,
    Request,
    TokenLogprobs,
    available_cores,
    context_exceeded,
    prefetched,
    prompt_token_ids,
    prompts_token_ids,
    sample_seed,
    first_token_ids,
    token_texts,
)
from curate.backends.models import load_causal_lm
from curate.backends.sampling import next_tokens, uniforms
from curate.config import BackendConfig, SamplingConfig
from curate.errors import BackendError

log = logging.getLogger(__name__)

WINDOW_ROWS = 1024
FIRST_WINDOW_ROWS = 128  # small, so the model starts while the next window is rendered and tokenized
MIN_SHARED_PREFIX = 8  # tokens; below this, running the prefix apart is not worth a cache copy
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# What the CPU allocator says when it cannot allocate (CUDA raises torch.cuda.OutOfMemoryError; MPS says "out of memory").
OUT_OF_MEMORY_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")

class Row(NamedTuple):
    item_id: str
    sample_idx: int
    ids: list[int]  # the prompt's token ids
    first_tokens: tuple[str, ...]  # the Request's




class Decoded(NamedTuple):
    """A batch's generated tokens per row (stop token included), and whether a stop token ended each."""

    tokens: list[list[int]]
    stopped: list[bool]
    logprobs: list[tuple[TokenLogprobs, ...]]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BackendError(f"unknown --device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError("CUDA is not available on this machine; use --device cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise BackendError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                           "numbered from cuda:0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BackendError("MPS is not available on this machine; use --device cpu or auto")
    return device


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError) or any(
        message in str(exc) for message in OUT_OF_MEMORY_MESSAGES)


class TransformersBackend:
    name = "transformers"

    def __init__(self, config: BackendConfig, sort_by_length: bool = True, reuse_prefix: bool = True):
        self.sort_by_length, self.reuse_prefix = sort_by_length, reuse_prefix
        self._prefix: tuple[tuple[int, ...], object] | None = None  # (token ids, their KV cache)
        self._token_texts: dict[int, str] = {}  # token id → its text, for top logprobs: the same few ids recur
        self._allowed: dict[tuple[str, ...], torch.Tensor] = {}  # ids of a Request's first tokens, found once
        self.model_id = config.model
        self.device = _device(config.device)
        self.batch_size, self.max_batch_tokens = config.batch_size, config.max_batch_tokens
        self.model, self.tokenizer = load_causal_lm(config.model, _dtype(config.dtype, self.device),
                                                    config.trust_remote_code)
        if self.tokenizer.chat_template is None:
            raise BackendError(f"model {config.model!r} has no chat template; use a chat/instruct model")
        self.model.to(self.device).eval()
        context = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        self.context: int | None = context if isinstance(context, int) else None
        eos = self.model.generation_config.eos_token_id
        self.stop_ids = set(eos if isinstance(eos, list) else [eos]) - {None} or {self.tokenizer.eos_token_id}
        self._stop_tensor = torch.tensor(sorted(self.stop_ids), device=self.device)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else next(iter(self.stop_ids))
        accepted = inspect.signature(self.model.forward).parameters
        # transformers renamed `past_key_values` to `cache` (the old name goes in 5.40); older 5.x know only the old.
        self.cache_keyword = "cache" if "cache" in accepted else "past_key_values"
        # Only the last position's logits are ever read; models without `logits_to_keep` compute them all.
        self.last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
        # What is alive now (torch, transformers, the model: some 400,000 objects) lives as long as the backend.
        # Frozen, it is skipped by the garbage collector's full passes, each of which rescanned it (0.4 s, about 4%
        # of scoring 3,000 items with a small model; BENCHMARKS.md (e)); vLLM freezes its heap after warm-up alike.
        # A heap someone else froze is left as it is.
        self._froze_heap = not gc.get_freeze_count()
        if self._froze_heap:
            gc.freeze()
        log.info("transformers backend: %s on %s (%s)", config.model, self.device, self.model.dtype)

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return prompt_token_ids(self.tokenizer, messages)

    def generate(self, requests: Iterable[Request], sampling: SamplingConfig) -> Iterator[Completion]:
        windows = self._windows(requests)
        for window in prefetched(windows) if self._core_to_spare() else windows:
            fitting = []
            for row in window:
                if self.context is None or len(row.ids) < self.context:
                    fitting.append(row)
                else:
                    yield Completion(row.item_id, row.sample_idx, "", "", len(row.ids), 0,
                                     error=context_exceeded(len(row.ids), self.context, "max_position_embeddings"))
            if self.sort_by_length:  # rows allowed other first tokens never share a batch
                fitting.sort(key=lambda row: (row.first_tokens, len(row.ids)))
            shared = self._shared_prefix(fitting) if self.reuse_prefix and fitting else 0
            for batch in self._batches(fitting, sampling):
                yield from self._answer(batch, sampling, shared)

    def _core_to_spare(self) -> bool:
        """Whether the next window can be tokenized in a background thread without taking cores from the model:
        beside an accelerator, or when torch's threads leave a CPU core free. When they fill every core, a busy
        second thread preempts them, which costs more than it overlaps (2 threads on 2 cores: 0.91 of the raw
        forward's rate in the background, 1.0 inline; BENCHMARKS.md (e))."""
        return self.device.type != "cpu" or torch.get_num_threads() < available_cores()

    def _windows(self, requests: Iterable[Request]) -> Iterator[list[Row]]:
        """Rows, WINDOW_ROWS at a time (enough to sort by length), the first
        FIRST_WINDOW_ROWS."""
        window: list[Request] = []
        rows, size = 0, FIRST_WINDOW_ROWS
        for request in requests:
            window.append(request)
            rows += len(request.sample_indices)
            if rows >= size:
                yield self._rows(window)
                window, rows, size = [], 0, WINDOW_ROWS
        if window:
            yield self._rows(window)

    def _rows(self, requests: list[Request]) -> list[Row]:
        prompts = prompts_token_ids(self.tokenizer, [request.messages for request in requests])
        return [Row(request.item_id, idx, ids, request.first_tokens)
                for request, ids in zip(requests, prompts, strict=True) for idx in request.sample_indices]

    def _limit(self, prompt_tokens: int, sampling: SamplingConfig) -> int:
        """Tokens a row may generate: max_tokens, or what is left of the model's context if that is less."""
        return sampling.max_tokens if self.context is None else min(sampling.max_tokens, self.context - prompt_tokens)

    def _batches(self, rows: list[Row], sampling: SamplingConfig) -> Iterator[list[Row]]:
        """Consecutive rows allowed the same first tokens, at most batch_size of them and max_batch_tokens padded
        tokens (prompt and generation); a row over the token budget on its own makes a batch of one."""
        batch: list[Row] = []
        prompt_width = generation_width = 0
        for row in rows:
            prompt = max(prompt_width, len(row.ids))
            generation = max(generation_width, self._limit(len(row.ids), sampling))
            if batch and (len(batch) == self.batch_size or row.first_tokens != batch[0].first_tokens
                          or (len(batch) + 1) * (prompt + generation) > self.max_batch_tokens):
                yield batch
                batch = []
                prompt, generation = len(row.ids), self._limit(len(row.ids), sampling)
            batch.append(row)
            prompt_width, generation_width = prompt, generation
        if batch:
            yield batch

    def _answer(self, batch: list[Row], sampling: SamplingConfig, shared: int) -> Iterator[Completion]:
        """The batch's completions; out of memory, each half of it on its own, down to single rows."""
        try:
            decoded = self._decode(batch, sampling, shared)
        except (RuntimeError, ValueError, MemoryError) as exc:
            out_of_memory, failure = _out_of_memory(exc), f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        else:
            yield from self._completions(batch, decoded)
            return
        # Past the handler, the traceback no longer holds the failed batch's tensors: their memory is free again.
        if out_of_memory and self.device.type == "cuda":
            torch.cuda.empty_cache()
        if out_of_memory and len(batch) > 1:
            log.info("batch of %d rows ran out of memory; retrying it as two halves", len(batch))
            half = len(batch) // 2
            yield from self._answer(batch[:half], sampling, shared)
            yield from self._answer(batch[half:], sampling, shared)
            return
        if out_of_memory:
            ids = batch[0].ids
            failure = (f"out of memory even alone: prompt of {len(ids)} tokens plus up to "
                       f"{self._limit(len(ids), sampling)} generated on {self.device} ({failure}); shorten the "
                       "question, lower --max-tokens or use a device with more memory")
        log.warning("batch of %d failed: %s", len(batch), failure)
        for row in batch:
            yield Completion(row.item_id, row.sample_idx, "", "", len(row.ids), 0, error=failure)

    def _completions(self, batch: list[Row], decoded: Decoded) -> Iterator[Completion]:
        for (item_id, idx, ids, _), tokens, stopped, logprobs in zip(
                batch, decoded.tokens, decoded.stopped, decoded.logprobs, strict=True):
            try:
                text = self.tokenizer.decode(tokens[:-1] if stopped else tokens, skip_special_tokens=True)
            except (RuntimeError, ValueError) as exc:  # this row's answer is lost, not its batch's
                yield Completion(item_id, idx, "", "", len(ids), 0, error=f"{type(exc).__name__}: {exc}")
                continue
            yield Completion(item_id=item_id, sample_idx=idx, text=text, finish_reason="stop" if stopped else "length",
                             prompt_tokens=len(ids), completion_tokens=len(tokens), logprobs=logprobs)

    def _shared_prefix(self, rows: list[Row]) -> int:
        """Length of the token prefix all rows share, leaving each row at least one token of its own."""
        prompts = [row.ids for row in rows]
        # What the lexicographically smallest and largest prompts share, every prompt shares (compared in C).
        smallest, largest = min(prompts), max(prompts)
        length = next((i for i, (a, b) in enumerate(zip(smallest, largest)) if a != b),
                      min(len(smallest), len(largest)))
        length = min(length, min(map(len, prompts)) - 1)
        return length if length >= MIN_SHARED_PREFIX else 0

    def _prefix_cache(self, prefix: tuple[int, ...], rows: int) -> object:
        """The prefix's KV cache, computed once per distinct prefix, copied for a batch of `rows`."""
        if self._prefix is None or self._prefix[0] != prefix:
            output = self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True,
                                **self.last_logits_only)
            self._prefix = (prefix, output[self.cache_keyword])
        cache = copy.deepcopy(self._prefix[1])
        cache.batch_repeat_interleave(rows)
        return cache

    @torch.inference_mode()
    def _decode(self, batch: list[Row], sampling: SamplingConfig, shared: int) -> Decoded:
        """The prompt forward, then a token per row per step until every row has stopped or reached its limit."""
        rows = len(batch)
        suffixes = [row.ids[shared:] for row in batch]
        width = max(len(ids) for ids in suffixes)
        limits = [self._limit(len(row.ids), sampling) for row in batch]
        steps = max(limits)
        # One attention mask for the whole decode, [prefix | left-padded suffix | generated], sliced per step.
        input_ids = torch.tensor([[self.pad_id] * (width - len(ids)) + ids for ids in suffixes], device=self.device)
        padding = width - torch.tensor([len(ids) for ids in suffixes], device=self.device)
        mask = torch.ones((rows, shared + width + steps), dtype=torch.long, device=self.device)
        mask[:, shared:shared + width] = torch.arange(width, device=self.device) >= padding[:, None]
        positions = shared + (mask[:, shared:shared + width].cumsum(-1) - 1).clamp(min=0)
        cache = self._prefix_cache(tuple(batch[0].ids[:shared]), rows) if shared else None
        output = self.model(input_ids=input_ids, attention_mask=mask[:, :shared + width], position_ids=positions,
                            use_cache=True, **{self.cache_keyword: cache}, **self.last_logits_only)
        draws = (uniforms([sample_seed(sampling.seed, row.item_id, row.sample_idx) for row in batch], steps)
                 .to(self.device) if sampling.temperature > 0 else None)
        k = sampling.top_logprobs
        top_ids = torch.zeros((rows, steps, k), dtype=torch.long, device=self.device)
        top_values = torch.zeros((rows, steps, k), dtype=torch.float32, device=self.device)
        limit = torch.tensor(limits, device=self.device)
        generated = torch.full((rows, steps), self.pad_id, dtype=torch.long, device=self.device)
        lengths = torch.zeros(rows, dtype=torch.long, device=self.device)
        stopped = torch.zeros(rows, dtype=torch.bool, device=self.device)
        finished = torch.zeros(rows, dtype=torch.bool, device=self.device)  # stopped, or at its limit
        position = positions[:, -1:]
        allowed = self._first_token_ids(batch[0].first_tokens) if batch[0].first_tokens else None
        allowed_logprobs = None
        for step in range(steps):
            logits = output.logits[:, -1, :]
            if k:
                log_mass = torch.logsumexp(logits.float(), dim=-1, keepdim=True)
                values, top_ids[:, step] = logits.topk(k, dim=-1)  # log_softmax's top k, without all of it
                top_values[:, step] = values.float() - log_mass
            if step == 0 and allowed is not None:
                allowed_logprobs = logits[:, allowed].float() - log_mass  # exact, unconstrained: the mass to report
                logits = torch.full_like(logits, torch.finfo(logits.dtype).min).index_copy(
                    -1, allowed, logits[:, allowed])
            running = ~finished
            # A greedy token is the top-1 of the top k already taken (an argmax over the vocabulary costs as much).
            tokens = top_ids[:, step, 0] if k and draws is None and allowed_logprobs is None else next_tokens(
                logits, sampling.temperature, sampling.top_p, None if draws is None else draws[:, step])
            tokens = tokens.masked_fill(finished, self.pad_id)
            generated[:, step] = tokens
            lengths += running
            stopped |= running & torch.isin(tokens, self._stop_tensor)
            finished |= stopped | (lengths == limit)
            if finished.all():  # the one sync with the host per step
                break
            # Finished rows idle on with padding; keep even them inside the model's context.
            position = position + 1 if self.context is None else (position + 1).clamp(max=self.context - 1)
            output = self.model(input_ids=tokens[:, None], attention_mask=mask[:, :shared + width + step + 1],
                                position_ids=position, use_cache=True,
                                **{self.cache_keyword: output[self.cache_keyword]})
        answers = [row[:length] for row, length in zip(generated.tolist(), lengths.tolist(), strict=True)]
        stops = stopped.tolist()
        if not k:
            return Decoded(answers, stops, [()] * rows)
        ids, values = top_ids.tolist(), top_values.tolist()
        if allowed_logprobs is not None:  # the allowed tokens' exact logprobs join the first position's top k
            extra = allowed.tolist()
            for row, row_values in enumerate(allowed_logprobs.tolist()):
                known = set(ids[row][0])
                ids[row][0] = ids[row][0] + [i for i in extra if i not in known]
                values[row][0] = values[row][0] + [v for i, v in zip(extra, row_values, strict=True) if i not in known]
        return Decoded(answers, stops, [self._token_logprobs(tokens[:len(tokens) - stop], ids[row], values[row])
                                        for row, (tokens, stop) in enumerate(zip(answers, stops, strict=True))])

    def _token_logprobs(self, tokens: list[int], ids: list[list[int]], values: list[list[float]]
                        ) -> tuple[TokenLogprobs, ...]:
        """Per generated token (a stop token left out, as from the text): its text and its position's top k."""
        self._learn_texts({*tokens, *(i for position in ids[:len(tokens)] for i in position)})
        return tuple(TokenLogprobs(self._token_texts[token], tuple(
            (self._token_texts[i], v) for i, v in zip(ids[step], values[step], strict=True)))
            for step, token in enumerate(tokens))

    def _learn_texts(self, token_ids: set[int]) -> None:
        unseen = sorted(token_ids - self._token_texts.keys())
        self._token_texts.update(zip(unseen, token_texts(self.tokenizer, unseen), strict=True))

    def _first_token_ids(self, first_tokens: tuple[str, ...]) -> torch.Tensor:
        if first_tokens not in self._allowed:
            self._allowed[first_tokens] = torch.tensor(first_token_ids(self.tokenizer, first_tokens),
                                                       device=self.device)
        return self._allowed[first_tokens]

    def close(self) -> None:
        if self._froze_heap:
            gc.unfreeze()
            self._froze_heap = False
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
