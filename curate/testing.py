"""Test and benchmark helpers: tiny models built offline, and a scriptable OpenAI-compatible endpoint.

Tiny models: `build_random_qwen2` trains a small BPE tokenizer with `tokenizers` and saves a ~100k
parameter Qwen2 with random weights and a ChatML template; nothing is downloaded.

The endpoint, `FakeOpenAIServer`, has no model behind it.
It answers `/v1/chat/completions` after a fixed latency with a deterministic score per prompt, and
injects faults on request (each fault hits a chosen fraction of prompts):
- on a prompt's first attempt only, so retries succeed (`fail_attempts` makes them persist for
  more attempts): 429 with Retry-After, 500, a hang past the client's timeout, a dropped connection,
  a 200 with no choices, a 200 whose JSON is an array, a 500 whose body is not UTF-8;
- always: truncated or unparseable answers, a choice without a message, a null content, no or an
  unknown finish_reason, no usage, logprobs of the wrong shape, a 400 saying the prompt is
  longer than the model's context (vLLM's words), and a 400 quoting the request's Authorization header.
A wrong key (`require_key`) is answered 401 with the key quoted, as OpenAI's API does.
It logs every request's arrival and answer
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
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(corpus: list[str], vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>",
                                      pad_token="<|endoftext|>")
    wrapped.chat_template = CHATML
    return wrapped


def build_random_qwen2(directory: Path, corpus: list[str], seed: int = 0, **shape: int) -> Path:
    """A ~100k-parameter Qwen2 with random weights: its answers are noise, which tests need too. `shape` overrides
    Qwen2Config's sizes (vLLM's CPU attention wants heads of 32 dimensions or more)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer(corpus)
    sizes = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 1024, **shape}
    config = Qwen2Config(vocab_size=len(tokenizer), tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **sizes)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


TRANSIENT_FAULTS = ("rate_limit", "server_error", "hang", "drop", "empty_choices", "not_an_object",
                    "undecodable_error")
FAULTS = (*TRANSIENT_FAULTS, "truncate", "unparseable", "no_message", "null_content", "no_finish_reason",
          "content_filter", "no_usage", "bad_logprobs", "context_exceeded", "echo_key")
CONTEXT_EXCEEDED = ("This model's maximum context length is 2048 tokens. However, you requested 9606 tokens "
                    "(9094 in the messages, 512 in the completion). Please reduce the length of the messages "
                    "or completion.")


