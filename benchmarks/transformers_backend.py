"""(e) The transformers backend against the raw model, on the same prompts and settings.

Arms, each in a fresh subprocess so that its peak memory is its own:
- score/engine: logprob scoring through `curate.engine.score` (score-only template, max_tokens 1,
  top_logprobs 20), default settings unless given; items/s.
- score/raw: the same prompt ids, sorted by length, one forward per batch with last-position logits only
  (`logits_to_keep=1`) and a top-20 log-softmax; items/s. Rows per batch: each of --raw-batch-sizes in a
  process of its own (arm `score/raw@B`), so that the engine at its defaults is compared with the raw forward
  at its best batch size; without --raw-batch-sizes, the engine's --batch-size.
- decode/engine: the rationale template through `curate.engine.score`, temperature 1, --new-tokens
  tokens per judgment; completion tokens/s.
- decode/generate: the same prompt ids, sorted, left-padded batches (rows per batch as for score/raw),
  `model.generate(do_sample=True, temperature=1, top_p=1, top_k=0, min_new_tokens=max_new_tokens=N)`;
  tokens/s.
Peak memory: CPU, the arm process's peak resident set (getrusage ru_maxrss; tracemalloc does not see
torch) and its resident set once the model is loaded; GPU, torch.cuda.max_memory_allocated from the
point the model is loaded. Model loading is not timed.

The model is random and built here. `tiny`: a 2-layer Qwen2 (hidden 64) with Qwen3's 151,936-token
vocabulary; its tokenizer is a small BPE trained on the prompts, the embedding padded to the full
vocabulary, so every logit row has 151,936 columns, as with a real judge. `qwen3-4b`: Qwen3-4B's
shape (36 layers, hidden 2,560), bf16.

    python benchmarks/transformers_backend.py --out e-cpu.json
    python benchmarks/transformers_backend.py --shape qwen3-4b --device cuda --score-items 3000 \
        --decode-items 256 --batch-size 64 --out e-gpu.json

Results are written to --out after each arm.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import cpu_ticks, machine, now, steal_fraction

VOCAB = 151_936
SHAPES = {
    "tiny": ("qwen2", {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096}),
    "qwen3-4b": ("qwen3", {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                           "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                           "max_position_embeddings": 40960, "rope_theta": 1_000_000}),
}
ARMS = ("score/engine", "score/raw", "decode/engine", "decode/generate")
SCORE_TEMPLATE, DECODE_TEMPLATE = "difficulty/intensity_score_only", "difficulty/intensity"


def build_model(directory: Path, args: argparse.Namespace) -> None:
    """A random model of the chosen shape with the full vocabulary and a BPE tokenizer trained on the prompts."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from curate.templates import bundled_prompts_dir
    from curate.testing import build_tokenizer

    corpus = [p.read_text() for p in bundled_prompts_dir().rglob("*.jinja")]
    corpus += [row["question"] for row in items(args, "score" if args.score_items >= args.decode_items else "decode")]
    tokenizer = build_tokenizer(corpus, vocab_size=8192)
    family, dims = SHAPES[args.shape]
    config = AutoConfig.for_model(family, vocab_size=VOCAB, tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id, **dims)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if args.shape == "qwen3-4b" else None)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model  # the arms load it in their own processes: give its device memory back
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def arm_data(args: argparse.Namespace, kind: str) -> Path:
    """The file an arm of `kind` (score, decode) reads: the first --score-items or --decode-items lines of --data,
    so that the engine reads what it scores, as a user's run over such a file would."""
    return args.model_dir.parent / f"{kind}.jsonl"


def write_arm_data(args: argparse.Namespace) -> None:
    with open(args.data, encoding="utf-8") as source:
        lines = source.readlines()
    for kind, n in (("score", args.score_items), ("decode", args.decode_items)):
        arm_data(args, kind).write_text("".join(lines[:n]), encoding="utf-8")


def items(args: argparse.Namespace, kind: str) -> list[dict]:
    """The items of an arm's file, as the engine reads them."""
    from curate.config import DataConfig
    from curate.data.items import load_items

    return load_items(DataConfig(source=str(arm_data(args, kind)), question_field=args.question_field)).items.to_dicts()


