"""(i) 10M judgments: each phase's wall time and peak memory on a synthetic score run of ITEMS × SAMPLES judgments
(targets at 2M × 5: per_item aggregation <= 5 s, `curate stats` <= 30 s, `curate split` <= 30 s, peak memory <= 8 GiB).

    python benchmarks/ten_million.py --items 2000000 --samples 5

The run is built the way `curate score` builds one, through the library's own pieces (engine.run_identity,
RunStore.open, items.parquet, invocations.jsonl, ScoreTask.records parsing each answer, RunStore.append a chunk per
transaction), with answers made up in process instead of a backend's. Each phase then runs in a fresh process, under
/usr/bin/time -v for its peak RSS:

  build       write the problems, load + validate them, render nothing, append every judgment
  read        curate.load_judgments(run): every column, as a user reads a run
  aggregate   engine.write_aggregates: read the aggregated columns, ScoreTask.aggregate, write per_item/summary
  stats       curate stats RUN --json            (the CLI)
  stats --resamples 0   the same without the bootstrap intervals (what the statistics cost without resampling)
  split       curate split RUN --out DIR --quantile 0.4   (the CLI)

Each phase runs under an address-space cap (--memory-cap-gib, default 16) and a wall-clock limit (--timeout), so a
phase that would take the shared machine's memory fails alone, and is reported as failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from common import cpu_ticks, machine, steal_fraction, write_problems

from curate.config import RunConfig

GIB = 1024 ** 3
TARGETS = {"aggregate": 5.0, "stats": 30.0, "split": 30.0}  # seconds, at 2M items × 5 samples
MEMORY_TARGET = 8 * GIB
DEFAULT_CHUNK_SIZE = RunConfig.__dataclass_fields__["chunk_size"].default


def _config(work: Path, args: argparse.Namespace) -> RunConfig:
    return RunConfig.from_flat({"source": str(work / "problems.jsonl"), "out": str(work / "run"),
                                "template": "difficulty/intensity", "samples": args.samples, "temperature": 1.0,
                                "chunk_size": args.chunk_size})


def _answers(item_ids: list[str], samples: int, start: int):
    """A judge's answers: each item has a difficulty 1-5, each sample lands on it or a neighbour; 1 in 200 answers
    names no score (a parse failure, stored as such)."""
    from curate.backends import Completion

    for offset, item_id in enumerate(item_ids):
        level = (start + offset) * 7919 % 5 + 1
        for idx in range(samples):
            draw = (start + offset) * 31 + idx * 17
            if draw % 200 == 0:
                yield Completion(item_id, idx, "I cannot tell how hard this is.", "stop", 120, 9)
                continue
            score = min(5, max(1, level + (draw % 3) - 1))
            yield Completion(item_id, idx, f"Two routine steps. <score>{score}</score>", "stop", 120, 9)


def phase_build(work: Path, args: argparse.Namespace) -> dict:
    from curate import __version__, engine
    from curate.data.items import load_items
    from curate.files import append_jsonl, write_parquet_atomic
    from curate.store import ITEMS, RunStore
    from curate.templates import load_template

    started = time.perf_counter()
    write_problems(work / "problems.jsonl", args.items)
    written = time.perf_counter()
    config = _config(work, args)
    loaded = load_items(config.data)
    template = load_template(config.template, config.template_dir)
    task = engine.score_task(config, template, ExitStack())
    identity = engine.run_identity(config, loaded.items, template, task)
    manifest_extra = {"dereason_version": __version__, "created_at": time.time(), "source": loaded.source,
                      "config": config.to_flat()}
    item_ids = loaded.items["id"].to_list()
    rows = {item_id: {"item_id": item_id} for item_id in item_ids[:1]}  # a score task reads no item field
    loaded_at = time.perf_counter()
    records_seconds = append_seconds = 0.0
    with RunStore.open(config.out_path, identity, manifest_extra, task.record_type) as store:
        write_parquet_atomic(loaded.items, config.out_path / ITEMS)
        append_jsonl(config.out_path / "invocations.jsonl",
                     {"started_at": time.time(), "dereason_version": __version__, "config": config.to_flat()})
        buffer = []
        row = next(iter(rows.values()))
        for completion in _answers(item_ids, args.samples, 0):
            buffer.append(completion)
            if len(buffer) >= args.chunk_size:
                t0 = time.perf_counter()
                records = task.records(buffer, [row] * len(buffer))
                t1 = time.perf_counter()
                store.append(records)
                append_seconds += time.perf_counter() - t1
                records_seconds += t1 - t0
                buffer.clear()
        if buffer:
            store.append(task.records(buffer, [row] * len(buffer)))
    done = time.perf_counter()
    judgments = args.items * args.samples
    return {"write problems": written - started, "load + validate items": loaded_at - written,
            "answers + parse (ScoreTask.records)": records_seconds, "RunStore.append (SQLite)": append_seconds,
            "append loop in all": done - loaded_at, "judgments per s (append loop)": judgments / (done - loaded_at),
            "judgments per s (RunStore.append alone)": judgments / append_seconds,
            "database bytes": sum(p.stat().st_size for p in config.out_path.glob("judgments.sqlite*"))}


def phase_read(work: Path, args: argparse.Namespace) -> dict:
    import curate

    started = time.perf_counter()
    frame = curate.load_judgments(work / "run")
    return {"load_judgments": time.perf_counter() - started, "rows": frame.height,
            "frame bytes": frame.estimated_size()}


def phase_aggregate(work: Path, args: argparse.Namespace) -> dict:
    """What the engine does after every invocation, timed inside: the read of the aggregated columns, the task's
    aggregate, and the rest (writing per_item.parquet and summary.json)."""
    from curate import engine
    from curate.templates import load_template

    config = _config(work, args)
    task = engine.score_task(config, load_template(config.template, config.template_dir), ExitStack())
    seconds: dict[str, float] = {}

    def timed(name: str, function):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                seconds[name] = time.perf_counter() - start
        return wrapper

    engine.read_judgments = timed("read aggregated columns (SQLite → polars)", engine.read_judgments)
    object.__setattr__(task, "aggregate", timed("ScoreTask.aggregate (per_item + summary)", task.aggregate))
    started = time.perf_counter()
    _, per_item = engine.write_aggregates(work / "run", task, requested=0)
    whole = time.perf_counter() - started
    return {**seconds, "write_aggregates in all (read + aggregate + write)": whole,
            "write per_item.parquet + summary.json": whole - sum(seconds.values()), "items": per_item.height}


PHASES = {"build": phase_build, "read": phase_read, "aggregate": phase_aggregate}


def _error_line(stderr: str) -> str:
    """The exception a failed phase ended with, its wrapped lines joined (the CLI's one red line otherwise)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("\t")
             and not line.startswith("Command exited")]
    starts = [i for i, line in enumerate(lines) if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    return " ".join(lines[starts[-1]:]) if starts else (lines[-1] if lines else "")


def _timed(command: list[str], log: Path, memory_cap: int, timeout: float) -> dict:
    """Wall time and peak RSS of a fresh process, from /usr/bin/time -v; `failed` says why it did not finish."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))

    started = time.perf_counter()
    try:
        result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, timeout=timeout, check=False,
                                preexec_fn=cap, env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
                                    str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")]))})
    except subprocess.TimeoutExpired as exc:
        log.write_text(f"{exc.stdout or ''}\n--- stderr ---\n{exc.stderr or ''}")
        return {"wall": time.perf_counter() - started, "peak_rss": None, "stdout": "",
                "failed": f"stopped after the {timeout:.0f} s limit"}
    wall = time.perf_counter() - started
    log.write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    failed = None
    if result.returncode:
        failed = f"exit {result.returncode}: {_error_line(result.stderr)} (see {log})"
    return {"wall": wall, "peak_rss": peak_kib * 1024, "stdout": result.stdout, "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=2_000_000)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                        help=f"judgments per store transaction (default: curate's own, {DEFAULT_CHUNK_SIZE})")
    parser.add_argument("--work", type=Path, help="folder for the run (default: a new temporary one, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--memory-cap-gib", type=float, default=16.0,
                        help="address-space limit of each phase's process (keeps a shared machine alive)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds each phase may run")
    parser.add_argument("--only", nargs="+", help="run only these phases (on a run --work already holds)")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)  # one phase, in this process
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](args.work, args)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="dereason-10m-"))
    work.mkdir(parents=True, exist_ok=True)
    ticks, load_before = cpu_ticks(), os.getloadavg()
    print(f"machine: {machine()}; items {args.items:,} × samples {args.samples} = "
          f"{args.items * args.samples:,} judgments; chunk size {args.chunk_size}; work {work}", flush=True)
    script = [sys.executable, str(Path(__file__).resolve()), "--items", str(args.items), "--samples",
              str(args.samples), "--chunk-size", str(args.chunk_size), "--work", str(work)]
    curate_cli = [sys.executable, "-m", "curate.cli"]
    commands = {name: [*script, "--phase", name] for name in PHASES}
    commands["stats"] = [*curate_cli, "stats", str(work / "run"), "--json"]
    commands["stats --resamples 0"] = [*curate_cli, "stats", str(work / "run"), "--json", "--resamples", "0"]
    commands["split"] = [*curate_cli, "split", str(work / "run"), "--out", str(work / "split"), "--quantile", "0.4"]
    for name, command in commands.items():
        if args.only and name not in args.only:
            continue
        if name == "split":
            shutil.rmtree(work / "split", ignore_errors=True)
        measured = _timed(command, work / f"{name.replace(' ', '_')}.log", int(args.memory_cap_gib * GIB),
                          args.timeout)
        if measured["failed"]:
            peak = "" if measured["peak_rss"] is None else f", peak RSS {measured['peak_rss'] / GIB:.2f} GiB"
            print(f"{name}: FAILED after {measured['wall']:.1f} s{peak}: {measured['failed']}", flush=True)
            continue
        target = TARGETS.get(name.split()[0])
        verdict = "" if target is None else (f"; target {target:.0f} s: " + (
            "met" if measured["wall"] <= target else f"missed by {measured['wall'] - target:.1f} s "
                                                     f"({measured['wall'] / target:.1f}×)"))
        memory = measured["peak_rss"] / GIB
        print(f"{name}: {measured['wall']:.1f} s, peak RSS {memory:.2f} GiB "
              f"({'within' if measured['peak_rss'] <= MEMORY_TARGET else 'over'} 8 GiB){verdict}", flush=True)
        if name in PHASES:
            for key, value in json.loads(measured["stdout"].splitlines()[-1]).items():
                print(f"  {key}: {value:,.2f}" if isinstance(value, float) else f"  {key}: {value:,}", flush=True)
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; "
          f"CPU steal during the benchmark: {steal_fraction(ticks, cpu_ticks()):.0%}")
    if not (args.keep or args.work):
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
