"""OpenAI-compatible HTTP backend (vLLM serve, SGLang, TGI, `transformers serve`, hosted APIs).

The hot path is aiohttp rather than the official SDK: measured here, the SDK costs ~2.5 ms of client
CPU per request, which caps a 2-core client near 0.6 of what the server could answer. Conventions
follow the SDK: base URL ending in /v1, key from an environment variable, the same error kinds.

An asyncio loop runs in a background thread. It pulls requests from the engine lazily, keeps at
most `max_in_flight` open (and under optional request/token rate limits), retries 429/5xx, timeouts
and dropped connections with exponential backoff and jitter (a 429's Retry-After is honoured), and
hands each completion to the engine through a queue as soon as it lands. With several `--base-url`s
each attempt goes to the least loaded endpoint that is not backed off, and a retry may go to another
(`curate.backends.openai_endpoints`); the limits above hold over all of them. After the last retry a
sample becomes an explicit error completion, and so does a request the server refuses for itself (a
400 such as a prompt longer than the model's context), with the server's own message. Authentication
and unknown-model answers (401, 403, 404) stop the run instead: every request would fail the same way.
How an answer's body is read, malformed ones included, is `curate.backends.openai_answer`.

Two settings go beyond OpenAI's API, in vLLM's words (SGLang reads the same): a template's prefill is
sent as a final assistant message with `continue_final_message`, and a request's allowed first tokens
(`Request.first_tokens`: a constrained judge's five score digits; with max_tokens 1 the whole answer) as a
structured-output choice. A server that ignores them answers unconstrained
or in a new turn, which the strict parser then reports, never scores. `--endpoint completions`
renders a prefill into the prompt itself and works with any server that takes a text prompt.

Messages are data: a question holding a control token's text ("<|im_end|>") must not end its own
turn. `--endpoint completions` sends such a prompt as token ids in which that text is plain text
(vLLM, SGLang and OpenAI's API take a prompt as ids; a server that takes only text refuses it, and
that row is an `error` with the server's message); every other prompt goes as text, as before. A
chat endpoint renders and encodes messages itself: whether it keeps them data is the server's
doing (vLLM 0.32's does not, nor SGLang's by default), which the README says.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from curate.backends.base import (
    Completion,
    Request,
    completion_prompt,
    continues_answer,
    sample_seed,
)
from curate.backends.models import load_error, local_model
from curate.backends.openai_answer import (
    RequestFailed,
    RetryableError,
    completions,
    read_answer,
    retry_after_seconds,
    server_message,
)
from curate.backends.openai_endpoints import Endpoints, backoff
from curate.config import BackendConfig, SamplingConfig
from curate.errors import BackendError
from curate.redact import redact, refuse_url_credentials, secrets_in

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
FATAL_STATUS = frozenset({401, 403, 404})
CHARS_PER_TOKEN = 4  # prompt-size estimate for the client-side token budget only
_DONE = object()


@dataclass(frozen=True)
class _Job:
    item_id: str
    sample_indices: tuple[int, ...]
    body: dict[str, Any]


def _paced(per_minute: int, window_seconds: float) -> AsyncLimiter:
    """A bucket holding `window_seconds` of the budget (at least one unit), so a per-minute limit is
    spent evenly rather than in one burst at the start of every minute."""
    capacity = max(1.0, per_minute * window_seconds / 60)
    return AsyncLimiter(capacity, 60 * capacity / per_minute)


class OpenAIBackend:
    name = "openai"

    def __init__(self, config: BackendConfig):
        settings = config.endpoint
        from_environment = os.environ.get("OPENAI_BASE_URL")
        base_urls = settings.base_url or ([from_environment] if from_environment else [])
        if not base_urls:
            raise BackendError("--backend openai needs --base-url (or $OPENAI_BASE_URL), e.g. http://127.0.0.1:8000/v1")
        refuse_url_credentials("$OPENAI_BASE_URL", from_environment if not settings.base_url else None)
        self.settings = settings
        self.model_id = config.model
        self.path = "/chat/completions" if settings.endpoint == "chat" else "/completions"
        self.endpoints = Endpoints(base_urls)
        self.tokenizer = None
        if settings.endpoint == "completions":
            from transformers import AutoTokenizer

            path = local_model(settings.tokenizer)
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
            except (OSError, ValueError) as exc:
                raise BackendError(load_error("tokenizer", settings.tokenizer, path, exc)) from exc
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task | None = None

    # --- request bodies -------------------------------------------------------------------------
    def _body(self, request: Request, sampling: SamplingConfig, indices: tuple[int, ...]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model_id, "max_tokens": sampling.max_tokens,
                                "temperature": sampling.temperature, "top_p": sampling.top_p,
                                "seed": sample_seed(sampling.seed, request.item_id, indices[0])}
        if len(indices) > 1:
            body["n"] = len(indices)
        if sampling.top_logprobs:
            if self.tokenizer is None:
                body.update(logprobs=True, top_logprobs=sampling.top_logprobs)
            else:
                body["logprobs"] = sampling.top_logprobs
        if request.first_tokens:
            # vLLM's structured outputs. vLLM 0.32's server masks the logits before it takes the logprobs: they come
            # back renormalised over the allowed answers (score_mass 1), their relative probabilities unchanged.
            body["structured_outputs"] = {"choice": list(request.first_tokens)}
        if self.tokenizer is not None:
            body["prompt"] = completion_prompt(self.tokenizer, request.messages)
        else:
            body["messages"] = list(request.messages)
            if continues_answer(request.messages):  # vLLM's and SGLang's way to continue a prefilled answer
                body.update(continue_final_message=True, add_generation_prompt=False)
        return body

    def _jobs(self, request: Request, sampling: SamplingConfig) -> list[_Job]:
        if self.settings.use_n:
            return [_Job(request.item_id, request.sample_indices, self._body(request, sampling, request.sample_indices))]
        return [_Job(request.item_id, (idx,), self._body(request, sampling, (idx,))) for idx in request.sample_indices]

    # --- the sync face the engine sees -------------------------------------------------------
    def generate(self, requests: Iterable[Request], sampling: SamplingConfig) -> Iterator[Completion]:
        results: queue.Queue = queue.Queue()
        thread = threading.Thread(target=self._thread_main, args=(iter(requests), sampling, results.put),
                                  name="dereason-openai", daemon=True)
        thread.start()
        try:
            while (item := results.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if thread.is_alive() and self._loop is not None and self._main is not None:
                self._loop.call_soon_threadsafe(self._main.cancel)
            thread.join()

    def _thread_main(self, requests: Iterator[Request], sampling: SamplingConfig, emit: Any) -> None:
        try:
            asyncio.run(self._run(requests, sampling, emit))
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the engine's thread, which raises it
            emit(exc)
        emit(_DONE)

    # --- the async engine room ---------------------------------------------------------------
    async def _run(self, requests: Iterator[Request], sampling: SamplingConfig, emit: Any) -> None:
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        settings = self.settings
        rpm = _paced(settings.requests_per_minute, 1.0) if settings.requests_per_minute else None
        tpm = _paced(settings.tokens_per_minute, 10.0) if settings.tokens_per_minute else None
        slots = asyncio.Semaphore(settings.max_in_flight)
        connector = aiohttp.TCPConnector(limit=settings.max_in_flight, limit_per_host=settings.max_in_flight)
        timeout = aiohttp.ClientTimeout(total=settings.request_timeout)
        tasks: set[asyncio.Task] = set()
        fatal: list[BaseException] = []  # e.g. 401: stop feeding at once rather than fail every request

        def finished(task: asyncio.Task) -> None:
            tasks.discard(task)
            slots.release()
            if not task.cancelled() and task.exception() is not None:
                fatal.append(task.exception())

        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self._headers()) as session:
            for request in requests:
                for job in self._jobs(request, sampling):
                    await slots.acquire()
                    if fatal:
                        raise fatal[0]
                    task = asyncio.create_task(self._job(session, job, sampling, rpm, tpm, emit))
                    tasks.add(task)
                    task.add_done_callback(finished)
            while tasks:
                await asyncio.wait(set(tasks))
            self.endpoints.log_counts()
            if fatal:
                raise fatal[0]

    def _headers(self) -> dict[str, str]:
        # Read at request time and kept only in this session's headers: never logged or stored.
        key = os.environ.get(self.settings.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _job(self, session: Any, job: _Job, sampling: SamplingConfig, rpm: Any, tpm: Any, emit: Any) -> None:
        try:
            answer = await self._post_with_retries(session, job.body, rpm, tpm)
        except (RetryableError, RequestFailed) as exc:
            for idx in job.sample_indices:
                emit(Completion(job.item_id, idx, "", "", 0, 0, error=str(exc)))
            return
        answered = completions(answer, job.item_id, job.sample_indices, chat=self.tokenizer is None)
        for completion in answered:
            emit(completion)
        # A server that ignores `n` answers once: the other samples go as their own seeded requests
        # (each answer holds at least one choice, so a request for one sample never comes back here).
        for idx in job.sample_indices[len(answered):]:
            single = {k: v for k, v in job.body.items() if k != "n"}
            single["seed"] = sample_seed(sampling.seed, job.item_id, idx)
            await self._job(session, _Job(job.item_id, (idx,), single), sampling, rpm, tpm, emit)

    async def _post_with_retries(self, session: Any, body: dict[str, Any], rpm: Any, tpm: Any) -> dict[str, Any]:
        # The first attempt goes out directly: most requests never retry, and building the retry
        # machinery for each one costs more client CPU than the request itself.
        try:
            return await self._post(session, body, rpm, tpm)
        except RetryableError as first_failure:
            if self.settings.max_retries == 0:
                raise RetryableError(f"gave up after 1 attempt(s): {first_failure}") from first_failure
            await asyncio.sleep(self._retry_wait(first_failure, 1))
        attempts = self.settings.max_retries + 1
        retrying = AsyncRetrying(retry=retry_if_exception_type(RetryableError),
                                 wait=lambda state: self._retry_wait(state.outcome.exception(), state.attempt_number),
                                 stop=stop_after_attempt(attempts - 1), reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._post(session, body, rpm, tpm)
        except RetryableError as exc:
            raise RetryableError(f"gave up after {attempts} attempt(s): {exc}") from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _retry_wait(self, error: RetryableError, failures: int) -> float:
        """No wait while another endpoint can take the request; else Retry-After when the server named one, else the
        jittered exponential backoff after `failures` failures."""
        if self.endpoints.ready():
            return 0.0
        return error.retry_after if error.retry_after is not None else backoff(failures)

    async def _post(self, session: Any, body: dict[str, Any], rpm: Any, tpm: Any) -> dict[str, Any]:
        if rpm is not None:
            await rpm.acquire()
        if tpm is not None:
            await tpm.acquire(min(self._token_estimate(body), tpm.max_rate))
        with self.endpoints.attempt() as endpoint:
            # With several endpoints, a failure says which one failed (an error row's stored detail).
            where = f"{endpoint.url}: " if self.endpoints.several else ""
            url = endpoint.url + self.path
            try:
                async with session.post(url, data=json.dumps(body),
                                        headers={"Content-Type": "application/json"}) as response:
                    if response.status == 200:
                        return read_answer(await response.read())
                    message = redact(f"HTTP {response.status}: {server_message(await response.read())}",
                                     secrets_in({self.settings.api_key_env}))
                    if response.status in RETRYABLE_STATUS:
                        raise RetryableError(where + message, retry_after_seconds(response.headers.get("Retry-After")))
                    if response.status in FATAL_STATUS:
                        raise BackendError(f"{url} answered {message}; check --base-url, --model and the key in "
                                           f"${self.settings.api_key_env}")
                    raise RequestFailed(where + message)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                raise RetryableError(where + f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc

    def _token_estimate(self, body: dict[str, Any]) -> int:
        prompt = body.get("prompt") or "".join(m["content"] for m in body.get("messages", []))
        prompt_tokens = len(prompt) if isinstance(prompt, list) else len(prompt) // CHARS_PER_TOKEN  # ids: exact
        return prompt_tokens + body["max_tokens"] * body.get("n", 1)

    def close(self) -> None:
        """Nothing to release: each `generate` call opens and closes its own session."""