@dataclass
class FakeOpenAIServer:
    latency: float = 0.0
    faults: dict[str, float] = field(default_factory=dict)  # fault → fraction of prompts it hits
    retry_after: float = 1.0
    hang_seconds: float = 30.0
    # "tagged": "... <score>k</score>"; "digit": "k"; "boxed": "... \\boxed{k}"; "verdict": an equivalence judge
    # (prompts/verify/equivalence): "Yes." when the candidate answer and the reference are the same number
    answer_format: str = "tagged"
    fail_attempts: int = 1  # transport faults hit a prompt's first this-many attempts
    honour_n: bool = True  # False: answer one choice whatever `n` asks, as `transformers serve` does
    require_key: str | None = None  # answer 401 unless "Authorization: Bearer <key>"
    host: str = "127.0.0.1"
    port: int = 0
    log: list[tuple[float, float]] = field(default_factory=list)  # (arrival, answer) per request
    attempts: Counter = field(default_factory=Counter)  # prompt key → requests seen
    arrivals: dict[str, list[float]] = field(default_factory=dict)  # prompt key → arrival times
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[dict] = field(default_factory=list)  # every request body, in arrival order

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
        prompt = body.get("messages", body.get("prompt"))
        return hashlib.sha256(json.dumps([prompt, body.get("seed")]).encode()).hexdigest()[:16]

    @staticmethod
    def score_for(key: str) -> int:
        return int(key, 16) % 5 + 1

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        """Chat and legacy completions alike: the body's `messages` or `prompt` picks the shape."""
        arrival = time.monotonic()
        self.seen_headers.append(dict(request.headers))
        given = request.headers.get("Authorization", "")
        if self.require_key is not None and given != f"Bearer {self.require_key}":  # in OpenAI's words, key and all
            return web.json_response({"error": {"message": f"Incorrect API key provided: {given[7:]}."}}, status=401)
        body = await request.json()
        self.bodies.append(body)
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
        if failing and self.hits("empty_choices", key):
            return web.json_response({"id": key, "object": "chat.completion", "choices": []})
        if failing and self.hits("not_an_object", key):
            return web.json_response([])
        if failing and self.hits("undecodable_error", key):
            return web.Response(status=500, body=b"upstream \xff\xfe failed", content_type="text/plain")
        if self.hits("echo_key", key):  # a proxy that quotes the request's header back
            return web.json_response({"error": {"message": f"quota exceeded for this project; your key was {given}"}},
                                     status=400)
        if self.hits("context_exceeded", key):
            return web.json_response({"object": "error", "message": CONTEXT_EXCEEDED, "type": "BadRequestError",
                                      "param": None, "code": 400}, status=400)
        score = self.score_for(key)
        text = (_equivalence_verdict(body) if self.answer_format == "verdict"
                else ANSWERS[self.answer_format].format(score=score))
        finish = "stop"
        if self.hits("truncate", key):
            text, finish = "Needs several steps and then", "length"
        elif self.hits("unparseable", key):
            text = "I would rather not say."
        if self.hits("no_finish_reason", key):
            finish = None
        elif self.hits("content_filter", key):
            finish = "content_filter"
        n = body.get("n", 1) if self.honour_n else 1
        chat = "messages" in body
        content = None if self.hits("null_content", key) else text
        choices = [{"index": i, "finish_reason": finish,
                    **({"message": {"role": "assistant", "content": content}} if chat else {"text": content})}
                   for i in range(n)]
        if self.hits("no_message", key):
            for choice in choices:
                choice.pop("message", None)
        if body.get("logprobs") and self.hits("bad_logprobs", key):
            for choice in choices:  # the alternatives lack their logprobs
                choice["logprobs"] = {"content": [{"token": text, "top_logprobs": [{"token": text}]}]}
        elif body.get("logprobs"):
            for choice in choices:
                choice["logprobs"] = _logprobs(text, score, chat)
        answer = {"id": key, "object": "chat.completion", "model": body.get("model"), "choices": choices,
                  "usage": {"prompt_tokens": 10, "completion_tokens": 5 * n, "total_tokens": 10 + 5 * n}}
        if self.hits("no_usage", key):
            del answer["usage"]
        self.log.append((arrival, time.monotonic()))
        return web.json_response(answer)

    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_post("/v1/chat/completions", self._chat)
        application.router.add_post("/v1/completions", self._chat)
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


ANSWERS = {"tagged": "Needs {score} steps. <score>{score}</score>", "digit": "{score}",
           "boxed": "Adding up the steps gives {score}.\n\\boxed{{{score}}}"}


def _equivalence_verdict(body: dict) -> str:
    prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
    found = dict(re.findall(r"^(Reference|Candidate) answer: (.*)$", prompt, re.MULTILINE))
    try:
        same = float(found["Reference"]) == float(found["Candidate"])
    except (KeyError, ValueError):
        same = False
    return "Yes." if same else "No."


def _logprobs(text: str, score: int, chat: bool) -> dict:
    """Per-token logprobs of an answer, in the chat or the legacy completions shape. The answer's last digit (its
    score) has the score at 0.7, its neighbour at 0.2 and a non-score token at 0.1; every other token, a
    rationale's digits included, is certain of itself, so reading the wrong position gives another distribution."""
    pieces = re.findall(r"</?score>|\d|[^<\d]+|<", text)
    last_digit = max((i for i, piece in enumerate(pieces) if piece.isdigit()), default=None)
    positions = [[(str(score), 0.7), (str(score % 5 + 1), 0.2), ("The", 0.1)] if i == last_digit else [(piece, 1.0)]
                 for i, piece in enumerate(pieces)]
    if not chat:
        return {"tokens": pieces, "top_logprobs": [{t: math.log(p) for t, p in alts} for alts in positions]}
    return {"content": [{"token": piece, "logprob": math.log(dict(alts).get(piece, 0.7)),
                         "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in alts]}
                        for piece, alts in zip(pieces, positions, strict=True)]}


if __name__ == "__main__":
    main()
