"""(a) Engine overhead: judgments/s through render → parse → store → aggregate, with an in-process
zero-latency backend, so the figure is the engine's own cost (target: >= 20,000 items/s).

    python benchmarks/engine_overhead.py --items 100000 --runs 3 [--chunk-size 1024]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import ZeroLatencyBackend, cpu_ticks, machine, median_of, now, steal_fraction, write_problems

import curate.engine
from curate.config import RunConfig

DEFAULT_CHUNK_SIZE = RunConfig.__dataclass_fields__["chunk_size"].default


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--template", default="difficulty/intensity")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                        help=f"judgments per store transaction (default: curate's own, {DEFAULT_CHUNK_SIZE})")
    args = parser.parse_args()
    ticks = cpu_ticks()
    work = Path(tempfile.mkdtemp(prefix="dereason-bench-"))
    data = write_problems(work / "problems.jsonl", args.items)
    phases: dict[str, float] = {}

    def timed(name: str, function):  # noqa: ANN001, ANN202
        def wrapper(*a, **k):  # noqa: ANN002, ANN003, ANN202
            start = now()
            try:
                return function(*a, **k)
            finally:
                phases[name] = phases.get(name, 0.0) + now() - start
        return wrapper

    curate.engine.load_items = timed("load + validate input", curate.engine.load_items)
    curate.engine._request_missing = timed("render + parse + store", curate.engine._request_missing)
    curate.engine.write_aggregates = timed("aggregate + write", curate.engine.write_aggregates)

    def measure(run: int) -> float:
        out = work / f"run{run}"
        config = RunConfig.from_flat({"source": str(data), "out": str(out), "template": args.template,
                                        "chunk_size": args.chunk_size})
        start = now()
        result = curate.engine.score(config, backend=ZeroLatencyBackend())
        elapsed = now() - start
        assert result.summary["status_counts"]["ok"] == args.items
        shutil.rmtree(out)
        return args.items / elapsed

    rate, rates = median_of(args.runs, measure)
    print(f"machine: {machine()}")
    print(f"items: {args.items}, template: {args.template}, chunk size: {args.chunk_size}, runs: {args.runs}")
    print(f"whole `score` call (input to aggregates): median {rate:,.0f} items/s; runs {[round(r) for r in rates]}")
    for name, seconds in phases.items():
        print(f"  {name}: {seconds / args.runs:.2f} s per run ({args.items * args.runs / seconds:,.0f} items/s)")
    print(f"CPU steal during the benchmark (time the VM host took): {steal_fraction(ticks, cpu_ticks()):.0%}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
