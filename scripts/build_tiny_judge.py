"""Build the tiny difficulty judge bundled with curate, deterministically, from MATH train.

Why: the library needs a real judge that runs anywhere in seconds (tests, examples, the
quick-start) and speaks exactly the protocol of a full-size one. This script trains one from
scratch: a byte-level BPE tokenizer and a ~0.6M-parameter Qwen2 that reads a MATH problem rendered
through the `difficulty/intensity_score_only` template and the ChatML chat template, and answers
with one level digit followed by `<|im_end|>`.

What it writes (under --out-dir, default curate/bundled/):
  tiny-judge/          a Hugging Face model directory (config, safetensors, tokenizer, chat
                       template, generation config) that loads offline with the Auto classes
  tiny-judge/eval.json metrics measured here, the hyperparameters and the weights' sha256
  math-sample.jsonl    200 MATH train problems held out of everything the judge learned from,
                       with the library's field names (id, question, answer, domain, level)

Data use: MATH train rows with a level are split, with a seeded RNG, into the 200-row sample, a
validation slice (used only to choose --steps and --lr) and the training split (tokenizer and
model). MATH-500 is read only after training, to measure the saved judge once.

Run from the repository root:  python scripts/build_tiny_judge.py
Deterministic: fixed seeds, 2 CPU threads, deterministic torch algorithms; the same command on the
same machine writes the same weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (AutoModelForCausalLM, AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM,
                          Qwen2Tokenizer)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"  # beside the checkout on the project's machines
sys.path.insert(0, str(REPO))  # run as a script from a source checkout: make `curate` importable
from curate.templates import load_template  # noqa: E402

TEMPLATE = "difficulty/intensity_score_only"
LEVELS = (1, 2, 3, 4, 5)
IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
# ChatML as in Qwen2, without tool calling: the judge only ever sees system + user messages.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SOURCE_TRAIN = "MATH train via agentica-project/rllm @ 874daa4a : rllm/data/train/math/math.json (MIT)"
SOURCE_EVAL = "MATH-500 via ZubinGou/math-evaluation-harness @ db77bc6b : data/math_oai/test.jsonl (MIT)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=SHARED_DATA / "train" / "math_train_rllm.jsonl")
    parser.add_argument("--eval", type=Path, default=SHARED_DATA / "eval" / "math500_test.jsonl")
    parser.add_argument("--out-dir", type=Path, default=REPO / "curate" / "bundled")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-size", type=int, default=200)
    parser.add_argument("--val-size", type=int, default=500)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--max-prompt-tokens", type=int, default=384,
                        help="training prompts longer than this have their problem text cut short")
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    return parser.parse_args()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def split_rows(rows: list[dict], sample_size: int, val_size: int, seed: int) -> tuple[list, list, list]:
    """Rows with a level -> (sample stratified by level, random validation slice, training split)."""
    rng = random.Random(seed)
    rows = [r for r in rows if r["level"] is not None]
    by_level = {level: [r for r in rows if r["level"] == level] for level in LEVELS}
    # Proportional allocation by largest remainder, so the quotas add up to sample_size exactly.
    exact = {level: sample_size * len(group) / len(rows) for level, group in by_level.items()}
    quota = {level: math.floor(share) for level, share in exact.items()}
    for level in sorted(LEVELS, key=lambda lv: quota[lv] - exact[lv])[:sample_size - sum(quota.values())]:
        quota[level] += 1
    sample_ids = {r["idx"] for level in LEVELS for r in rng.sample(by_level[level], quota[level])}
    rest = [r for r in rows if r["idx"] not in sample_ids]
    rng.shuffle(rest)
    sample = sorted((r for r in rows if r["idx"] in sample_ids), key=lambda r: r["idx"])
    return sample, rest[:val_size], rest[val_size:]


def render_messages(template, question: str) -> list[dict[str, str]]:
    """The library's own rendering; domain stays None because users' data may have none."""
    return template.render({"id": "x", "question": question, "reference": None, "choices": None,
                            "domain": None, "extra": {}})


def train_tokenizer(problems: list[str], template, vocab_size: int) -> Qwen2Tokenizer:
    """Byte-level BPE with Qwen2's normaliser and pre-tokeniser, saved as a Qwen2Tokenizer.

    Qwen2's pre-tokeniser makes every digit its own pre-token, so "1".."5" are single tokens. For a
    qwen2 model, transformers loads the tokenizer as Qwen2Tokenizer, which rebuilds Qwen2's
    normaliser and pre-tokeniser around the saved vocabulary; the BPE is trained with exactly those.
    """
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # The rubric and the role names open every prompt: weighting them like a hundred problems gives
    # their words whole tokens, which shortens every prompt (~130 -> ~90 prefix tokens) and training.
    template_text = [m["role"] + "\n" + m["content"] for m in render_messages(template, "")] + ["assistant\n"]
    bpe.train_from_iterator(problems + template_text * 100, trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]
    tokenizer = Qwen2Tokenizer(vocab=trained["vocab"], merges=[tuple(m) for m in trained["merges"]],
                               eos_token=IM_END, pad_token=PAD, unk_token=None, model_max_length=2048)
    tokenizer.add_tokens([AddedToken(IM_START, special=True)])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def prompt_ids(tokenizer, template, question: str) -> list[int]:
    """Exactly what the library feeds the judge: template -> chat template -> token ids."""
    messages = render_messages(template, question)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def training_prompt_ids(tokenizer, template, question: str, max_prompt_tokens: int) -> list[int]:
    """Like prompt_ids, with the problem text cut short when the prompt would be too long."""
    ids = prompt_ids(tokenizer, template, question)
    excess = len(ids) - max_prompt_tokens
    if excess > 0:
        question_ids = tokenizer(question, add_special_tokens=False)["input_ids"]
        ids = prompt_ids(tokenizer, template, tokenizer.decode(question_ids[:len(question_ids) - excess]))
    return ids


def level_token_ids(tokenizer) -> list[int]:
    ids = [tokenizer.convert_tokens_to_ids(str(level)) for level in LEVELS]
    for level, token_id in zip(LEVELS, ids):
        assert tokenizer(str(level), add_special_tokens=False)["input_ids"] == [token_id], level
    return ids


def build_model(tokenizer) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=96, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, rope_theta=10000.0,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForCausalLM(config)


def length_bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random):
    """Endless shuffled batches; each batch comes from a pool sorted by length, to keep padding low."""
    pool = batch_size * 16
    while True:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start:start + pool], key=lengths.__getitem__)
            batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
        yield from batches


def train(model, examples: list[tuple[list[int], int]], tokenizer, args) -> None:
    """Next-token loss on the two target tokens only: the level digit and the <|im_end|> after it."""
    pad, im_end = tokenizer.pad_token_id, tokenizer.eos_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps,
                                                   pct_start=0.1)
    batches = length_bucketed_batches([len(ids) for ids, _ in examples], args.batch_size, random.Random(args.seed))
    model.train()
    started = time.time()
    for step in range(1, args.steps + 1):
        batch = [examples[i] for i in next(batches)]
        # Input: prompt + digit, right-padded. Causal attention already keeps every real token from
        # seeing the pads after it, so no attention mask is needed.
        width = max(len(ids) for ids, _ in batch) + 1
        input_ids = torch.full((len(batch), width), pad)
        for row, (ids, digit) in enumerate(batch):
            input_ids[row, :len(ids) + 1] = torch.tensor(ids + [digit])
        last = torch.tensor([len(ids) - 1 for ids, _ in batch])
        rows = torch.arange(len(batch))
        hidden = model.model(input_ids=input_ids).last_hidden_state
        # Position last predicts the digit; the digit's own position predicts <|im_end|>.
        logits = model.lm_head(torch.stack([hidden[rows, last], hidden[rows, last + 1]], dim=1))
        targets = torch.tensor([[digit, im_end] for _, digit in batch])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == args.steps:
            print(f"step {step}/{args.steps}  loss {loss.item():.4f}  lr {schedule.get_last_lr()[0]:.2e}  "
                  f"{time.time() - started:.0f}s", flush=True)
    model.eval()


@torch.no_grad()
def level_probabilities(model, prompts: list[list[int]], digit_ids: list[int], pad: int) -> np.ndarray:
    """p("1".."5") right after each prompt, renormalised over the five digits: shape (n, 5)."""
    probs = np.zeros((len(prompts), len(LEVELS)))
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), 32):
        index = order[start:start + 32]
        width = max(len(prompts[i]) for i in index)
        input_ids = torch.full((len(index), width), pad)
        for row, i in enumerate(index):
            input_ids[row, :len(prompts[i])] = torch.tensor(prompts[i])
        logits = model(input_ids=input_ids).logits
        last = torch.tensor([len(prompts[i]) - 1 for i in index])
        next_token = logits[torch.arange(len(index)), last].softmax(-1)[:, digit_ids]
        probs[index] = (next_token / next_token.sum(-1, keepdim=True)).numpy()
    return probs


def rank_metrics(probs: np.ndarray, levels: list[int]) -> dict:
    expected = probs @ np.array(LEVELS, dtype=float)
    argmax = np.array(LEVELS)[probs.argmax(-1)]
    return {"n": len(levels),
            "spearman_expected_score": round(float(spearmanr(levels, expected).statistic), 4),
            "spearman_argmax_digit": round(float(spearmanr(levels, argmax).statistic), 4)}


@torch.no_grad()
def greedy_generations(model, prompts: list[list[int]], digit_ids: list[int], im_end: int) -> dict:
    """Greedy decoding with the saved generation config: format rate and histogram of the scores."""
    histogram, well_formed = Counter(), 0
    for ids in prompts:
        output = model.generate(torch.tensor([ids]), max_new_tokens=4)[0, len(ids):].tolist()
        if len(output) == 2 and output[0] in digit_ids and output[1] == im_end:
            well_formed += 1
            histogram[str(LEVELS[digit_ids.index(output[0])])] += 1
        else:
            histogram["malformed"] += 1
    return {"fraction_one_digit_then_im_end": round(well_formed / len(prompts), 4),
            "greedy_score_histogram": {key: histogram[key] for key in [*map(str, LEVELS), "malformed"]}}


def write_sample(rows: list[dict], path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            item = {"id": f"math-train-{r['idx']}", "question": r["problem"], "answer": r["answer"],
                    "domain": r["subject"], "level": int(r["level"])}
            f.write(json.dumps(item, ensure_ascii=False) + "\n")


def main() -> None:
    started = time.time()
    args = parse_args()
    seed_everything(args.seed)
    template = load_template(TEMPLATE)
    judge_dir = args.out_dir / "tiny-judge"
    judge_dir.mkdir(parents=True, exist_ok=True)

    sample, val, train_rows = split_rows(read_jsonl(args.train), args.sample_size, args.val_size, args.seed)
    print(f"rows: {len(train_rows)} train, {len(val)} validation, {len(sample)} held-out sample")
    write_sample(sample, args.out_dir / "math-sample.jsonl")

    # Train on the tokenizer as users will load it from disk, so training and use tokenise alike.
    train_tokenizer([r["problem"] for r in train_rows], template, args.vocab_size).save_pretrained(judge_dir)
    tokenizer = AutoTokenizer.from_pretrained(judge_dir)
    digit_ids = level_token_ids(tokenizer)
    examples = [(training_prompt_ids(tokenizer, template, r["problem"], args.max_prompt_tokens),
                 digit_ids[r["level"] - 1]) for r in train_rows]
    model = build_model(tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    mean_prompt = np.mean([len(ids) for ids, _ in examples])
    print(f"vocab {len(tokenizer)}, {n_params} parameters, mean training prompt {mean_prompt:.0f} tokens")
    train(model, examples, tokenizer, args)
    trained_at = time.time() - started

    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=False,
                                               max_new_tokens=4)
    model.save_pretrained(judge_dir)
    sha256 = hashlib.sha256((judge_dir / "model.safetensors").read_bytes()).hexdigest()

    # Measure what was saved, loaded the way users load it. MATH-500 is read only here.
    model = AutoModelForCausalLM.from_pretrained(judge_dir).eval()
    results = {}
    for name, rows in [("validation", val), ("math_sample", sample), ("math500", read_jsonl(args.eval))]:
        prompts = [prompt_ids(tokenizer, template, r["problem"]) for r in rows]
        probs = level_probabilities(model, prompts, digit_ids, tokenizer.pad_token_id)
        results[name] = rank_metrics(probs, [r["level"] for r in rows])
        if name == "math500":
            results[name] |= greedy_generations(model, prompts, digit_ids, tokenizer.eos_token_id)
        print(name, json.dumps(results[name]), flush=True)

    report = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "template": template.identity,
        "data": {"train": SOURCE_TRAIN, "measurement": SOURCE_EVAL, "train_rows": len(train_rows),
                 "validation_rows": len(val), "held_out_sample_rows": len(sample)},
        "metrics": results,
        "training": {"steps": args.steps, "lr": args.lr, "schedule": "one-cycle (10% warm-up, cosine)",
                     "optimizer": "AdamW(betas=(0.9, 0.95), weight_decay=0.01), grad clip 1.0",
                     "batch_size": args.batch_size, "max_prompt_tokens": args.max_prompt_tokens,
                     "seed": args.seed, "chosen_on": "validation slice of MATH train, see curate/bundled/README.md"},
        "model": {"parameters": n_params, "vocab_size": len(tokenizer), "dtype": "float32",
                  "model_safetensors_sha256": sha256},
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads()},
        "wall_seconds": {"until_trained": round(trained_at, 1), "build_total": round(time.time() - started, 1)},
    }
    (judge_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"model.safetensors sha256 {sha256}")
    print(f"done in {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
