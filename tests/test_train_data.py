"""train.data: the rows each stage trains on, from a split directory (prompts rendered by the response template
`curate solve` evaluates with) or from a TRL export, and the SFT targets from a `curate respond` run."""

import polars as pl
import pytest
from conftest import invoke
from trainkit import build_split

from curate.command_config import ExportConfig
from curate.errors import ConfigError, DataError
from curate.export.exporters import export_split
from curate.testing import FakeOpenAIServer
from train.config import GrpoConfig, SftConfig
from train.data import grpo_data, sft_data


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return build_split(tmp_path_factory.mktemp("data") / "split")


def sft(data, **values):
    return SftConfig(model="m", data=str(data), out="o", **values)


def test_sft_rows_are_the_rendered_prompt_and_the_reference(split):
    data = sft_data(sft(split))
    first = data.rows.row(0, named=True)
    system, user, assistant = first["messages"]
    assert system["role"] == "system" and "\\boxed{answer}" in system["content"]  # solve/step_by_step's
    assert user == {"role": "user", "content": "What is 1 + 4?"} and assistant == {"role": "assistant", "content": "5"}
    assert data.record["rows"] == 8 and data.record["responses"] == {"column": "reference"}
    assert data.record["template"].startswith("solve/step_by_step@") and data.record["split"] == "sft"


def test_items_without_a_target_are_refused_or_left_out_and_listed(split, tmp_path):
    other = build_split(tmp_path / "other")
    frame = pl.read_parquet(other / "sft.parquet")
    frame.with_columns(pl.when(pl.col("item_id") == "sft-3").then(pl.lit(" ")).otherwise(pl.col("reference"))
                       .alias("reference")).write_parquet(other / "sft.parquet")
    with pytest.raises(DataError, match="1 of 8 items of split 'sft' .* have no 'reference' \\(response_field; e.g. "
                                        "'sft-3'\\).* pass --skip-unanswered"):
        sft_data(sft(other))
    data = sft_data(sft(other, skip_unanswered=True))
    assert data.record["rows"] == 7 and data.record["left_out_without_target"] == 1
    assert data.left_out.select("item_id", "reason").rows() == [("sft-3", "no_reference")]


def test_grpo_rows_carry_reference_and_choices_and_leave_out_items_without_a_reference(split, tmp_path):
    frame = pl.read_parquet(split / "rl.parquet").with_columns(
        pl.when(pl.col("item_id") == "rl-100").then(None).otherwise(pl.col("reference")).alias("reference"))
    other = build_split(tmp_path / "other")
    frame.write_parquet(other / "rl.parquet")
    data = grpo_data(GrpoConfig(model="m", data=str(other), out="o"))
    assert data.rows.columns == ["prompt", "reference", "choices", "item_id"]
    assert data.rows["item_id"].to_list() == ["rl-101", "rl-102", "rl-103"]
    assert data.record["left_out_without_reference"] == 1
    assert data.rows["prompt"][0][1]["content"] == "What is 101 + 104?"


def test_a_trl_export_trains_as_exported(split, tmp_path):
    exported = export_split(split, tmp_path / "trl", ExportConfig(format="trl", response_field="reference"))
    data = sft_data(sft(exported))
    assert data.record["prompts"] == "as exported" and data.record["source"] == str(exported / "sft.parquet")
    assert data.rows["messages"][0].to_list() == [{"role": "user", "content": "What is 1 + 4?\n\nLet's think step by "
                                                   "step and output the final answer within \\boxed{}."},
                                                  {"role": "assistant", "content": "5"}]
    grpo = grpo_data(GrpoConfig(model="m", data=str(exported / "grpo.parquet"), out="o", verifier="numeric"))
    assert grpo.rows["reference"].to_list() == ["203", "205", "207", "209"]
    assert sft_data(sft(exported)).record["fingerprint"] == data.record["fingerprint"]  # same rows, same fingerprint


def test_sft_targets_from_a_respond_run(split, tmp_path):
    with FakeOpenAIServer(answer_format="boxed") as server:
        teacher = ["--model", "teacher", "--backend", "openai", "--base-url", server.base_url, "--max-tokens", "32"]
        assert invoke("respond", split, *teacher, "--out", tmp_path / "all").exit_code == 0
        assert invoke("respond", split, *teacher, "--limit", 5, "--out", tmp_path / "some").exit_code == 0
    kept = pl.read_parquet(tmp_path / "all" / "per_item.parquet")
    data = sft_data(sft(split, responses=str(tmp_path / "all")))
    targets = {row["item_id"]: row["messages"][-1]["content"] for row in data.rows.iter_rows(named=True)}
    assert targets == dict(zip(kept["item_id"], kept["response"], strict=True)) and len(targets) == 8
    assert data.record["responses"]["verified"] is False and data.record["responses"]["respond_run"] == str(
        tmp_path / "all")
    with pytest.raises(ConfigError, match="3 SFT-side item\\(s\\) have no kept response .* \\(3 not_in_respond_run"):
        sft_data(sft(split, responses=str(tmp_path / "some")))
    partial = sft_data(sft(split, responses=str(tmp_path / "some"), skip_unanswered=True))
    assert partial.record["rows"] == 5 and partial.record["responses"]["unanswered"] == 3
    assert partial.record["left_out_without_target"] == 3
    assert partial.left_out["reason"].to_list() == ["not_in_respond_run"] * 3
    with pytest.raises(ConfigError, match="answer the SFT side of a split; 'rl' is not one"):
        sft_data(sft(split, split="rl", responses=str(tmp_path / "all")))
