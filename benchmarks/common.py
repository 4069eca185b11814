"""Shared pieces of the benchmarks: synthetic problem files, a zero-latency backend, the scripted endpoint in its
own process, timing."""

from __future__ import annotations

import json
import platform
import signal
import socket
import statistics
import subprocess
import sys
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Endpoint:
    """The scripted endpoint in a subprocess; on exit, its (arrival, answer) log."""

    def __init__(self, latency: float, log: Path):
        self.port, self.log = free_port(), log
        self.process = subprocess.Popen([sys.executable, "-m", "curate.testing", "--port", str(self.port),
                                         "--latency", str(latency), "--log", str(log)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("endpoint did not start")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> list[tuple[float, float]]:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        return json.loads(self.log.read_text())


def served_rate(log: list[tuple[float, float]]) -> float:
    first_arrival = min(a for a, _ in log)
    last_answer = max(b for _, b in log)
    return len(log) / (last_answer - first_arrival)
