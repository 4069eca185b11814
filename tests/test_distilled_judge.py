"""The bundled distilled judge (`--model bundled:smollm2-judge`): a LoRA adapter in the package over SmolLM2-135M-Instruct,
built by scripts/build_distilled_judge.py, whose eval.json records what it measured. These tests check that what ships
is what was measured: the adapter file is the one whose sha256 eval.json holds, and scoring through the package gives
the first math-sample items the expected scores the build recorded for them."""

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
from conftest import invoke

from curate.backends import models

FOLDER = models.ADAPTER_MODELS[models.DISTILLED_JUDGE].folder
RECORD = json.loads((FOLDER / "eval.json").read_text(encoding="utf-8"))


def test_the_shipped_adapter_is_the_one_the_build_measured():
    weights = (FOLDER / "adapter_model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == RECORD["adapter_sha256"] and len(weights) == RECORD["adapter_bytes"]
    config = json.loads((FOLDER / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == models.SMOLLM2  # not a folder of the machine that built it
    assert not Path(config["base_model_name_or_path"]).is_absolute()


def test_the_bundled_distilled_judge_gives_the_scores_its_build_recorded(tmp_path, sample_rows):
    """The adapter merged over SmolLM2 scores as it did when it was built. Without the adapter, SmolLM2 through the
    same template gives each of these items an expected score at least 0.13 away from the recorded one (0.54 on average,
    measured), far outside the tolerance of 0.02."""
    reference = RECORD["reference_scores"]
    rows = [row for row in sample_rows if row["id"] in reference]
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    result = invoke("score", data, "--model", models.DISTILLED_JUDGE, "--template", RECORD["template"],
                    "--top-logprobs", 20, "--max-tokens", 1, "--out", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    per_item = pl.read_parquet(tmp_path / "run" / "per_item.parquet")
    scored = dict(zip(per_item["item_id"], per_item["expected_mean"], strict=True))
    assert scored.keys() == reference.keys()
    for item, expected in reference.items():
        assert scored[item] == pytest.approx(expected, abs=0.02), item