def engine_config(args: argparse.Namespace, arm: str, work: Path) -> dict:
    kind = arm.split("/")[0]
    settings = {"template": SCORE_TEMPLATE, "max_tokens": 1, "top_logprobs": 20} if kind == "score" else \
        {"template": DECODE_TEMPLATE, "max_tokens": args.new_tokens, "temperature": 1.0}
    chosen = {"batch_size": args.batch_size, "max_batch_tokens": args.max_batch_tokens}
    return {"source": str(arm_data(args, kind)), "question_field": args.question_field, "out": str(work / "run"),
            "model": str(args.model_dir), "device": args.device, "max_failure_fraction": 1.0, **settings,
            **{k: v for k, v in chosen.items() if v is not None}}


def run_arm(args: argparse.Namespace) -> dict:
    """One arm, in this (fresh) process: its rate and its memory."""
    import torch
    from transformers.utils import logging as hf_logging

    from curate.backends.transformers import TransformersBackend
    from curate.config import RunConfig
    from curate.engine import score
    from curate.templates import load_template

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="dereason-bench-"))
    config = RunConfig.from_flat(engine_config(args, args.arm, work))
    backend = TransformersBackend(config.backend_config)
    cuda = backend.device.type == "cuda"
    loaded = torch.cuda.memory_allocated() if cuda else resident_bytes()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    kind = args.arm.split("/")[0]
    rows_per_batch = args.raw_rows or config.backend_config.batch_size
    result: dict = {"rows_per_batch": rows_per_batch}
    if args.arm.endswith("engine"):
        start = now()
        summary = score(config, backend=backend).summary
        elapsed = now() - start
        result.update(items=summary["judgments"], completion_tokens=summary["completion_tokens"],
                      prompt_tokens=summary["prompt_tokens"], status_counts=summary["status_counts"],
                      max_batch_tokens=config.backend_config.max_batch_tokens)
    else:
        template = load_template(config.template)
        rows = items(args, kind)
        start = now()  # not part of the raw arm's time, but the engine's: reported apart
        prompts = sorted((backend.prompt_ids(template.render(row)) for row in rows), key=len)
        result["render_and_tokenize_seconds"] = now() - start
        start = now()
        if rows_per_batch is None:
            raise SystemExit("the raw arms need rows per batch: give --raw-batch-sizes or --batch-size")
        tokens = (raw_forward if kind == "score" else raw_generate)(backend, prompts, config, rows_per_batch)
        elapsed = now() - start
        result.update(items=len(prompts), completion_tokens=tokens, prompt_tokens=sum(map(len, prompts)))
    shutil.rmtree(work)
    result.update(threads=torch.get_num_threads(), seconds=elapsed, items_per_s=result["items"] / elapsed,
                  tokens_per_s=result["completion_tokens"] / elapsed, loaded_bytes=loaded,
                  peak_bytes=torch.cuda.max_memory_allocated() if cuda else
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  memory="torch.cuda.max_memory_allocated" if cuda else "peak resident set (ru_maxrss)")
    return result


def padded(backend, prompts: list[list[int]]):
    import torch

    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), backend.pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):], mask[row, width - len(prompt):] = torch.tensor(prompt), 1
    return ids.to(backend.device), mask.to(backend.device)


def raw_forward(backend, prompts: list[list[int]], config, rows: int) -> int:
    """One forward per batch, last-position logits only, top-20 log-probabilities: what logprob scoring needs."""
    import torch

    with torch.inference_mode():
        for start in range(0, len(prompts), rows):
            ids, mask = padded(backend, prompts[start:start + rows])
            logits = backend.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                                   logits_to_keep=1).logits[:, -1, :]
            (logits.topk(20, dim=-1).values.float() - torch.logsumexp(logits.float(), dim=-1, keepdim=True)).tolist()
    return len(prompts)


