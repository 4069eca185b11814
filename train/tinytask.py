"""The tiny-cpu recipe's task: sums of several one-digit numbers, whose difficulty is known, and two tiny models
pre-trained on it from scratch, offline, in seconds: a solver (the model the arms train) and a judge (the model
curate scores the items with).

    TASK_DIR/
      items.jsonl     the items the judge scores and `curate split` divides: id, question ("What is 3 + 8 + 5?"),
                      answer (the sum), solution (`\\boxed{sum}`: the SFT target), terms, difficulty
      heldout.jsonl   the evaluation items
      solver/ judge/  Hugging Face model folders: Qwen2, a byte-level BPE trained on the task's text (every digit
                      its own token, as Qwen2's pre-tokeniser splits them), ChatML with the assistant turn marked
      task.json       the settings, each model's parameters, pre-training losses and weights' sha256, and the
                      known difficulty's histogram in each pool

Known difficulty: the number of additions, terms − 1 (2 to max_terms terms of 0..9, the count uniform as far as
distinct problems of that length remain: there are only 100 of two terms). Problems are drawn once each, shuffled
and dealt to the three pools (pre-training, items, held-out), so no problem is in two pools and every pool has
the same mix of difficulties. Why sums of digits rather than of multi-digit numbers: measured on the project's
2-core machine, a model of this size learns a + b for numbers of several digits only after a plateau of 500–800
steps (it must first learn to copy digits across), too long for a test of the pipeline; sums of digits it learns
smoothly, longer sums later than shorter ones.

The solver learns, on the pre-training pool, to answer each prompt as `curate solve` renders it (the task's
response template, tiny/solve, through the chat template) with `\\boxed{sum}<|im_end|>`, for only `solver_steps`
steps: it then solves short sums more often than long ones and neither always nor never (sampled at temperature
1), so that pass rates lie between 0 and 1 and fall with difficulty. The judge learns, on the same pool, to answer
each prompt as `curate score` renders it (tiny/rate, curate's score-only judge protocol) with the pool item's
difficulty digit: it rates the items (which it never saw) from their text alone, and its logprob scores are what
the split reads. The known difficulty is the judge's training label on the pool and a column the report compares
the judged scores with; it is never an item's score.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from curate.files import write_atomic
from curate.settings import check, described

log = logging.getLogger(__name__)
# The task's own short templates (train/recipes/templates/tiny): curate's formats, a few tokens of prompt.
TEMPLATE_DIR = Path(__file__).parent / "recipes" / "templates"
SOLVE_TEMPLATE, JUDGE_TEMPLATE = "tiny/solve", "tiny/rate"
PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# ChatML with the assistant's reply and its end-of-turn marked, so that SFT's assistant-only loss needs no
# template of its own (the markers change nothing the model is shown).
CHATML = ("{% for message in messages %}{% if message['role'] == 'assistant' %}<|im_start|>assistant\n"
          "{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}\n{% else %}<|im_start|>"
          "{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TASK_RECORD = "task.json"


@dataclass(frozen=True, kw_only=True)
class TaskConfig:
    """The synthetic task and the pre-training of its two tiny models."""

    seed: int = described("Seed of the problems, the tokenizer's corpus order and both models' initialisation and "
                          "batches.", default=0)
    max_terms: int = described("Most one-digit numbers in a sum (at least 2; difficulty = terms − 1).", default=6)
    items: int = described("Items the judge scores and the split divides (what the arms train on).", default=400)
    heldout: int = described("Held-out items every arm is evaluated on.", default=200)
    pretrain_items: int = described("Problems of the pre-training pool (both models learn from it).", default=1500)
    hidden_size: int = described("Width of both models (Qwen2, 4 heads).", default=64)
    layers: int = described("Layers of both models.", default=2)
    solver_steps: int = described("Pre-training steps of the solver: few enough that it is still unsure of long "
                                  "sums.", default=300)
    judge_steps: int = described("Pre-training steps of the judge.", default=100)
    learning_rate: float = described("Learning rate of both pre-trainings (AdamW, constant after a warm-up over a "
                                     "tenth of the steps, so that the solver is left mid-training, as a model to "
                                     "fine-tune is).", default=3e-3)
    batch_size: int = described("Problems per pre-training step.", default=64)

    def __post_init__(self) -> None:
        check(2 <= self.max_terms <= 6, f"max_terms must be in 2..6 (difficulty 1..5), got {self.max_terms}")
        for name in ("items", "heldout", "pretrain_items", "hidden_size", "layers", "solver_steps", "judge_steps",
                     "batch_size"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.hidden_size % 4 == 0, f"hidden_size must be a multiple of 4 (the heads), got {self.hidden_size}")
        check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        needed, available = self.items + self.heldout + self.pretrain_items, 10 ** self.max_terms
        check(needed <= available // 4, f"items + heldout + pretrain_items ({needed}) must be at most a quarter of "
                                        f"the {available} sums of {self.max_terms} digits; lower them or raise "
                                        "max_terms")


def problems(config: TaskConfig) -> dict[str, list[dict[str, Any]]]:
    """The three pools (pretrain, items, heldout): every problem once, dealt at random (module docstring)."""
    rng, seen = random.Random(config.seed), set()
    sizes = {"pretrain": config.pretrain_items, "items": config.items, "heldout": config.heldout}
    drawn: list[tuple[int, ...]] = []
    while len(drawn) < sum(sizes.values()):
        terms = tuple(rng.randrange(10) for _ in range(rng.randint(2, config.max_terms)))
        if terms not in seen:  # where short sums run out, the draw moves on to longer ones
            seen.add(terms)
            drawn.append(terms)
    rng.shuffle(drawn)
    pools, start = {}, 0
    for pool, size in sizes.items():
        pools[pool] = [{"id": f"{pool}-{i}", "question": f"What is {'+'.join(map(str, terms))}?",
                        "answer": str(sum(terms)), "solution": f"\\boxed{{{sum(terms)}}}", "terms": len(terms),
                        "difficulty": len(terms) - 1} for i, terms in enumerate(drawn[start:start + size])]
        start += size
    return pools


def _tokenizer(corpus: list[str]) -> Any:
    """A byte-level BPE trained with Qwen2's pre-tokeniser (each digit alone), saved and loaded as Qwen2's."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=1024, special_tokens=[PAD, IM_START, IM_END], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    trained = json.loads(bpe.to_str())["model"]
    tokenizer = Qwen2Tokenizer(vocab=trained["vocab"], merges=[tuple(m) for m in trained["merges"]], eos_token=IM_END,
                               pad_token=PAD, unk_token=None, model_max_length=512)
    tokenizer.add_tokens([AddedToken(IM_START, special=True)])
    tokenizer.chat_template = CHATML
    return tokenizer


