"""OpenAI-compatible HTTP backend (vLLM serve, SGLang, TGI, `transformers serve`, hosted APIs).

The hot path is aiohttp rather than the official SDK: measured here, the SDK costs ~2.5 ms of client
CPU per request, which caps a 2-core client near 0.6 of what the server could answer. Conventions
follow the SDK: base URL ending in /v1, key from an environment variable, the same error kinds.

An asyncio loop runs in a background thread. It pulls requests from the engine lazily, keeps at
most `max_in_flight` open (and under optional request/token rate limits), retries 429/5xx, timeouts
and dropped connections with exponential backoff and jitter (a 429's Retry-After is honoured), and
hands each completion to the engine through a queue as soon as it lands. After the last retry a
sample becomes an explicit error completion. Authentication and unknown-model answers (401, 403,
404) stop the run instead: every request would fail the same way.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from curate.backends.base import Completion, Request, resolve_model, sample_seed
from curate.config import SamplingConfig, ScoreConfig
from curate.errors import BackendError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
FATAL_STATUS = frozenset({401, 403, 404})
CHARS_PER_TOKEN = 4  # prompt-size estimate for the client-side token budget only
_DONE = object()


class RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RequestFailed(Exception):
    """A request the server refused for itself (e.g. 400, prompt too long): no retry, an error row."""


@dataclass(frozen=True)
class _Job:
    item_id: str
    sample_indices: tuple[int, ...]
    body: dict[str, Any]


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _paced(per_minute: int, window_seconds: float) -> AsyncLimiter:
    """A bucket holding `window_seconds` of the budget (at least one unit), so a per-minute limit is
    spent evenly rather than in one burst at the start of every minute."""
    capacity = max(1.0, per_minute * window_seconds / 60)
    return AsyncLimiter(capacity, 60 * capacity / per_minute)


class OpenAIBackend:
    name = "openai"

    def __init__(self, config: ScoreConfig):
        settings = config.endpoint
        base_url = settings.base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise BackendError("--backend openai needs --base-url (or $OPENAI_BASE_URL), e.g. http://127.0.0.1:8000/v1")
        self.settings = settings
        self.model_id = config.model
        path = "/chat/completions" if settings.endpoint == "chat" else "/completions"
        self.url = base_url.rstrip("/") + path
        self.tokenizer = None
        if settings.endpoint == "completions":
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(resolve_model(settings.tokenizer),
                                                           trust_remote_code=config.trust_remote_code)
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
        if self.tokenizer is None:
            body["messages"] = list(request.messages)
        else:
            body["prompt"] = self.tokenizer.apply_chat_template(list(request.messages), add_generation_prompt=True,
                                                                tokenize=False)
        return body

    def _jobs(self, request: Request, sampling: SamplingConfig) -> list[_Job]:
        if self.settings.use_n:
            return [_Job(request.item_id, request.sample_indices, self._body(request, sampling, request.sample_indices))]
        return [_Job(request.item_id, (idx,), self._body(request, sampling, (idx,))) for idx in request.sample_indices]

    def _text(self, choice: dict[str, Any]) -> str:
        if self.tokenizer is None:
            return (choice.get("message") or {}).get("content") or ""
        return choice.get("text") or ""

    def _top_logprobs(self, choice: dict[str, Any]) -> tuple[tuple[str, float], ...]:
        """First token's alternatives: chat `logprobs.content[0].top_logprobs`, or completions'
        `logprobs.top_logprobs[0]`. Servers that ignore logprobs (transformers serve) send none."""
        logprobs = choice.get("logprobs") or {}
        if self.tokenizer is None:
            content = logprobs.get("content") or []
            first = (content[0].get("top_logprobs") or []) if content else []
            return tuple((entry["token"], entry["logprob"]) for entry in first)
        first_position = (logprobs.get("top_logprobs") or [{}])[0] or {}
        return tuple(first_position.items())

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
            if fatal:
                raise fatal[0]

    def _headers(self) -> dict[str, str]:
        # Read at request time and kept only in this session's headers: never logged or stored.
        key = os.environ.get(self.settings.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _job(self, session: Any, job: _Job, sampling: SamplingConfig, rpm: Any, tpm: Any, emit: Any) -> None:
        try:
            data = await self._post_with_retries(session, job.body, rpm, tpm)
        except (RetryableError, RequestFailed) as exc:
            for idx in job.sample_indices:
                emit(Completion(job.item_id, idx, "", "", 0, 0, error=str(exc)))
            return
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))[:len(job.sample_indices)]
        usage = data.get("usage") or {}
        completion_tokens = usage.get("completion_tokens", 0) // max(len(choices), 1)
        for idx, choice in zip(job.sample_indices, choices, strict=False):
            emit(Completion(job.item_id, idx, self._text(choice), choice.get("finish_reason") or "",
                            usage.get("prompt_tokens", 0), completion_tokens, top_logprobs=self._top_logprobs(choice)))
        # A server that ignores `n` answers once: the other samples go as their own seeded requests.
        for idx in job.sample_indices[len(choices):]:
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
            await asyncio.sleep(self._first_wait(first_failure))
        attempts = self.settings.max_retries + 1
        backoff = wait_random_exponential(multiplier=0.5, max=30)

        def wait(state: Any) -> float:
            error = state.outcome.exception()
            return error.retry_after if getattr(error, "retry_after", None) is not None else backoff(state)

        retrying = AsyncRetrying(retry=retry_if_exception_type(RetryableError), wait=wait,
                                 stop=stop_after_attempt(attempts - 1), reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._post(session, body, rpm, tpm)
        except RetryableError as exc:
            raise RetryableError(f"gave up after {attempts} attempt(s): {exc}") from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    @staticmethod
    def _first_wait(error: RetryableError) -> float:
        """Retry-After when the server named one, else the first step of the jittered backoff."""
        return error.retry_after if error.retry_after is not None else random.uniform(0, 0.5)

    async def _post(self, session: Any, body: dict[str, Any], rpm: Any, tpm: Any) -> dict[str, Any]:
        if rpm is not None:
            await rpm.acquire()
        if tpm is not None:
            await tpm.acquire(min(self._token_estimate(body), tpm.max_rate))
        try:
            async with session.post(self.url, data=json.dumps(body),
                                    headers={"Content-Type": "application/json"}) as response:
                if response.status == 200:
                    payload = await response.read()
                    try:
                        return json.loads(payload)
                    except ValueError as exc:  # a body cut short: the answer never fully arrived
                        raise RetryableError(f"invalid JSON in a 200 answer ({len(payload)} bytes)") from exc
                text = (await response.text())[:300]
                message = f"HTTP {response.status}: {text}"
                if response.status in RETRYABLE_STATUS:
                    raise RetryableError(message, retry_after_seconds(response.headers.get("Retry-After")))
                if response.status in FATAL_STATUS:
                    raise BackendError(f"{self.url} answered {message}; check --base-url, --model and the key in "
                                       f"${self.settings.api_key_env}")
                raise RequestFailed(message)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc

    def _token_estimate(self, body: dict[str, Any]) -> int:
        prompt = body.get("prompt") or "".join(m["content"] for m in body.get("messages", []))
        return len(prompt) // CHARS_PER_TOKEN + body["max_tokens"] * body.get("n", 1)

    def close(self) -> None:
        """Nothing to release: each `generate` call opens and closes its own session."""
