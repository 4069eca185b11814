"""(f) Training overhead: the same SFT and GRPO settings through `train` (train.sft.train_sft, train.grpo.train_grpo:
data checks and fingerprint, stage directory and records, metrics file, final model renamed into place) and through
a plain TRL script (SFTTrainer / GRPOTrainer on the same rows with the same TrainingArguments, then save_model).
Target: step time through `train` ≤ 1.05× the plain script's.

Both arms train the same tiny random Qwen2 (built here: hidden 64, 2 layers, a BPE trained on the problems, ChatML
with generation markers) on the same TRL export files (`messages` for SFT; `prompt` and `reference` for GRPO, with
the numeric verifier as the reward: `curate.rewards.trl_reward`, which both arms use). The plain arm's TRL arguments
are `train`'s own, taken from its prepared stage (so what differs is only what `train` does around TRL). Each
repeat runs both arms, in alternating order, each in a fresh output folder, after one unmeasured warm-up pair; the
result is the median over repeats of the paired ratios (train / plain) of
    step time     the trainer's own train_runtime / steps (what TRL's loop costs, callbacks included)
    whole stage   wall time of the call, model loading and final save included

    python benchmarks/train_overhead.py --repeats 5 [--threads 1] [--out f-cpu.json]
    python benchmarks/train_overhead.py --repeats 5 --device cuda --out f-gpu.json

Torch runs on --threads threads (default 1: on a shared 2-core machine two threads make step times swing with
other jobs' load far more than one does). What both arms print (TRL's log lines in the plain arm) is discarded.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import logging
import os
import shutil
import statistics
import tempfile
import warnings
from pathlib import Path

from common import cpu_ticks, machine, now, steal_fraction

PROBLEMS = [(a, b) for a in range(11, 200, 3) for b in range(1, 10, 2)]


def build_inputs(work: Path) -> tuple[Path, Path, Path]:
    """The tiny model and the two export files (SFT conversations, GRPO prompts with references)."""
    import polars as pl

    from train.tinytask import CHATML, TaskConfig, _new_model, _tokenizer

    questions = [f"What is {a} + {b}?" for a, b in PROBLEMS]
    tokenizer = _tokenizer(questions + ["\\boxed{}"] * 100)
    model = _new_model(TaskConfig(hidden_size=64, layers=2), tokenizer, seed=0)
    model_dir = work / "model"
    model.save_pretrained(model_dir)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(model_dir)
    user = [[{"role": "user", "content": q}] for q in questions]
    sft = pl.DataFrame({"messages": [u + [{"role": "assistant", "content": f"\\boxed{{{a + b}}}"}]
                                     for u, (a, b) in zip(user, PROBLEMS, strict=True)]})
    grpo = pl.DataFrame({"prompt": user, "reference": [str(a + b) for a, b in PROBLEMS]})
    sft.write_parquet(work / "sft.parquet")
    grpo.write_parquet(work / "grpo.parquet")
    return model_dir, work / "sft.parquet", work / "grpo.parquet"


def configs(args: argparse.Namespace, model: Path, sft_data: Path, grpo_data: Path, out: Path):
    from train.config import GrpoConfig, SftConfig

    shared = {"model": str(model), "device": args.device, "gradient_checkpointing": False, "seed": 0,
              "save_steps": args.save_steps, "learning_rate": 1e-4}
    return {"sft": SftConfig(**shared, data=str(sft_data), out=str(out / "sft"), max_steps=args.sft_steps,
                             batch_size=8, max_length=64),
            "grpo": GrpoConfig(**shared, data=str(grpo_data), out=str(out / "grpo"), max_steps=args.grpo_steps,
                               batch_size=16, num_generations=4, max_completion_length=16, verifier="numeric")}


def through_train(stage: str, config) -> dict:
    from train.grpo import train_grpo
    from train.sft import train_sft

    started = now()
    record = (train_sft if stage == "sft" else train_grpo)(config)
    return {"wall": now() - started, "train_runtime": record["metrics"]["train_runtime"], "steps": record["steps"]}


def through_trl(stage: str, config) -> dict:
    """What a user writes with TRL alone: the same rows, the same arguments, the trainer, save_model."""
    import datasets
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curate.rewards import trl_reward
    from train.grpo import prepare_grpo
    from train.sft import prepare_sft

    arguments = dict((prepare_sft if stage == "sft" else prepare_grpo)(config).arguments)  # train's own, not timed
    started = now()
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    model = AutoModelForCausalLM.from_pretrained(config.model)
    dataset = datasets.Dataset.from_parquet(config.data)
    if stage == "sft":
        trainer = trl.SFTTrainer(model=model, args=trl.SFTConfig(**arguments), train_dataset=dataset,
                                 processing_class=tokenizer)
    else:
        trainer = trl.GRPOTrainer(model=model, args=trl.GRPOConfig(**arguments), train_dataset=dataset,
                                  reward_funcs=trl_reward(config.verifier), processing_class=tokenizer)
    result = trainer.train()
    trainer.save_model(str(Path(config.out) / "final"))
    return {"wall": now() - started, "train_runtime": result.metrics["train_runtime"], "steps": trainer.state.global_step}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sft-steps", type=int, default=40)
    parser.add_argument("--grpo-steps", type=int, default=10)
    parser.add_argument("--save-steps", type=int, default=20, help="checkpoint cadence, the same in both arms")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # train's per-step log lines would be timed as well as printed
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renames, once per trainer
    for variable in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):  # datasets' and transformers' bars
        os.environ.setdefault(variable, "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch

    torch.set_num_threads(args.threads)
    ticks = cpu_ticks()
    work = Path(tempfile.mkdtemp(prefix="dereason-bench-f-"))
    model, sft_data, grpo_data = build_inputs(work)
    runs: dict[str, list[dict]] = {"sft": [], "grpo": []}
    arms = {"train": through_train, "trl": through_trl}
    for repeat in range(args.repeats + 1):  # repeat 0 warms up (imports, first model load) and is not counted
        for stage in ("sft", "grpo"):
            order = ["train", "trl"] if repeat % 2 else ["trl", "train"]
            measured = {}
            for arm in order:
                out = work / f"r{repeat}-{arm}"
                with contextlib.redirect_stdout(io.StringIO()):
                    measured[arm] = arms[arm](stage, configs(args, model, sft_data, grpo_data, out)[stage])
                shutil.rmtree(out)
            assert measured["train"]["steps"] == measured["trl"]["steps"], measured
            if repeat:
                runs[stage].append(measured)
                print(f"repeat {repeat} {stage}: " + ", ".join(
                    f"{arm} {m['train_runtime']:.2f} s loop / {m['wall']:.2f} s whole" for arm, m in measured.items()),
                    flush=True)
    results = {"machine": machine(), "date": datetime.date.today().isoformat(), "device": args.device,
               "settings": vars(args) | {"out": str(args.out)}, "stages": {}}
    for stage, pairs in runs.items():
        step = [p["train"]["train_runtime"] / p["trl"]["train_runtime"] for p in pairs]
        whole = [p["train"]["wall"] / p["trl"]["wall"] for p in pairs]
        steps = pairs[0]["train"]["steps"]
        results["stages"][stage] = {
            "steps": steps, "step_time_ratio_median": statistics.median(step), "step_time_ratios": step,
            "whole_stage_ratio_median": statistics.median(whole), "whole_stage_ratios": whole,
            "train_step_seconds_median": statistics.median(p["train"]["train_runtime"] / steps for p in pairs),
            "trl_step_seconds_median": statistics.median(p["trl"]["train_runtime"] / steps for p in pairs),
            "train_whole_seconds_median": statistics.median(p["train"]["wall"] for p in pairs),
            "trl_whole_seconds_median": statistics.median(p["trl"]["wall"] for p in pairs)}
        found = results["stages"][stage]
        print(f"{stage}: step time train/trl median {found['step_time_ratio_median']:.3f} "
              f"({found['train_step_seconds_median'] * 1000:.1f} vs {found['trl_step_seconds_median'] * 1000:.1f} ms "
              f"per step); whole stage median {found['whole_stage_ratio_median']:.3f} "
              f"({found['train_whole_seconds_median']:.2f} vs {found['trl_whole_seconds_median']:.2f} s)")
    results["steal"] = steal_fraction(ticks, cpu_ticks())
    print(f"machine: {results['machine']}; CPU steal during the benchmark: {results['steal']:.0%}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