def raw_generate(backend, prompts: list[list[int]], config, rows: int) -> int:
    """`model.generate` with the process-wide RNG on batches of `rows`; returns the tokens generated."""
    import torch

    new_tokens = config.sampling.max_tokens
    generated = 0
    with torch.inference_mode():
        for start in range(0, len(prompts), rows):
            ids, mask = padded(backend, prompts[start:start + rows])
            output = backend.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0,
                                            top_p=1.0, top_k=0, min_new_tokens=new_tokens, max_new_tokens=new_tokens,
                                            pad_token_id=backend.pad_id)
            generated += (output.shape[1] - ids.shape[1]) * ids.shape[0]
    return generated


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def versions() -> dict:
    import torch
    import transformers

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {"torch": torch.__version__, "transformers": transformers.__version__, "accelerator": device}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, help="JSON file the results are written to, after each arm")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", default="../shared/data/train/math_train_rllm.jsonl")
    parser.add_argument("--question-field", default="problem")
    parser.add_argument("--score-items", type=int, default=256)
    parser.add_argument("--decode-items", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, help="the engine's row cap (default: its default, none), and the "
                                                       "raw arms' rows per batch without --raw-batch-sizes")
    parser.add_argument("--raw-batch-sizes", type=int, nargs="+",
                        help="rows per batch of the raw arms, each in its own process; ratios use the best")
    parser.add_argument("--max-batch-tokens", type=int, help="the engine's token budget (default: its default)")
    parser.add_argument("--threads", type=int, help="torch CPU threads in each arm (default: torch's choice)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the arms this many times, interleaved; every figure is the median over the repeats "
                             "(on a shared machine, a pair run back to back sees about the same load)")
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # run one arm in this process
    parser.add_argument("--raw-rows", type=int, help=argparse.SUPPRESS)  # that arm's rows per batch
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(run_arm(args)))
        return
    work = Path(tempfile.mkdtemp(prefix="dereason-bench-"))
    args.model_dir = work / "model"
    write_arm_data(args)
    build_model(args.model_dir, args)
    results = {"date": datetime.date.today().isoformat(), "machine": machine(), **versions(),
               "settings": {k: str(v) for k, v in vars(args).items() if k not in ("arm", "out")}, "runs": {}}
    for _ in range(args.repeats):
        for arm, rows in arm_runs(args):
            ticks = cpu_ticks()
            command = [sys.executable, __file__, *sys.argv[1:], "--arm", arm, "--model-dir", str(args.model_dir),
                       *(["--raw-rows", str(rows)] if rows else [])]
            finished = subprocess.run(command, capture_output=True, text=True, check=True)
            measured = {**json.loads(finished.stdout.splitlines()[-1]), "cpu_steal": steal_fraction(ticks, cpu_ticks())}
            name = f"{arm}@{rows}" if rows else arm
            results["runs"].setdefault(name, []).append(measured)
            print(f"{name:20s} {measured['items_per_s']:8.2f} items/s {measured['tokens_per_s']:9.1f} tokens/s  "
                  f"peak {measured['peak_bytes'] / 2**30:.2f} GiB (loaded {measured['loaded_bytes'] / 2**30:.2f})  "
                  f"steal {measured['cpu_steal']:.0%}", flush=True)
            results["ratios"] = ratios(results["runs"])
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results["ratios"], indent=2))
    shutil.rmtree(work)


def arm_runs(args: argparse.Namespace) -> list[tuple[str, int | None]]:
    """(arm, rows per batch of a raw arm) in the order one repeat runs them."""
    return [(arm, rows) for arm in args.arms
            for rows in (args.raw_batch_sizes or [None] if not arm.endswith("engine") else [None])]


def best_raw(runs: dict, arm: str, key: str) -> tuple[str, list[dict]] | None:
    """The raw arm's runs at the rows per batch whose median `key` is highest (its best batch size)."""
    sizes = {name: found for name, found in runs.items() if name == arm or name.startswith(f"{arm}@")}
    if not sizes:
        return None
    return max(sizes.items(), key=lambda named: statistics.median(run[key] for run in named[1]))


def ratios(runs: dict) -> dict:
    """The done-when figures, engine over raw (at the raw arm's best rows per batch), for whichever pairs have
    run: the median over the repeats of each repeat's ratio (its arms ran back to back), and the ratio of the
    arms' medians."""
    pairs = {"score items/s, engine / raw forward": ("score/engine", "score/raw", "items_per_s"),
             "decode tokens/s, engine / generate": ("decode/engine", "decode/generate", "tokens_per_s"),
             "score peak memory, engine / raw forward": ("score/engine", "score/raw", "peak_bytes"),
             "decode peak memory, engine / generate": ("decode/engine", "decode/generate", "peak_bytes")}
    found = {}
    for name, (a, b, key) in pairs.items():
        rate = "tokens_per_s" if b == "decode/generate" else "items_per_s"
        best = best_raw(runs, b, rate)
        if best is None or not runs.get(a):
            continue
        raw_name, raw = best
        paired = [x[key] / y[key] for x, y in zip(runs[a], raw)]
        found[name] = {"raw arm": raw_name, "median of paired ratios": statistics.median(paired),
                       "paired ratios": paired, "ratio of medians": statistics.median(x[key] for x in runs[a]) /
                       statistics.median(y[key] for y in raw)}
    return found


if __name__ == "__main__":
    main()
