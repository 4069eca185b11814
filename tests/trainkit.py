"""What the train tests share: a split directory of tiny arithmetic items (as `curate split` writes one) and a
ChatML chat template with the {% generation %} markers that assistant-only loss needs."""

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
