"""`dereason-train judge`: a distilled judge learns the levels of labelled items and is then a judge like any: its
held-out items are scored through curate's engine and checked by curate stats."""

import json

import polars as pl
import pytest
from conftest import write_jsonl
from fakes import ScriptedBackend

from curate.config import RunConfig
from curate.engine import score
from curate.errors import ConfigError
from curate.settings import from_flat
from train.judge import JudgeConfig, judge_data, train_judge
from train.judge_data import held_out, to_levels

WORDS = ("apple", "brick", "cloud", "delta", "ember")  # level 1..5: a rule a tiny model learns from the text


def items(count: int) -> list[dict]:
    return [{"id": f"q{i:03d}", "question": f"A problem about the {WORDS[i % 5]} number {i}.", "level": i % 5 + 1,
             "pass_rate": 1 - (i % 5) / 5} for i in range(count)]


def config(tmp_path, model, **overrides) -> JudgeConfig:
    data = write_jsonl(tmp_path / "items.jsonl", items(300))
    return from_flat(JudgeConfig, {"model": str(model), "data": str(data), "label": "level", "out": str(tmp_path / "judge"),
                                   "lora": False, "learning_rate": 3e-3, "max_steps": 120, "batch_size": 32,
                                   "warmup": 0.1, "heldout": 0.2, "device": "cpu", "save_steps": 1000,
                                   "logging_steps": 40, **overrides})


def test_a_distilled_judge_learns_the_levels_and_is_checked_on_held_out_items(tmp_path, random_model):
    record = train_judge(config(tmp_path, random_model))
    heldout = record["judge"]["heldout"]
    assert 40 <= heldout["items"] <= 80  # 20% of 300, by a seeded hash of the id
    assert heldout["vs_level"]["spearman"]["value"] > 0.9
    judge_file = json.loads((tmp_path / "judge" / "judge.json").read_text())
    assert judge_file["labels"]["label_scale"] == "as_is" and judge_file["labels"]["training_per_level"]["3"] > 40
    # The trained judge is a judge like any other: curate score takes it by its folder.
    again = score(RunConfig.from_flat({"source": str(tmp_path / "judge" / "heldout.jsonl"), "out": str(tmp_path / "r"),
                                       "model": str(tmp_path / "judge" / "final"),
                                       "template": "difficulty/level_prefilled", "top_logprobs": 5, "max_tokens": 1}))
    assert again.summary["status_counts"]["ok"] == heldout["items"]
    assert train_judge(config(tmp_path, random_model))["judge"] == record["judge"]  # done: nothing trains again


def test_lora_in_the_last_layers_keeps_the_adapter_beside_the_merged_model(tmp_path, random_model):
    train_judge(config(tmp_path, random_model, lora=True, lora_layers=1, max_steps=4, per_level=10))
    adapter = json.loads((tmp_path / "judge" / "adapter" / "adapter_config.json").read_text())
    assert adapter["layers_to_transform"] == [1] and (tmp_path / "judge" / "final" / "config.json").is_file()


def test_levels_from_quantiles_of_a_pass_rate_harder_when_low(tmp_path, random_model):
    data, heldout = judge_data(config(tmp_path, random_model, label="pass_rate", harder_when="low"))
    assert data.record["label_scale"] == "quantiles" and data.record["harder_when"] == "low"
    levels = pl.DataFrame({"id": [r["id"] for r in items(300)], "level": [r["level"] for r in items(300)]})
    joined = data.rows.rename({"item_id": "id"}).join(levels, on="id", suffix="_known")
    assert (joined["level"] == joined["level_known"]).all()  # pass rate 1 - (i % 5) / 5: the same five levels
    assert set(heldout.columns) >= {"id", "label", "level"}


def test_levels_from_a_score_run(tmp_path, random_model):
    data = write_jsonl(tmp_path / "items.jsonl", items(300))
    score(RunConfig.from_flat({"source": str(data), "out": str(tmp_path / "big-judge"), "template": "difficulty/intensity"}),
          backend=ScriptedBackend(lambda item_id, idx: (f"<score>{int(item_id[1:]) % 5 + 1}</score>", "stop")))
    rows, _ = judge_data(config(tmp_path, random_model, label=str(tmp_path / "big-judge")))
    assert rows.record["kind"] == "score run (mean score)" and rows.record["label_scale"] == "as_is"
    with pytest.raises(ConfigError, match="is a folder, whose direction is known: drop harder_when"):
        judge_data(config(tmp_path, random_model, label=str(tmp_path / "big-judge"), harder_when="high"))


def test_levels_are_the_labels_when_they_are_1_to_5_and_quantiles_otherwise():
    assert to_levels(pl.Series([1, 5, 3]), "auto")[0].to_list() == [1, 5, 3]
    levels, how = to_levels(pl.Series([float(v) for v in range(100)]), "auto")
    assert how["label_scale"] == "quantiles" and levels.value_counts()["count"].to_list() == [20] * 5
    with pytest.raises(ConfigError, match="as_is needs every label an integer in 1..5"):
        to_levels(pl.Series([0.5, 2.0]), "as_is")


def test_held_out_items_stay_out_whatever_else_changes():
    first = pl.DataFrame({"id": [f"x{i}" for i in range(1000)]})
    assert held_out(first, 0.1, 0).to_list()[:500] == held_out(first.head(500), 0.1, 0).to_list()
    assert 60 < held_out(first, 0.1, 0).sum() < 140
