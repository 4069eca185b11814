"""Build the bundled distilled judge (`--model bundled:smollm2-judge`): SmolLM2-135M-Instruct with a LoRA adapter
trained by `dereason-train judge` on MATH *train* levels, through difficulty/level_prefilled.

    python scripts/build_distilled_judge.py [--work runs/distilled-judge] [--per-level 400] [--lora-layers 8] ...

MATH train rows with a level, less the 200 of curate/bundled/math-sample.jsonl (held out for the quick-start, as
for the tiny judge), are what it learns from; the judge stage keeps a seeded 10% of them out as the validation
slice its settings are chosen on. MATH-500 (../shared/data/eval) is scored only to measure, never to choose.
The adapter goes to curate/bundled/smollm2-judge/ (adapter_config.json, adapter_model.safetensors) with eval.json:
the command, the settings, the validation, math-sample and MATH-500 Spearman of the expected score, the time, the
versions, the adapter's sha256, and the expected scores of the first math-sample items, which tests/test_distilled_judge.py
checks the shipped adapter still gives. Needs ../shared/data, which only the project's machines have, and the smollm2 extra.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "curate" / "bundled"
TEMPLATE = "difficulty/level_prefilled"
BASE = "bundled:smollm2-135m"
REFERENCE_ITEMS = 8


def training_items(source: Path, work: Path) -> Path:
    """MATH train rows with a level, in curate's field names, without the quick-start's held-out sample."""
    sample = {row["id"] for row in map(json.loads, (BUNDLED / "math-sample.jsonl").read_text().splitlines())}
    rows = pl.read_ndjson(source).filter(pl.col("level").is_not_null()).select(
        pl.format("math-train-{}", "idx").alias("id"), pl.col("problem").alias("question"),
        pl.col("answer"), pl.col("subject").alias("domain"), pl.col("level").cast(pl.Int64))
    path = work / "math-train.jsonl"
    rows.filter(~pl.col("id").is_in(list(sample))).write_ndjson(path)
    return path


def reference_scores(run_dir: Path) -> dict[str, float]:
    """The expected scores of the run's first items: what the shipped adapter must give them again."""
    per_item = pl.read_parquet(run_dir / "per_item.parquet").sort("item_id").head(REFERENCE_ITEMS)
    return dict(zip(per_item["item_id"], per_item["expected_mean"], strict=True))


def scored(source: str, out: Path, question_field: str = "question") -> dict:
    """The bundled judge's levels of labelled items: the run's seconds and statuses, and its Spearman with them."""
    from curate.engine import score
    from train.judge import level_agreement, level_run

    run = level_run(source, str(out), "bundled:smollm2-judge", TEMPLATE, device="cpu", question_field=question_field)
    started = time.monotonic()
    summary = score(run).summary
    seconds = round(time.monotonic() - started, 1)
    stats = level_agreement(out)
    return {"n": stats["run"]["n_scored"], "spearman_expected_score": stats["reference"]["spearman"],
            "seconds": seconds, "status_counts": summary["status_counts"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=Path, default=REPO.parent / "shared/data/train/math_train_rllm.jsonl")
    parser.add_argument("--eval", type=Path, default=REPO.parent / "shared/data/eval/math500_test.jsonl")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "distilled-judge")
    parser.add_argument("--per-level", type=int, default=400)
    parser.add_argument("--lora-layers", type=int, default=8)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from curate.settings import from_flat
    from train.judge import JudgeConfig, train_judge

    args.work.mkdir(parents=True, exist_ok=True)
    settings = {"model": BASE, "data": str(training_items(args.train, args.work)),
                "label": "level", "template": TEMPLATE, "out": str(args.work / "judge"), "per_level": args.per_level,
                "lora": True, "lora_layers": args.lora_layers, "lora_r": args.lora_r, "lora_alpha": 2 * args.lora_r,
                "learning_rate": args.learning_rate, "epochs": args.epochs, "batch_size": args.batch_size,
                "warmup": 0.05, "lr_scheduler": "cosine", "seed": args.seed, "device": "cpu", "save_steps": 50,
                "logging_steps": 10, "trainer_args": {"bf16": True}}
    started = time.monotonic()
    record = train_judge(from_flat(JudgeConfig, settings, "build_distilled_judge"))
    trained_seconds = time.monotonic() - started
    destination = BUNDLED / "smollm2-judge"
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir()
    shutil.copy2(args.work / "judge" / "adapter" / "adapter_model.safetensors", destination)
    # peft records the base model's folder on this machine; the package loads the adapter over BASE wherever it is.
    adapter_config = json.loads((args.work / "judge" / "adapter" / "adapter_config.json").read_text())
    (destination / "adapter_config.json").write_text(
        json.dumps({**adapter_config, "base_model_name_or_path": BASE}, indent=2, sort_keys=True) + "\n")
    measured = {"validation": record["judge"]["heldout"],
                "math_sample": scored(str(BUNDLED / "math-sample.jsonl"), args.work / "math-sample-run"),
                "math500": scored(str(args.eval), args.work / "math500-run", question_field="problem")}
    weights = (destination / "adapter_model.safetensors").read_bytes()
    result = {"command": " ".join(["python", "scripts/build_distilled_judge.py", *sys.argv[1:]]), "settings": settings,
              "template": TEMPLATE, "reference_scores": reference_scores(args.work / "math-sample-run"),
              "training": record["data"] if "data" in record else record["judge"]["labels"],
              "metrics": measured, "train_seconds": round(trained_seconds), "steps": record["steps"],
              "versions": {name: version(name) for name in ("torch", "transformers", "peft", "dereason")},
              "adapter_sha256": hashlib.sha256(weights).hexdigest(), "adapter_bytes": len(weights)}
    (destination / "eval.json").write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    print(json.dumps(result["metrics"], indent=2, default=str))


if __name__ == "__main__":
    main()