def _conversations(template_name: str, rows: list[dict[str, Any]]) -> list[list[dict[str, str]]]:
    from curate.templates import load_template

    template = load_template(template_name, TEMPLATE_DIR)
    return [template.render({"id": row["id"], "question": row["question"], "reference": None, "choices": None,
                             "domain": None, "extra": {}}) for row in rows]


def _new_model(config: TaskConfig, tokenizer: Any, seed: int) -> Any:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=2 * config.hidden_size,
        num_hidden_layers=config.layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    return model


def pretrain(model: Any, examples: list[tuple[list[int], list[int]]], steps: int, learning_rate: float,
             batch_size: int, seed: int, pad: int) -> list[float]:
    """Next-token loss on each example's answer tokens only (the prompt is context); the loss every 50 steps."""
    import torch

    rng, losses = random.Random(seed), []
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    model.train()
    for step in range(1, steps + 1):
        batch = rng.sample(examples, min(batch_size, len(examples)))
        width = max(len(prompt) + len(answer) for prompt, answer in batch)
        ids = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        for row, (prompt, answer) in enumerate(batch):
            ids[row, :len(prompt) + len(answer)] = torch.tensor(prompt + answer)
            labels[row, len(prompt):len(prompt) + len(answer)] = torch.tensor(answer)
        loss = model(input_ids=ids, attention_mask=(labels != -100) | (ids != pad), labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps:
            losses.append(round(loss.item(), 4))
            log.info("pre-training step %d/%d: loss %.4f", step, steps, loss.item())
    model.eval()
    return losses


def _train_and_save(config: TaskConfig, tokenizer: Any, template: str, rows: list[dict[str, Any]],
                    answers: list[str], steps: int, seed: int, directory: Path) -> dict[str, Any]:
    from curate.backends.base import prompts_token_ids

    prompts = prompts_token_ids(tokenizer, _conversations(template, rows))
    targets = tokenizer([answer + IM_END for answer in answers], add_special_tokens=False)["input_ids"]
    model = _new_model(config, tokenizer, seed)
    losses = pretrain(model, list(zip(prompts, targets, strict=True)), steps, config.learning_rate,
                      config.batch_size, seed, tokenizer.pad_token_id)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {"parameters": sum(p.numel() for p in model.parameters()), "steps": steps, "losses_every_50": losses,
            "model_safetensors_sha256": hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()}


def build_task(config: TaskConfig, task_dir: str | Path) -> dict[str, Any]:
    """Write the task directory (module docstring), or find it built with the same settings; its record."""
    task_dir = Path(task_dir)
    record_path = task_dir / TASK_RECORD
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        check(record["settings"] == asdict(config), f"{task_dir} holds a task built with other settings "
                                                    f"({record['settings']}); choose another --out")
        return record
    pools = problems(config)
    task_dir.mkdir(parents=True, exist_ok=True)
    for name in ("items", "heldout"):
        write_atomic(task_dir / f"{name}.jsonl", "".join(json.dumps(row) + "\n" for row in pools[name]))
    pool = pools["pretrain"]
    # The templates' words and the answer's box, weighted like a hundred problems, become whole tokens.
    texts = [message["content"] for template in (SOLVE_TEMPLATE, JUDGE_TEMPLATE)
             for message in _conversations(template, pool[:1])[0]] + ["user\n", "assistant\n", "\\boxed{}"]
    tokenizer = _tokenizer([row["question"] for row in pool] + texts * 100)
    models = {
        "solver": _train_and_save(config, tokenizer, SOLVE_TEMPLATE, pool, [row["solution"] for row in pool],
                                  config.solver_steps, config.seed, task_dir / "solver"),
        "judge": _train_and_save(config, tokenizer, JUDGE_TEMPLATE, pool, [str(row["difficulty"]) for row in pool],
                                 config.judge_steps, config.seed + 1, task_dir / "judge")}
    levels = {pool_name: {str(level): sum(row["difficulty"] == level for row in rows) for level in range(1, 6)}
              for pool_name, rows in pools.items()}
    record = {"settings": asdict(config), "vocabulary": len(tokenizer), "difficulty_histograms": levels,
              "models": models}
    write_atomic(record_path, json.dumps(record, indent=2))  # last: the task is built only once this exists
    return record
