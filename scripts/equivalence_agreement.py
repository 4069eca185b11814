"""How often a judge model, as `--verify model`, agrees with math-verify on answers whose truth is known.

From the first N problems of a MATH-style file whose reference is a whole number n, two candidate answers each:
"n.0" (equivalent, but not the same string, so the judge is asked) and "n + 1" as a number (not equivalent).
math-verify labels each pair; the judge answers each through the `verify/equivalence` template. Prints the
counts of the judge's verdicts per label, and writes them as JSON.

    python scripts/equivalence_agreement.py ../shared/data/train/math_train_rllm.jsonl --items 100 \
        --model bundled:smollm2-135m --out equivalence.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from curate.backends import create_backend
from curate.config import BackendConfig, SamplingConfig
from curate.templates import load_template
from curate.verify import get_verifier
from curate.verify.extract import read_number


def pairs(path: Path, items: int) -> list[tuple[dict, str]]:
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        number = read_number(str(row["answer"]))
        if number is None or number.value.denominator != 1 or str(number.value) != str(row["answer"]).strip():
            continue
        item = {"id": str(len(found)), "question": row["problem"], "reference": str(row["answer"]), "choices": None}
        found.append((item, f"\\boxed{{{number.value}.0}}"))
        found.append((item, f"\\boxed{{{number.value + 1}}}"))
        if len(found) == 2 * items:
            break
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--model", default="bundled:smollm2-135m")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("equivalence.json"))
    args = parser.parse_args()
    cases = pairs(args.data, args.items)
    items, responses = [item for item, _ in cases], [response for _, response in cases]
    truth = get_verifier("math")
    labels = [truth.verify(response, item).status for item, response in cases]
    backend = create_backend(BackendConfig(model=args.model, batch_size=args.batch_size))
    judge = get_verifier("model", backend=backend, template=load_template("verify/equivalence"),
                         sampling=SamplingConfig(max_tokens=args.max_tokens))
    start = time.perf_counter()
    verdicts = judge.verify_batch(responses, items)
    seconds = time.perf_counter() - start
    table = Counter((str(label), str(verdict.status)) for label, verdict in zip(labels, verdicts, strict=True))
    said = Counter(verdict.detail.split(":")[0][:80] for verdict in verdicts)
    result = {"model": args.model, "pairs": len(cases), "seconds": round(seconds, 1),
              "math_verify_label_then_judge_verdict": {f"{a} -> {b}": n for (a, b), n in sorted(table.items())},
              "judge_answers": dict(said.most_common(10))}
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
