"""A scriptable OpenAI-compatible chat endpoint for tests and benchmarks (no model behind it).

It answers `/v1/chat/completions` after a fixed latency with a deterministic score per prompt, and
injects faults on request: 429 with Retry-After, 500, a hang past the client's timeout, a dropped
connection (each on a request's first attempt only, so retries succeed), and truncated or
unparseable answers (always, for the chosen prompts); `fail_attempts` makes transport faults
persist for more attempts. It logs every request's arrival and answer
time, and counts attempts per prompt, so tests can assert exact counts and benchmarks can time the
server side. Run it in-process (`FakeOpenAIServer(...).start()`) or as its own process:

    python -m curate.testing --port 8123 --latency 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

FAULTS = ("rate_limit", "server_error", "hang", "drop", "truncate", "unparseable")


@dataclass
class FakeOpenAIServer:
    latency: float = 0.0
    faults: dict[str, float] = field(default_factory=dict)  # fault → fraction of prompts it hits
    retry_after: float = 1.0
    hang_seconds: float = 30.0
    answer_format: str = "tagged"  # "tagged": "... <score>k</score>"; "digit": "k"
    fail_attempts: int = 1  # transport faults hit a prompt's first this-many attempts
    honour_n: bool = True  # False: answer one choice whatever `n` asks, as `transformers serve` does
    require_key: str | None = None  # answer 401 unless "Authorization: Bearer <key>"
    host: str = "127.0.0.1"
    port: int = 0
    log: list[tuple[float, float]] = field(default_factory=list)  # (arrival, answer) per request
    attempts: Counter = field(default_factory=Counter)  # prompt key → requests seen
    arrivals: dict[str, list[float]] = field(default_factory=dict)  # prompt key → arrival times
    seen_headers: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {FAULTS}")
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def hits(self, fault: str, key: str) -> bool:
        """Whether a prompt is among the `faults[fault]` fraction chosen for this fault."""
        digest = hashlib.sha256(f"{fault}\x1f{key}".encode()).digest()
        return int.from_bytes(digest[:4], "little") / 2**32 < self.faults.get(fault, 0.0)

    @staticmethod
    def key(body: dict) -> str:
        return hashlib.sha256(json.dumps([body.get("messages"), body.get("seed")]).encode()).hexdigest()[:16]

    @staticmethod
    def score_for(key: str) -> int:
        return int(key, 16) % 5 + 1

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        arrival = time.monotonic()
        self.seen_headers.append(dict(request.headers))
        if self.require_key is not None and request.headers.get("Authorization") != f"Bearer {self.require_key}":
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        body = await request.json()
        key = self.key(body)
        self.attempts[key] += 1
        self.arrivals.setdefault(key, []).append(arrival)
        failing = self.attempts[key] <= self.fail_attempts
        await asyncio.sleep(self.latency)
        if failing and self.hits("rate_limit", key):
            return web.json_response({"error": {"message": "rate limited"}}, status=429,
                                     headers={"Retry-After": f"{self.retry_after:g}"})
        if failing and self.hits("server_error", key):
            return web.json_response({"error": {"message": "internal error"}}, status=500)
        if failing and self.hits("hang", key):
            await asyncio.sleep(self.hang_seconds)
        if failing and self.hits("drop", key):
            request.transport.close()  # the client sees the connection drop with no answer
            raise asyncio.CancelledError
        score = self.score_for(key)
        text = f"Needs {score} steps. <score>{score}</score>" if self.answer_format == "tagged" else str(score)
        finish = "stop"
        if self.hits("truncate", key):
            text, finish = "Needs several steps and then", "length"
        elif self.hits("unparseable", key):
            text = "I would rather not say."
        n = body.get("n", 1) if self.honour_n else 1
        choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                   for i in range(n)]
        if body.get("logprobs") and self.answer_format == "digit":
            # the answer's digit at 0.7, its neighbour at 0.2, a non-score token at 0.1
            alternatives = [(str(score), 0.7), (str(score % 5 + 1), 0.2), ("The", 0.1)]
            first = {"token": str(score), "logprob": math.log(0.7),
                     "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in alternatives]}
            for choice in choices:
                choice["logprobs"] = {"content": [first]}
        self.log.append((arrival, time.monotonic()))
        return web.json_response({"id": key, "object": "chat.completion", "model": body.get("model"),
                                  "choices": choices,
                                  "usage": {"prompt_tokens": 10, "completion_tokens": 5 * n, "total_tokens": 10 + 5 * n}})

    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_post("/v1/chat/completions", self._chat)
        return application

    async def serve(self) -> None:
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the port the OS chose for port 0
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve()), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--answer-format", choices=("tagged", "digit"), default="tagged")
    parser.add_argument("--log", help="write (arrival, answer) times as JSON here on SIGTERM/SIGINT")
    args = parser.parse_args()
    server = FakeOpenAIServer(latency=args.latency, answer_format=args.answer_format, port=args.port)

    async def run() -> None:
        import signal

        task = asyncio.create_task(server.serve())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: server._stop.set())
        await task

    asyncio.run(run())
    if args.log:
        with open(args.log, "w", encoding="utf-8") as out:
            json.dump(server.log, out)


if __name__ == "__main__":
    main()
