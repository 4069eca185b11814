"""The tiny-cpu recipe's task: a two-digit number plus one to five one-digit numbers, solved in written steps, whose
difficulty is known, and two tiny models pre-trained on it from scratch, offline, in seconds: a solver (the model
the arms train) and a judge (the model curate scores the items with).

    TASK_DIR/
      items.jsonl     the items the judge scores and `curate split` divides: id, question ("What is 48+7+5?"),
                      answer (the sum), solution ("48+7=55 55+5=60 \\boxed{60}": the SFT target), terms, difficulty
      heldout.jsonl   the evaluation items
      solver/ judge/  Hugging Face model folders: Qwen2, a byte-level BPE trained on the task's text (every digit
                      its own token, as Qwen2's pre-tokeniser splits them), ChatML with the assistant turn marked
      task.json       the settings, each model's parameters, pre-training steps, losses and weights' sha256, the
                      solver's probability of writing the whole solution per known difficulty on the items, the
                      held-out set and the probe (problems only measured on), and the known difficulty's histogram in each pool

Known difficulty: the number of additions, each a written step (`running+term=sum`) before the boxed sum. Each pool
(pre-training, items, held-out, probe) holds the levels 1..max_additions in equal shares, drawn without replacement from
every problem of the level, so no problem is in two pools. Why written steps: a solver that writes its steps fails
more often the more steps it writes, so its pass rate falls with the known difficulty. Measured on the project's
2-core machine, answering a sum directly (`\\boxed{sum}` alone) does not do that: sums of 2 to 6 one-digit numbers
answered directly were solved at about the same rate whatever the number of terms (0.36, 0.32, 0.35, 0.36, 0.33
after 300 steps); two 4-digit numbers, difficulty = carries, were solved not at all for 600 steps, then not less
often with more carries; a + b of 1 to 5 digits stayed under 0.1 at every length for 600 steps.

The solver learns, on the pre-training pool, to answer each prompt as `curate solve` renders it (the task's response
template, tiny/solve, through the chat template) with the worked solution and <|im_end|>, only until its mean
probability of writing a whole solution, over the pool's first 256 problems, reaches `solver_target` (a check every
25 steps; the step it leaves its plateau differs by a hundred or more between seeds, so a fixed number of steps
would leave some seeds' solvers unable to solve anything): it then solves short chains more often than long ones and
neither always nor never, so that pass rates lie between 0 and 1 and fall with difficulty. Why a learning rate of
1e-3: at 3e-3 the solver went from writing 30% to 65% of solutions whole within 50 steps, learning the lengths out
of order, and one seed's solver, stopped at its target, wrote solutions of 4 additions less often than of 5 (0.14
against 0.20, on 120 fresh problems of each); at 1e-3 it took 150 to 275 steps to go from 10% to 60%, and at every
check on the way (25 steps apart, 2 seeds) the more additions, the less often, as on the probe in each of the
shipped recipe's 8 seeds. The judge learns, on the same pool, to answer each prompt as `curate score` renders it
(tiny/rate, curate's score-only judge protocol) with the pool item's difficulty digit: it rates the items (which it
never saw) from their text alone, and its logprob scores are what the split reads. The known difficulty is the
judge's training label on the pool and a column the report compares the judged scores with; it is never an item's
score.
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
    max_additions: int = described("Most additions in a problem (1 to 5: the known difficulty's levels).", default=5)
    items: int = described("Items the judge scores and the split divides (what the arms train on).", default=400)
    heldout: int = described("Held-out items every arm is evaluated on.", default=200)
    pretrain_items: int = described("Problems of the pre-training pool (both models learn from it).", default=3000)
    probe_items: int = described("Problems only measured on: the solver's probability of writing the whole solution "
                                 "per known difficulty, on problems no stage trains or evaluates on.", default=500)
    hidden_size: int = described("Width of both models (Qwen2, 4 heads).", default=64)
    layers: int = described("Layers of both models.", default=2)
    solver_target: float = described("The solver's pre-training stops at the first check (every 25 steps) at which "
                                     "its mean probability of writing a whole worked solution, over the first 256 "
                                     "problems of the pool, reaches this: it is left partly trained.", default=0.4)
    solver_steps: int = described("Most pre-training steps of the solver (it stops there if it has not reached "
                                  "solver_target; task.json says which).", default=1200)
    judge_steps: int = described("Pre-training steps of the judge.", default=100)
    learning_rate: float = described("Learning rate of both pre-trainings (AdamW, constant after a warm-up over a "
                                     "tenth of the steps, so that the solver is left mid-training, as a model to "
                                     "fine-tune is).", default=1e-3)
    batch_size: int = described("Problems per pre-training step.", default=64)

    def __post_init__(self) -> None:
        check(1 <= self.max_additions <= 5, f"max_additions must be in 1..5 (the difficulty digit), got "
                                            f"{self.max_additions}")
        for name in ("items", "heldout", "pretrain_items", "probe_items", "hidden_size", "layers", "solver_steps",
                     "judge_steps", "batch_size"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.hidden_size % 4 == 0, f"hidden_size must be a multiple of 4 (the heads), got {self.hidden_size}")
        check(0 < self.solver_target < 1, f"solver_target must be in (0, 1), got {self.solver_target}")
        check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        needed = sum(_level_counts(size, self.max_additions)[0]
                     for size in (self.items, self.heldout, self.pretrain_items, self.probe_items))
        check(needed <= _distinct(1), f"items, heldout, pretrain_items and probe_items need {needed} problems of one addition, and "
                                      f"there are {_distinct(1)}; lower them or raise max_additions")


def _distinct(additions: int) -> int:
    """Distinct problems with this many additions: a two-digit number, then that many one-digit ones."""
    return 90 * 10 ** additions


def _level_counts(size: int, levels: int) -> list[int]:
    """A pool's problems per difficulty 1..levels: equal shares, the remainder to the lowest levels."""
    return [size // levels + (level < size % levels) for level in range(levels)]


def _worked(terms: list[int]) -> str:
    """`48+7=55 55+5=60 \\boxed{60}`: one written step per addition, then the sum boxed."""
    steps, running = [], terms[0]
    for term in terms[1:]:
        steps.append(f"{running}+{term}={running + term}")
        running += term
    return " ".join(steps) + f" \\boxed{{{running}}}"


def problems(config: TaskConfig) -> dict[str, list[dict[str, Any]]]:
    """The four pools (pretrain, items, heldout, probe), each with the difficulty levels in equal shares, no problem in
    two pools (module docstring)."""
    rng = random.Random(config.seed)
    sizes = {"pretrain": config.pretrain_items, "items": config.items, "heldout": config.heldout,
             "probe": config.probe_items}
    pools: dict[str, list[list[int]]] = {pool: [] for pool in sizes}
    for level in range(1, config.max_additions + 1):
        counts = {pool: _level_counts(size, config.max_additions)[level - 1] for pool, size in sizes.items()}
        # Drawn without replacement from every problem of the level, then dealt: no problem twice.
        drawn = rng.sample(range(_distinct(level)), sum(counts.values()))
        start = 0
        for pool, count in counts.items():
            for index in drawn[start:start + count]:
                lead, rest = divmod(index, 10 ** level)
                pools[pool].append([10 + lead, *(int(digit) for digit in f"{rest:0{level}d}")])
            start += count
    rows = {}
    for pool, drawn_terms in pools.items():
        rng.shuffle(drawn_terms)
        rows[pool] = [{"id": f"{pool}-{i}", "question": f"What is {'+'.join(map(str, terms))}?",
                       "answer": str(sum(terms)), "solution": _worked(terms), "terms": len(terms),
                       "difficulty": len(terms) - 1} for i, terms in enumerate(drawn_terms)]
    return rows


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


def _padded(examples: list[tuple[list[int], list[int]]], pad: int) -> tuple[Any, Any, Any]:
    """Token ids, labels (the answer's tokens; -100 elsewhere) and attention mask of a batch of (prompt, answer)."""
    import torch

    width = max(len(prompt) + len(answer) for prompt, answer in examples)
    ids = torch.full((len(examples), width), pad)
    labels = torch.full((len(examples), width), -100)
    for row, (prompt, answer) in enumerate(examples):
        ids[row, :len(prompt) + len(answer)] = torch.tensor(prompt + answer)
        labels[row, len(prompt):len(prompt) + len(answer)] = torch.tensor(answer)
    return ids, labels, (labels != -100) | (ids != pad)


def answer_probabilities(model: Any, examples: list[tuple[list[int], list[int]]], pad: int) -> list[float]:
    """Each example's probability that the model, sampling at temperature 1 after the prompt, writes exactly its
    answer's tokens: the product of their probabilities."""
    import torch

    found: list[float] = []
    with torch.no_grad():
        for start in range(0, len(examples), 128):
            ids, labels, mask = _padded(examples[start:start + 128], pad)
            logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
            targets = labels[:, 1:]
            chosen = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            found += (chosen * (targets != -100)).sum(dim=-1).exp().tolist()
    return found


def pretrain(model: Any, examples: list[tuple[list[int], list[int]]], config: TaskConfig, steps: int, seed: int,
             pad: int, target: float | None = None) -> dict[str, Any]:
    """Next-token loss on each example's answer tokens only (the prompt is context), for `steps` steps or, with a
    target, until the mean answer probability of the first 256 examples reaches it (checked every 25 steps);
    the steps run, the loss every 50 steps and, with a target, the last probability checked."""
    import torch

    rng, losses, monitored = random.Random(seed), [], None
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    model.train()
    for step in range(1, steps + 1):
        ids, labels, mask = _padded(rng.sample(examples, min(config.batch_size, len(examples))), pad)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps:
            losses.append(round(loss.item(), 4))
            log.info("pre-training step %d/%d: loss %.4f", step, steps, loss.item())
        if target is not None and step % 25 == 0:
            monitored = round(sum(probabilities := answer_probabilities(model, examples[:256], pad)) /
                              len(probabilities), 4)
            log.info("pre-training step %d: mean answer probability %.3f (target %g)", step, monitored, target)
            if monitored >= target:
                break
    model.eval()
    return {"steps": step, "losses_every_50": losses,
            **({} if target is None else {"target": target, "monitored_probability": monitored,
                                          "reached_target": monitored is not None and monitored >= target})}


def _examples(tokenizer: Any, template: str, rows: list[dict[str, Any]],
              answers: list[str]) -> list[tuple[list[int], list[int]]]:
    """(prompt, answer) token ids: the prompt as curate renders the template, the answer closed by <|im_end|>."""
    from curate.backends.base import prompts_token_ids

    prompts = prompts_token_ids(tokenizer, _conversations(template, rows))
    targets = tokenizer([answer + IM_END for answer in answers], add_special_tokens=False)["input_ids"]
    return list(zip(prompts, targets, strict=True))


def _save(model: Any, tokenizer: Any, directory: Path, trained: dict[str, Any]) -> dict[str, Any]:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {"parameters": sum(p.numel() for p in model.parameters()), **trained,
            "model_safetensors_sha256": hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()}


def solution_probability_by_difficulty(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """The solver's mean probability of writing an item's whole worked solution, per known difficulty: its pass rate
    at temperature 1, but for answers it reaches by wrong steps."""
    probabilities = answer_probabilities(model, _examples(tokenizer, SOLVE_TEMPLATE, rows,
                                                          [row["solution"] for row in rows]), tokenizer.pad_token_id)
    levels = sorted({row["difficulty"] for row in rows})
    return {str(level): round(sum(p for p, row in zip(probabilities, rows, strict=True) if row["difficulty"] == level)
                              / sum(row["difficulty"] == level for row in rows), 4) for level in levels}


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
    tokenizer = _tokenizer([row["question"] for row in pool] + [row["solution"] for row in pool] + texts * 100)
    pad = tokenizer.pad_token_id
    solver, judge = _new_model(config, tokenizer, config.seed), _new_model(config, tokenizer, config.seed + 1)
    solver_trained = pretrain(solver, _examples(tokenizer, SOLVE_TEMPLATE, pool, [row["solution"] for row in pool]),
                              config, config.solver_steps, config.seed, pad, target=config.solver_target)
    if not solver_trained["reached_target"]:
        log.warning("the solver's mean answer probability reached only %s of its target %g in %d steps: raise "
                    "solver_steps", solver_trained["monitored_probability"], config.solver_target, config.solver_steps)
    solver_trained["solution_probability_by_difficulty"] = {
        name: solution_probability_by_difficulty(solver, tokenizer, pools[name]) for name in ("items", "heldout", "probe")}
    labels = [str(row["difficulty"]) for row in pool]
    judge_trained = pretrain(judge, _examples(tokenizer, JUDGE_TEMPLATE, pool, labels), config, config.judge_steps,
                             config.seed + 1, pad)
    models = {"solver": _save(solver, tokenizer, task_dir / "solver", solver_trained),
              "judge": _save(judge, tokenizer, task_dir / "judge", judge_trained)}
    levels = {pool_name: {str(level): sum(row["difficulty"] == level for row in rows) for level in range(1, 6)}
              for pool_name, rows in pools.items()}
    record = {"settings": asdict(config), "vocabulary": len(tokenizer), "difficulty_histograms": levels,
              "models": models}
    write_atomic(record_path, json.dumps(record, indent=2))  # last: the task is built only once this exists
    return record
