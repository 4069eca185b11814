"""Calls into a worker process, each bounded in time: a call that overruns kills its worker.

Why a process: sympy can spend minutes in one call (`10^{10^{10}}`), and a thread cannot be stopped; math-verify's
own bound (SIGALRM) works only in a main thread and turns a timeout into a silent False. A worker is a plain
`python -c` subprocess (not multiprocessing, which would re-run an unguarded user script in the child) that
imports one function and answers JSON lines on its stdout; anything else it prints goes nowhere. `WorkerPool.call`
works from any thread: up to `size` workers serve concurrent callers, each started on first need (its start,
about a second to import sympy, is not counted against the call's bound) and kept until it overruns.
POSIX only, like curate.store's locks.
"""

from __future__ import annotations

import atexit
import importlib
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

_STARTUP_TIMEOUT_S = 120.0  # importing sympy on a busy two-core machine
_ORPHAN_GRACE_S = 5  # a worker whose caller died stops itself this long after the call's bound
_SERVE = "from curate.verify.isolated import serve; serve()"


class WorkerFailed(RuntimeError):
    """The worker could not start, died, or its function raised; the message says which."""


class _Worker:
    def __init__(self, module: str, function: str):
        self._process = subprocess.Popen([sys.executable, "-c", _SERVE, module, function], env=_environment(),
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._process.stdout, selectors.EVENT_READ)
        self._buffer = b""
        try:
            ready = self._reply(_STARTUP_TIMEOUT_S)
        except WorkerFailed as exc:
            ready = {"error": str(exc)}
        if ready is None or "error" in ready:
            self.kill()
            raise WorkerFailed(f"the worker for {module}.{function} cannot start: "
                               f"{ready['error'] if ready else f'no answer in {_STARTUP_TIMEOUT_S:g} s'}")

    def call(self, args: Sequence[Any], timeout_s: float) -> Any:
        """The function's result; raises TimeoutError (the worker is then dead) or WorkerFailed."""
        try:
            self._process.stdin.write(json.dumps({"args": list(args), "timeout_s": timeout_s}).encode() + b"\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            raise WorkerFailed(f"the worker exited with status {self._process.wait()}") from None
        reply = self._reply(timeout_s)
        if reply is None:
            raise TimeoutError(f"no answer in {timeout_s:g} s")
        if "error" in reply:
            raise WorkerFailed(reply["error"])
        return reply["result"]

    def _reply(self, timeout_s: float) -> dict | None:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                return None
            chunk = os.read(self._process.stdout.fileno(), 1 << 16)  # not .read(): it would wait for more
            if not chunk:
                raise WorkerFailed(f"the worker exited with status {self._process.wait()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def kill(self) -> None:
        self._process.kill()
        self._process.wait()
        self._selector.close()
        self._process.stdin.close()
        self._process.stdout.close()


def _environment() -> dict[str, str]:
    """This one, and where this process found curate when it was put on sys.path at run time (a source tree
    that is not installed), for the worker to import the same curate."""
    package_root = Path(__file__).resolve().parents[2]
    if package_root in {Path(entry).resolve() for entry in sys.path}:
        return dict(os.environ)  # the worker's own sys.path has it: prepending site-packages would shadow stdlib
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(package_root),
                                                                     os.environ.get("PYTHONPATH")]))}


class WorkerPool:
    """Workers that run `module.function(*args)`; the function must take and return JSON values."""

    def __init__(self, module: str, function: str, size: int):
        self._target = (module, function)
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        atexit.register(self.close)

    def call(self, args: Sequence[Any], timeout_s: float) -> Any:
        """Raises TimeoutError when the call overran `timeout_s` (its worker is killed) or WorkerFailed."""
        with self._slots:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            worker = worker or _Worker(*self._target)
            try:
                result = worker.call(args, timeout_s)
            except BaseException:  # an overrun, a dead worker, or the caller interrupted: never reuse it
                worker.kill()
                raise
            with self._lock:
                self._idle.append(worker)
            return result

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


def serve() -> None:
    """The worker's main loop (`python -c`, argv: module function): one JSON request per stdin line, one
    reply per stdout line."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a library's print() must not corrupt the replies
    try:
        function = getattr(importlib.import_module(sys.argv[1]), sys.argv[2])
    except Exception as exc:  # noqa: BLE001 - any failure to import is reported; the parent raises WorkerFailed
        _send(replies, {"error": f"{type(exc).__name__}: {exc}"})
        return
    _send(replies, {"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        signal.alarm(math.ceil(request["timeout_s"]) + _ORPHAN_GRACE_S)  # SIGALRM's default action ends us
        try:
            reply = {"result": function(*request["args"])}
        except Exception as exc:  # noqa: BLE001 - whatever the function raises goes back to the caller
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        signal.alarm(0)
        _send(replies, reply)


def _send(replies: TextIO, reply: dict) -> None:
    replies.write(json.dumps(reply) + "\n")
    replies.flush()
