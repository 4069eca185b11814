"""Shared pieces of the benchmarks: synthetic problem files, a zero-latency backend, timing."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from curate.backends import Completion, Request
from curate.config import SamplingConfig


def write_problems(path: Path, n: int) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            out.write(json.dumps({"id": f"q{i}", "question": f"Problem {i}: find every real x with x^2 - {i}x + 1 = 0."})
                      + "\n")
    return path


class ZeroLatencyBackend:
    """Answers at once, in process: what remains is the engine's own cost."""

    name = "zero-latency"
    model_id = "zero-latency"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, requests: Iterable[Request], sampling: SamplingConfig) -> Iterator[Completion]:
        self.calls += 1
        for request in requests:
            for idx in request.sample_indices:
                yield Completion(request.item_id, idx, "Two routine steps. <score>2</score>", "stop", 120, 9)

    def close(self) -> None:
        pass


def median_of(runs: int, measure: Callable[[int], float]) -> tuple[float, list[float]]:
    values = [measure(run) for run in range(runs)]
    return statistics.median(values), values


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def now() -> float:
    return time.perf_counter()


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) jiffies from /proc/stat: on a shared VM, time the host took from this machine."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[7], sum(fields)


def steal_fraction(start: tuple[int, int], end: tuple[int, int]) -> float:
    return (end[0] - start[0]) / max(end[1] - start[1], 1)
