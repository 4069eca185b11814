"""(h) The Ray executor against the scripted endpoint: items/s with 1, 2 and 4 actors as a fraction of the Little's-law
bound, beside one process at the same total concurrency.

Each actor holds one openai backend with --max-in-flight K, so a pool of A actors has A x K requests open at most:
the bound is A x K / latency. One process with --max-in-flight A x K has the same bound. The endpoint is
`curate.testing` in its own process with a fixed latency; rates are timed from its log, first request to last answer
(Ray's start and the actors' creation fall outside, and are reported apart as the whole call's wall time). One
local Ray (num_cpus = the machine's) serves every pool run; each actor reserves --actor-cpus.

    python benchmarks/ray_executor.py --items 4000 --in-flight 16 --latency 0.1 --actors 1 2 4 --runs 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import Endpoint, machine, served_rate, write_problems

from curate.config import RunConfig
from curate.engine import score


def run_once(data: Path, out: Path, endpoint: Endpoint, in_flight: int, actors: int | None, batch_size: int,
             actor_cpus: float) -> None:
    pool = {} if actors is None else {"executor": "ray", "ray_actors": actors, "ray_batch_size": batch_size,
                                      "ray_actor_cpus": actor_cpus}
    config = RunConfig.from_flat({"source": str(data), "out": str(out), "backend": "openai",
                                  "base_url": endpoint.base_url, "model": "judge", "template": "difficulty/intensity",
                                  "max_in_flight": in_flight, "chunk_size": 256, **pool})
    result = score(config)
    assert result.summary["status_counts"]["ok"] == result.summary["judgments"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--in-flight", type=int, default=16, help="--max-in-flight of each actor's client")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch-size", type=int, default=256, help="--ray-batch-size")
    parser.add_argument("--actor-cpus", type=float, default=0.25, help="--ray-actor-cpus")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="dereason-bench-"))
    data = write_problems(work / "problems.jsonl", args.items)
    started = time.perf_counter()
    ray.init(include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    print(f"machine: {machine()}")
    print(f"Ray {ray.__version__}: local, started in {time.perf_counter() - started:.1f} s; items {args.items}, "
          f"latency {args.latency * 1000:.0f} ms, {args.in_flight} in flight per actor, blocks of {args.batch_size}, "
          f"median of {args.runs} runs (server-side window)")
    try:
        for actors in args.actors:
            bound = actors * args.in_flight / args.latency
            for label, pool in ((f"ray, {actors} actor(s)", actors), ("one process", None)):
                rates, walls = [], []
                for run in range(args.runs):
                    endpoint = Endpoint(args.latency, work / f"{actors}-{pool}-{run}.json")
                    began = time.perf_counter()
                    try:
                        run_once(data, work / f"run-{actors}-{pool}-{run}", endpoint, actors * args.in_flight
                                 if pool is None else args.in_flight, pool, args.batch_size, args.actor_cpus)
                    finally:
                        log = endpoint.stop()
                    walls.append(time.perf_counter() - began)
                    assert len(log) == args.items, f"{len(log)} answers for {args.items} items"
                    rates.append(served_rate(log))
                rate = statistics.median(rates)
                print(f"  bound {bound:6.0f}/s  {label:20s} {rate:7.1f} items/s = {rate / bound:.2f} of the bound; "
                      f"runs {[round(r) for r in rates]}; whole call {statistics.median(walls):.1f} s")
    finally:
        ray.shutdown()
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
