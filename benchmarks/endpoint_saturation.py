"""(b) Endpoint saturation: how close the OpenAI-compatible backend keeps a server to its Little's-law
bound (concurrency / latency), timed from the endpoint's own log, first request to last answer.

The endpoint is `curate.testing` in its own process with a fixed latency. The same run measures a
plain asyncio client on the official `openai` SDK (semaphore of the same size) for comparison.
Target: >= 0.90 of the bound at concurrency 64, latency 100 ms, on 2 cores.

    python benchmarks/endpoint_saturation.py --items 2000 --concurrency 64 --latency 0.1 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import (
    Endpoint,
    cpu_ticks,
    machine,
    median_of,
    served_rate,
    steal_fraction,
    write_problems,
)

from curate.config import RunConfig
from curate.engine import score


def run_engine(base_url: str, data: Path, out: Path, concurrency: int) -> None:
    config = RunConfig.from_flat({"source": str(data), "out": str(out), "backend": "openai", "base_url": base_url,
                                    "model": "judge", "template": "difficulty/intensity", "max_in_flight": concurrency,
                                    "chunk_size": 256})
    result = score(config)
    assert result.summary["status_counts"]["ok"] == result.summary["judgments"]


def run_official_sdk(base_url: str, data: Path, concurrency: int) -> None:
    from openai import AsyncOpenAI

    from curate.templates import load_template

    template = load_template("difficulty/intensity")
    rows = [json.loads(line) for line in data.read_text().splitlines()]

    async def main() -> None:
        client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
        slots = asyncio.Semaphore(concurrency)

        async def one(row: dict) -> None:
            async with slots:
                await client.chat.completions.create(
                    model="judge", messages=template.render({"id": row["id"], "question": row["question"]}),
                    max_tokens=512, temperature=0.0)

        await asyncio.gather(*(one(row) for row in rows))
        await client.close()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dereason-bench-"))
    data = write_problems(work / "problems.jsonl", args.items)
    bound = args.concurrency / args.latency

    cpu_per_request: dict[str, list[float]] = {"dereason": [], "openai-sdk": []}
    steal: dict[str, list[float]] = {"dereason": [], "openai-sdk": []}

    def measure(client: str):
        def one_run(run: int) -> float:
            endpoint = Endpoint(args.latency, work / f"{client}-{run}.json")
            cpu_start = time.process_time()  # this process only: the endpoint is another process
            ticks = cpu_ticks()
            try:
                if client == "dereason":
                    run_engine(endpoint.base_url, data, work / f"run-{run}", args.concurrency)
                else:
                    run_official_sdk(endpoint.base_url, data, args.concurrency)
                cpu_per_request[client].append((time.process_time() - cpu_start) / args.items)
                steal[client].append(steal_fraction(ticks, cpu_ticks()))
            finally:
                log = endpoint.stop()
            assert len(log) == args.items, f"{client}: {len(log)} answers for {args.items} items"
            return served_rate(log)
        return one_run

    print(f"machine: {machine()}")
    print(f"items {args.items}, concurrency {args.concurrency}, latency {args.latency * 1000:.0f} ms, "
          f"bound {bound:.0f} items/s, median of {args.runs} runs (server-side window)")
    for client in ("dereason", "openai-sdk"):
        rate, rates = median_of(args.runs, measure(client))
        cpu_ms = 1000 * statistics.median(cpu_per_request[client])
        print(f"  {client:11s} {rate:7.1f} items/s = {rate / bound:.2f} of the bound; runs {[round(r) for r in rates]}; "
              f"client CPU {cpu_ms:.2f} ms per request (whole process: render, HTTP, parse, store); "
              f"CPU steal per run {[f'{x:.0%}' for x in steal[client]]}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
