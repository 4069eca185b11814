"""An in-process backend whose answers a test scripts: the engine's mock transport."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from curate.backends import Completion, Request
from curate.config import SamplingConfig

Answer = tuple[str, str] | Exception  # (text, finish_reason), or an error for that sample


class ScriptedBackend:
    name = "scripted"
    model_id = "scripted"

    def __init__(self, answer: Callable[[str, int], Answer]):
        self.answer = answer
        self.requested: list[tuple[str, int]] = []
        self.calls = 0

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> Iterator[Completion]:
        self.calls += 1
        for request in requests:
            for idx in request.sample_indices:
                self.requested.append((request.item_id, idx))
                outcome = self.answer(request.item_id, idx)
                if isinstance(outcome, Exception):
                    yield Completion(request.item_id, idx, "", "", 10, 0, error=str(outcome))
                else:
                    text, finish = outcome
                    yield Completion(request.item_id, idx, text, finish, 10, len(text))

    def close(self) -> None:
        pass
