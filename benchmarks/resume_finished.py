"""(d) Resuming a finished run: the same command again must make 0 model calls, in under 5 s,
for a 100,000-item run.

    python benchmarks/resume_finished.py --items 100000 [--chunk-size 1024]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import ZeroLatencyBackend, cpu_ticks, machine, now, steal_fraction, write_problems

from curate.config import RunConfig

DEFAULT_CHUNK_SIZE = RunConfig.__dataclass_fields__["chunk_size"].default
from curate.engine import score


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                        help=f"judgments per store transaction (default: curate's own, {DEFAULT_CHUNK_SIZE})")
    args = parser.parse_args()
    ticks = cpu_ticks()
    work = Path(tempfile.mkdtemp(prefix="dereason-bench-"))
    config = RunConfig.from_flat({"source": str(write_problems(work / "problems.jsonl", args.items)),
                                    "out": str(work / "run"), "template": "difficulty/intensity",
                                    "chunk_size": args.chunk_size})
    start = now()
    score(config, backend=ZeroLatencyBackend())
    first = now() - start
    resumed_backend = ZeroLatencyBackend()
    start = now()
    result = score(config, backend=resumed_backend)
    resumed = now() - start
    print(f"machine: {machine()}")
    print(f"items: {args.items}, chunk size: {args.chunk_size}; first run {first:.1f} s")
    print(f"resume of the finished run: {resumed:.2f} s, backend calls {resumed_backend.calls}, "
          f"judgments requested {result.requested}")
    print(f"CPU steal during the benchmark (time the VM host took): {steal_fraction(ticks, cpu_ticks()):.0%}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
