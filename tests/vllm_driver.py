"""Several runs on one `--backend vllm` engine, in vLLM's own environment, for tests/test_vllm_real.py: a load of the
model costs tens of seconds on 2 cores, so the checks share one.

    python tests/vllm_driver.py JOBS.json

JOBS.json is a list of {"kind": "score" or "solve", "settings": flat RunConfig settings, "chunk_requests": N or
null}. The engine is made from the first job's settings (model, dtype, seed, engine_args) and every job runs on it;
each job's summary is printed as one JSON line."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(jobs_file: str) -> None:
    from curate import engine
    from curate.backends import create_backend
    from curate.backends import vllm as vllm_backend
    from curate.config import RunConfig

    jobs = json.loads(Path(jobs_file).read_text())
    configs = [RunConfig.from_flat(job["settings"]) for job in jobs]
    default_chunk = vllm_backend.CHUNK_REQUESTS
    backend = create_backend(configs[0].backend_config)
    try:
        for job, config in zip(jobs, configs, strict=True):
            vllm_backend.CHUNK_REQUESTS = job.get("chunk_requests") or default_chunk
            result = getattr(engine, job["kind"])(config, backend=backend)
            print(json.dumps(result.summary, default=str), flush=True)
    finally:
        backend.close()


if __name__ == "__main__":  # vLLM starts its engine in a process of its own, which imports this module again
    main(sys.argv[1])
