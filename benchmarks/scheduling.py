"""Scheduling on the transformers backend: what sorting by prompt length and reusing the shared
template prefix (the rubric's KV cache) buy, on real problems of varied length.

Arms (same judge, data and settings; only the two switches differ): neither, sort only, both.
Default: logprob scoring (one forward pass per judgment, where prefill is the whole cost) with
the bundled judge on the first 1,000 MATH train problems.

    python benchmarks/scheduling.py --data ../shared/data/train/math_train_rllm.jsonl --items 1000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import cpu_ticks, machine, now, steal_fraction

from curate.backends.transformers import TransformersBackend
from curate.config import RunConfig
from curate.engine import score

ARMS = {"no sorting, no prefix reuse": (False, False), "sorted by length": (True, False),
        "sorted + shared prefix reused": (True, True)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/train/math_train_rllm.jsonl")
    parser.add_argument("--question-field", default="problem")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--model", default="bundled:tiny-judge")
    parser.add_argument("--template", default="difficulty/intensity_score_only")
    parser.add_argument("--max-tokens", type=int, default=1)
    parser.add_argument("--top-logprobs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    ticks = cpu_ticks()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    work = Path(tempfile.mkdtemp(prefix="dereason-bench-"))
    print(f"machine: {machine()}; {args.items} items of {args.data}; model {args.model}; template "
          f"{args.template}; max_tokens {args.max_tokens}; top_logprobs {args.top_logprobs}; batch {args.batch_size}")
    rates = {}
    for name, (sort_by_length, reuse_prefix) in ARMS.items():
        config = RunConfig.from_flat({
            "source": args.data, "question_field": args.question_field, "limit": args.items,
            "out": str(work / name.replace(" ", "_")), "model": args.model, "template": args.template,
            "max_tokens": args.max_tokens, "top_logprobs": args.top_logprobs, "batch_size": args.batch_size,
            "max_failure_fraction": 1.0})
        backend = TransformersBackend(config.backend_config, sort_by_length=sort_by_length, reuse_prefix=reuse_prefix)
        start = now()
        result = score(config, backend=backend)
        rates[name] = args.items / (now() - start)
        print(f"  {name:32s} {rates[name]:8.1f} items/s  ({result.summary['prompt_tokens']} prompt tokens)")
    baseline = rates["no sorting, no prefix reuse"]
    print("  speed-up over neither: " + ", ".join(f"{n}: {r / baseline:.2f}x" for n, r in rates.items()))
    print(f"CPU steal during the benchmark (time the VM host took): {steal_fraction(ticks, cpu_ticks()):.0%}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
