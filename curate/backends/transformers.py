"""Local `transformers` backend: batched decoding with left padding, on CPU or GPU.

It runs its own decode loop rather than `model.generate` for one reason: `generate` samples every
row from the process-wide RNG, so a row's tokens depend on which rows share its batch. Here each
(item, sample) draws from its own `torch.Generator` seeded by `sample_seed`, so a resumed run, a
different batch size or another order gives the same judgments as one uninterrupted run.

Scheduling: requests are taken a window at a time and sorted by prompt length, so a batch pads
little. Every prompt of a template starts with the same tokens (chat preamble and rubric): that
shared prefix is run once, its KV cache kept and copied across each batch, and only the rest of
each prompt is run per row (left-padded between prefix and suffix, with explicit position ids, so
every row sees exactly the positions it would alone).

The model's context (`max_position_embeddings`) bounds every row: a prompt that fills it ends as an
error row without reaching the model, and a row whose prompt plus max_tokens would overrun it may
generate only up to the end of the context, ending 'length' (stored as truncated) if it gets there.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator, Sequence

import torch

from curate.backends.base import (
    Completion, Request, context_exceeded, load_error, local_model, prompt_token_ids, sample_seed,
)
from curate.config import SamplingConfig, ScoreConfig
from curate.errors import BackendError

log = logging.getLogger(__name__)

WINDOW_ROWS = 1024
MIN_SHARED_PREFIX = 8  # tokens; below this, running the prefix apart is not worth a cache copy
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def _next_tokens(logits: torch.Tensor, sampling: SamplingConfig, generators: list[torch.Generator]) -> torch.Tensor:
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > sampling.top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    # CPU generators: the same draws on every device, and per row, whatever shares the batch.
    probs = probs.cpu()
    return torch.stack([torch.multinomial(probs[i], 1, generator=g)[0] for i, g in enumerate(generators)]).to(
        logits.device)


class TransformersBackend:
    name = "transformers"

    def __init__(self, config: ScoreConfig, sort_by_length: bool = True, reuse_prefix: bool = True):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.sort_by_length, self.reuse_prefix = sort_by_length, reuse_prefix
        self._prefix: tuple[tuple[int, ...], object] | None = None  # (token ids, their KV cache)
        self.model_id = config.model
        path = local_model(config.model)
        self.device = _device(config.device)
        self.batch_size = config.batch_size
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(
                path, dtype=_dtype(config.dtype, self.device), trust_remote_code=config.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise BackendError(load_error("model", config.model, path, exc)) from exc
        self.model.to(self.device).eval()
        context = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        self.context: int | None = context if isinstance(context, int) else None
        if self.tokenizer.chat_template is None:
            raise BackendError(f"model {config.model!r} has no chat template; use a chat/instruct model")
        eos = self.model.generation_config.eos_token_id
        self.stop_ids = set(eos if isinstance(eos, list) else [eos]) - {None} or {self.tokenizer.eos_token_id}
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else next(iter(self.stop_ids))
        log.info("transformers backend: %s on %s (%s)", config.model, self.device, self.model.dtype)

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return prompt_token_ids(self.tokenizer, messages)

    def generate(self, requests: Iterable[Request], sampling: SamplingConfig) -> Iterator[Completion]:
        for window in self._windows(requests):
            fitting = []
            for item_id, idx, ids in window:
                if self.context is None or len(ids) < self.context:
                    fitting.append((item_id, idx, ids))
                else:
                    yield Completion(item_id, idx, "", "", len(ids), 0,
                                     error=context_exceeded(len(ids), self.context, "max_position_embeddings"))
            if self.sort_by_length:
                fitting.sort(key=lambda row: len(row[2]))
            for start in range(0, len(fitting), self.batch_size):
                batch = fitting[start:start + self.batch_size]
                answered: set[tuple[str, int]] = set()
                try:
                    for completion in self._decode(batch, sampling):
                        answered.add((completion.item_id, completion.sample_idx))
                        yield completion
                except (RuntimeError, ValueError) as exc:  # e.g. out of memory: stored as errors, retryable
                    log.warning("batch of %d failed after %d answer(s): %s", len(batch), len(answered), exc)
                    for item_id, idx, ids in batch:
                        if (item_id, idx) not in answered:  # each sample is answered exactly once
                            yield Completion(item_id, idx, "", "", len(ids), 0,
                                             error=f"{type(exc).__name__}: {exc}")

    def _windows(self, requests: Iterable[Request]) -> Iterator[list[tuple[str, int, list[int]]]]:
        """Rows (item_id, sample_idx, prompt ids), WINDOW_ROWS at a time: enough to sort by length."""
        window: list[tuple[str, int, list[int]]] = []
        for request in requests:
            ids = self.prompt_ids(request.messages)
            window.extend((request.item_id, idx, ids) for idx in request.sample_indices)
            if len(window) >= WINDOW_ROWS:
                yield window
                window = []
        if window:
            yield window

    def _shared_prefix(self, batch: list[tuple[str, int, list[int]]]) -> int:
        """Length of the token prefix all rows share, leaving each row at least one token of its own."""
        first = batch[0][2]
        limit = min(len(ids) for _, _, ids in batch) - 1
        length = 0
        while length < limit and all(ids[length] == first[length] for _, _, ids in batch):
            length += 1
        return length if length >= MIN_SHARED_PREFIX else 0

    def _prefix_cache(self, prefix: tuple[int, ...], rows: int) -> object:
        """The prefix's KV cache, computed once per distinct prefix, copied for a batch of `rows`."""
        if self._prefix is None or self._prefix[0] != prefix:
            output = self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
            self._prefix = (prefix, output.past_key_values)
        cache = copy.deepcopy(self._prefix[1])
        cache.batch_repeat_interleave(rows)
        return cache

    @torch.inference_mode()
    def _decode(self, batch: list[tuple[str, int, list[int]]], sampling: SamplingConfig) -> Iterator[Completion]:
        shared = self._shared_prefix(batch) if self.reuse_prefix else 0
        suffixes = [ids[shared:] for _, _, ids in batch]
        width = max(len(ids) for ids in suffixes)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(suffixes):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
        past = None
        if shared:
            past = self._prefix_cache(tuple(batch[0][2][:shared]), len(batch))
            mask = torch.cat([torch.ones((len(batch), shared), dtype=mask.dtype, device=self.device), mask], dim=1)
        generators = [torch.Generator().manual_seed(sample_seed(sampling.seed, item_id, idx))
                      for item_id, idx, _ in batch]
        output = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                            past_key_values=past, use_cache=True)
        alternatives = self._top_logprobs(output.logits[:, -1, :], sampling.top_logprobs)
        # Generation stops at max_tokens or where the model's context ends, whichever comes first.
        limits = [sampling.max_tokens if self.context is None else min(sampling.max_tokens, self.context - len(ids))
                  for _, _, ids in batch]
        generated: list[list[int]] = [[] for _ in batch]
        stopped = [False] * len(batch)  # ended by a stop token
        finished = [False] * len(batch)  # stopped, or at its limit
        stop_ids = torch.tensor(sorted(self.stop_ids), device=self.device)
        while True:
            tokens = _next_tokens(output.logits[:, -1, :], sampling, generators)
            is_stop = torch.isin(tokens, stop_ids).tolist()
            for row, token in enumerate(tokens.tolist()):
                if not finished[row]:
                    generated[row].append(token)
                    stopped[row] = is_stop[row]
                    finished[row] = stopped[row] or len(generated[row]) == limits[row]
            if all(finished):
                break
            tokens = tokens.masked_fill(torch.tensor(finished, device=self.device), self.pad_id)
            mask = torch.cat([mask, torch.ones((len(batch), 1), dtype=mask.dtype, device=self.device)], dim=1)
            positions = positions[:, -1:] + 1
            if self.context is not None:  # finished rows idle on with padding: keep even them inside the context
                positions = positions.clamp(max=self.context - 1)
            output = self.model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions,
                                past_key_values=output.past_key_values, use_cache=True)
        for row, (item_id, idx, ids) in enumerate(batch):
            tokens = generated[row]
            text_tokens = tokens[:-1] if stopped[row] else tokens
            yield Completion(item_id=item_id, sample_idx=idx,
                             text=self.tokenizer.decode(text_tokens, skip_special_tokens=True),
                             finish_reason="stop" if stopped[row] else "length",
                             prompt_tokens=len(ids), completion_tokens=len(tokens), top_logprobs=alternatives[row])

    def _top_logprobs(self, logits: torch.Tensor, k: int) -> list[tuple[tuple[str, float], ...]]:
        """Per row, the k most likely first tokens as (text, logprob); empty tuples when k == 0."""
        if k == 0:
            return [()] * logits.shape[0]
        values, ids = torch.log_softmax(logits.float(), dim=-1).topk(k, dim=-1)
        return [tuple((self.tokenizer.decode([i]), v) for i, v in zip(row_ids, row_values, strict=True))
                for row_ids, row_values in zip(ids.tolist(), values.tolist(), strict=True)]

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
