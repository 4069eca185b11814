"""What the train tests share: a split directory of tiny arithmetic items (as `curate split` writes one), a
ChatML chat template with the {% generation %} markers that assistant-only loss needs, and a stage stopped as a kill
would stop it (crash_at)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

# ChatML as curate.testing's tiny models speak it, with the assistant's reply (and its end-of-turn) marked.
TRAINING_CHATML = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}<|im_start|>assistant\n{% generation %}"
    "{{ message['content'] }}<|im_end|>{% endgeneration %}\n{% else %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)
SCHEMA = {"item_id": pl.String, "question": pl.String, "reference": pl.String, "domain": pl.String,
          "score": pl.Float64, "side": pl.String}


def arithmetic(count: int, start: int, side: str, score: float) -> pl.DataFrame:
    rows = [(f"{side}-{i}", f"What is {i} + {i + 3}?", str(2 * i + 3), "arith", score, side)
            for i in range(start, start + count)]
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def build_split(root: Path, sft: int = 8, rl: int = 4) -> Path:
    """sft.parquet, rl.parquet, unscored.parquet, one random arm and manifest.json, as `curate split` lays them."""
    root.mkdir(parents=True)
    frames = {"sft": arithmetic(sft, 1, "sft", 2.0), "rl": arithmetic(rl, 100, "rl", 4.0),
              "unscored": arithmetic(0, 0, "unscored", 0.0)}
    for name, frame in frames.items():
        frame.write_parquet(root / f"{name}.parquet")
    (root / "arms" / "random").mkdir(parents=True)
    mixed = pl.concat([frames["sft"], frames["rl"]])
    mixed[::2].write_parquet(root / "arms" / "random" / "sft.parquet")
    mixed[1::2].write_parquet(root / "arms" / "random" / "rl.parquet")
    manifest = {"tau": 3, "tau_method": "fixed", "score": "mean",
                "counts": {name: frame.height for name, frame in frames.items()}}
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root


def write_chat_template(path: Path) -> Path:
    path.write_text(TRAINING_CHATML, encoding="utf-8")
    return path


def invoke_train(*args, columns: int = 80):
    """Run `dereason-train ARGS` in this process (on a terminal `columns` wide); stdout and stderr come back apart."""
    from typer.testing import CliRunner

    from train.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns)})


def weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def changed(before: dict, after: dict) -> list[str]:
    """The tensors that differ (TRL's own tests' check that a trainer trained)."""
    import torch

    assert before.keys() == after.keys()
    return [name for name in before if not torch.equal(before[name], after[name])]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_heldout(path: Path, count: int = 4) -> Path:
    path.write_text("".join(json.dumps({"question": f"What is {i} + {i + 3}?", "answer": str(2 * i + 3)}) + "\n"
                            for i in range(500, 500 + count)), encoding="utf-8")
    return path


def tiny_recipe(root: Path, model: Path, split: Path, **sections) -> Path:
    """SFT (6 steps) then GRPO (3 steps) of the random tiny Qwen2 on the arithmetic split, on one CPU thread, with
    the numeric verifier; an eval section (2 samples of 8 tokens on 4 held-out items) for recipes that evaluate."""
    import yaml

    recipe = {"model": str(model), "data": str(split), "out": str(root / "run"), "gradient_checkpointing": False,
              "batch_size": 4, "save_steps": 2, "verifier": "numeric", "stages": ["sft", "grpo"],
              "sft": {"learning_rate": 1e-3, "max_steps": 6, "chat_template": str(write_chat_template(
                  root / "chatml.jinja"))},
              "grpo": {"learning_rate": 1e-3, "max_steps": 3, "num_generations": 4, "max_completion_length": 8,
                       "format_weight": 0.5},
              "eval": {"heldout": str(write_heldout(root / "heldout.jsonl")), "samples": 2, "temperature": 1.0,
                       "max_tokens": 8}}
    for name, values in sections.items():
        recipe[name] = {**recipe.get(name, {}), **values} if isinstance(values, dict) else values
    if "eval" not in recipe["stages"]:
        del recipe["eval"]
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


class Crash(Exception):
    """What the process sees of a kill right after a checkpoint: training stops there."""


def crash_at(monkeypatch, stage: str, event: str = "on_save", under: str | None = None) -> None:
    """Each invocation of `stage` stops at its first `event`: one of the Trainer's callbacks (on_save: right after a
    checkpoint; on_train_end: after the last step), or `done`: with its final model saved and its closing metrics
    written, as stage.json is to say it is done. `under`: only the stage whose directory is in a folder of that name
    (one stage of a staged run)."""
    import train.trainer
    from train.stage import Stage

    def crash(*args, **kwargs):
        raise Crash(f"{stage} stopped at {event}")

    if event == "done":
        recorded_done = Stage.done
        monkeypatch.setattr(Stage, "done", lambda self, details: crash() if self.name == stage
                            else recorded_done(self, details))
        return
    original = train.trainer.stage_callback

    def with_crash(name, stage_dir, *args):
        callback = original(name, stage_dir, *args)
        if name == stage and under in (None, Path(stage_dir).parent.name):
            setattr(callback, event, crash)
        return callback

    monkeypatch.setattr(train.trainer, "stage_callback", with_crash)


def shrunk_tiny_cpu(root: Path, recipe: Path, smaller: dict):
    """`dereason-train tiny-cpu` on `recipe` with one seed and each section's values replaced by `smaller`'s, the
    recipe written as ROOT/<its name>; the output folder and the command's result (which must succeed)."""
    import yaml

    values = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    for section, replaced in smaller.items():
        values[section] = {**values[section], **replaced}
    values["seeds"] = 1
    path = root / recipe.name
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    result = invoke_train("tiny-cpu", "--recipe", path, "--out", root / "out")
    assert result.exit_code == 0, result.output
    return root / "out", result
