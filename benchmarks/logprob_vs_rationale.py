"""(c) Logprob scoring vs a rationale-then-score template on the transformers backend (CPU).

Both arms use the same tiny random Qwen2 (built here, offline): the logprob arm renders the
score-only template and reads the first token's top logprobs in one forward pass (max_tokens 1);
the rationale arm renders the rationale template and decodes `--rationale-tokens` tokens (a random
model rarely stops early, so every judgment decodes the full budget, as a real rationale would).
The figure is the items/s ratio; it grows with the rationale length a real judge writes.

    python benchmarks/logprob_vs_rationale.py --items 256 --rationale-tokens 128
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import cpu_ticks, machine, now, steal_fraction, write_problems

from curate.backends import create_backend
from curate.config import RunConfig
from curate.engine import score
from curate.templates import bundled_prompts_dir
from curate.testing import build_random_qwen2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--rationale-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    ticks = cpu_ticks()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    work = Path(tempfile.mkdtemp(prefix="dereason-bench-"))
    data = write_problems(work / "problems.jsonl", args.items)
    corpus = [p.read_text() for p in bundled_prompts_dir().rglob("*.jinja")] + data.read_text().splitlines()
    model = build_random_qwen2(work / "model", corpus)
    arms = {
        "logprobs (score-only, 1 forward)": {"template": "difficulty/intensity_score_only", "max_tokens": 1,
                                             "top_logprobs": 20},
        f"rationale ({args.rationale_tokens} tokens)": {"template": "difficulty/intensity",
                                                        "max_tokens": args.rationale_tokens},
    }
    print(f"machine: {machine()}; items {args.items}, batch {args.batch_size}, model: random Qwen2 "
          "(hidden 64, 2 layers)")
    rates = {}
    for name, settings in arms.items():
        config = RunConfig.from_flat({"source": str(data), "out": str(work / name.split()[0]), "model": str(model),
                                        "batch_size": args.batch_size, "max_failure_fraction": 1.0, **settings})
        backend = create_backend(config.backend_config)  # model loading is not what is compared
        start = now()
        result = score(config, backend=backend)
        rates[name] = args.items / (now() - start)
        backend.close()
        print(f"  {name:36s} {rates[name]:8.1f} items/s  (methods {result.summary['score_methods']}, "
              f"completion tokens {result.summary['completion_tokens']})")
    first, second = rates.values()
    print(f"  ratio logprobs / rationale: {first / second:.1f}x")
    print(f"CPU steal during the benchmark (time the VM host took): {steal_fraction(ticks, cpu_ticks()):.0%}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
