"""`curate export --responses RESPOND_RUN`: the SFT side's response is the respond run's kept response (verified
when the run had --verify). Items without one are refused, or left out and listed in unanswered.jsonl, never
filled. The pipeline is the issue's: the bundled judge scores, split, a teacher responds over the split's SFT
side with --verify gsm8k (the scripted endpoint answers "... \\boxed{k}", k in 1..5, against a reference of 3),
export."""

import json
import logging
import shutil
import sqlite3

import datasets
import polars as pl
import pytest
from conftest import assert_one_line_error, invoke, write_jsonl

from curate.command_config import ExportConfig, SplitConfig
from curate.config import RunConfig
from curate.engine import score
from curate.export.exporters import export_split
from curate.split.directory import make_split
from curate.split.rules import TauRule
from curate.testing import FakeOpenAIServer, build_tokenizer

EASY = [f"What is {i} - {i} + 3?" for i in range(6)]
HARD = [f"Prove that for every integer n > {i}, the sum of the first n odd numbers, after subtracting n^2 and adding "
        "3, equals 3; show every step of the induction and compute the value." for i in range(6)]
ROWS = [{"id": f"q{i:02d}", "question": question, "answer": "3", "response": f"An unchecked solution {i}."}
        for i, question in enumerate(EASY + HARD)]  # an input field named `response` becomes extra_response


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A judge run, its split (τ = 1, all four arms), a verified respond run over the split directory (its SFT side),
    and an unverified respond run over the whole data."""
    work = tmp_path_factory.mktemp("export-responses")
    data = write_jsonl(work / "data.jsonl", ROWS)
    score(RunConfig.from_flat({"source": str(data), "out": str(work / "run")}))  # bundled:tiny-judge
    make_split(work / "run", work / "split", SplitConfig(tau_rule=TauRule(tau=1)))
    with FakeOpenAIServer(answer_format="boxed") as server:
        teacher = ["--model", "teacher", "--backend", "openai", "--base-url", server.base_url, "--temperature", "1.0",
                   "--max-tokens", "64"]
        verified = invoke("respond", work / "split", "--verify", "gsm8k", "--samples", "4", *teacher,
                          "--out", work / "respond")
        unverified = invoke("respond", data, *teacher, "--out", work / "unverified")
    assert verified.exit_code == 0 and unverified.exit_code == 0, verified.output + unverified.output
    return work


def split_ids(work, name: str = "sft") -> list[str]:
    return pl.read_parquet(work / "split" / name)["item_id"].to_list()


def kept_responses(run) -> dict[str, str]:
    per_item = pl.read_parquet(run / "per_item.parquet").filter(pl.col("item_status") == "kept")
    return dict(zip(per_item["item_id"], per_item["response"], strict=True))


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer([row["question"] for row in ROWS] + ["Adding up the steps gives 3.\n\\boxed{3}"] * 5,
                           vocab_size=300)


def test_the_split_and_the_teacher_give_both_cases(work):
    """The fixture is sound: both sides are filled, and the teacher kept a response for some SFT items only."""
    sft, rl = split_ids(work, "sft.parquet"), split_ids(work, "rl.parquet")
    assert sft and rl and len(sft) + len(rl) == len(ROWS)
    kept = kept_responses(work / "respond")
    assert pl.read_parquet(work / "respond" / "items.parquet")["id"].to_list() == sft  # the split's SFT side, by its ids
    assert kept and set(kept) < set(sft)


def test_trl_sft_holds_only_verified_responses_and_lists_the_items_without_one(work, tmp_path, tokenizer):
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    split, respond = work / "split", work / "respond"
    refused = invoke("export", split, "--format", "trl", "--out", tmp_path / "trl", "--responses", respond)
    assert_one_line_error(refused, f"have no kept response in the respond run {respond}")
    assert "none_kept" in refused.stderr and "--skip-unanswered" in refused.stderr
    assert not (tmp_path / "trl").exists()

    result = invoke("export", split, "--format", "trl", "--out", tmp_path / "trl", "--responses", respond,
                    "--skip-unanswered")
    assert result.exit_code == 0, result.output
    out, kept = tmp_path / "trl", kept_responses(respond)
    sft = datasets.load_dataset("parquet", data_files=str(out / "sft.parquet"), split="train")
    assert sft["item_id"] == [i for i in split_ids(work, "sft.parquet") if i in kept]
    for example in sft:
        answer = example["messages"][-1]
        assert answer == {"role": "assistant", "content": kept[example["item_id"]]}
        assert "\\boxed{3}" in answer["content"]  # every response the export trains on was verified right
        assert is_conversational(example)
        text = maybe_apply_chat_template(example, tokenizer)["text"]
        assert text.endswith(f"<|im_start|>assistant\n{answer['content']}<|im_end|>\n")

    unanswered = read_jsonl(out / "unanswered.jsonl")
    sft_ids, rl_ids = set(split_ids(work, "sft.parquet")), set(split_ids(work, "rl.parquet"))
    assert {(r["item_id"], r["reason"], r["n_tried"]) for r in unanswered if r["split"] == "sft"} == {
        (i, "none_kept", 4) for i in sft_ids - set(kept)}
    sft_all = {r["item_id"]: r["reason"] for r in unanswered if r["split"] == "sft_all_sft"}
    assert sft_all == {i: "not_in_respond_run" for i in rl_ids} | {i: "none_kept" for i in sft_ids - set(kept)}
    assert set(pl.read_parquet(out / "sft_all_sft.parquet")["item_id"]) == set(kept)
    assert set(pl.read_parquet(out / "grpo.parquet")["item_id"]) == rl_ids  # RL needs no response: all there
    sides = {"sft": "sft.parquet", **{f"{arm}_sft": f"arms/{arm}/sft.parquet" for arm in
                                      ("random", "reversed", "rl_all", "sft_all")}}
    left_out = {name: sum(i not in kept for i in split_ids(work, path)) for name, path in sides.items()}
    assert sorted((r["split"], r["item_id"]) for r in unanswered) == sorted(
        (name, i) for name, path in sides.items() for i in split_ids(work, path) if i not in kept)
    template = json.loads((respond / "manifest.json").read_text())["identity"]["template"]
    assert json.loads((out / "responses.json").read_text()) == {
        "respond_run": str(respond), "model": "teacher", "template": template, "verifier": "gsm8k", "verified": True,
        "sft_items": len(ROWS), "answered": len(kept), "unanswered": len(ROWS) - len(kept),
        "unanswered_rows": {name: n for name, n in left_out.items() if n},
        "unanswered_reasons": {"none_kept": len(sft_ids - set(kept)), "not_in_respond_run": len(rl_ids)}}


def test_hf_export_carries_the_responses_and_its_card_says_where_they_came_from(work, tmp_path):
    kept = kept_responses(work / "respond")
    out = export_split(work / "split", tmp_path / "hf",
                       ExportConfig(format="hf", responses=str(work / "respond"), skip_unanswered=True))
    loaded = datasets.load_from_disk(str(out))
    assert dict(zip(loaded["sft"]["item_id"], loaded["sft"]["response"], strict=True)) == kept
    assert set(loaded["rl"]["response"]) == {None}
    inputs = {row["id"]: row["response"] for row in ROWS}
    for split in ("sft", "rl"):
        assert loaded[split]["extra_response"] == [inputs[i] for i in loaded[split]["item_id"]]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "## SFT responses" in card and f"`{work / 'respond'}` (model `teacher`" in card
    assert "the verifier `gsm8k` judged correct" in card and "not verified" not in card
    assert f"{len(ROWS) - len(kept)} of the {len(ROWS)} SFT-side items have no kept response" in card
    assert "| none_kept |" in card and "| not_in_respond_run |" in card


def test_unverified_responses_are_exported_and_said_to_be_unverified(work, tmp_path, caplog):
    """A respond run over every item answers the arms too, so nothing is left out and no flag is needed."""
    unverified = work / "unverified"
    with caplog.at_level(logging.WARNING, logger="curate.export.exporters"):
        out = export_split(work / "split", tmp_path / "trl", ExportConfig(format="trl", responses=str(unverified)))
    assert "were not verified" in caplog.text
    sft = pl.read_parquet(out / "sft.parquet")
    kept = kept_responses(unverified)
    assert sft["item_id"].to_list() == split_ids(work, "sft.parquet")
    assert [m[-1]["content"] for m in sft["messages"].to_list()] == [kept[i] for i in sft["item_id"]]
    made = json.loads((out / "responses.json").read_text())
    assert (made["verified"], made["verifier"], made["unanswered"]) == (False, None, 0)
    assert (out / "unanswered.jsonl").read_text() == ""
    card = (export_split(work / "split", tmp_path / "hf", ExportConfig(format="hf", responses=str(unverified)))
            / "README.md").read_text()
    assert "**not verified**" in card and "judged correct" not in card
    verl = pl.read_parquet(export_split(work / "split", tmp_path / "verl",
                                        ExportConfig(format="verl", responses=str(unverified))) / "sft.parquet")
    assert [m[-1]["content"] for m in verl["messages"].to_list()] == [kept[i] for i in sft["item_id"]]


def test_the_responses_are_read_from_the_store_not_a_stale_per_item_file(work, tmp_path):
    """A respond run stopped before its end keeps an older per_item.parquet: an item it claims is kept but whose
    responses are not stored is not_responded, and so is an item the run has not reached."""
    stopped = tmp_path / "stopped"
    shutil.copytree(work / "respond", stopped)
    gone = min(kept_responses(stopped))
    with sqlite3.connect(stopped / "judgments.sqlite") as connection:
        connection.execute("DELETE FROM judgments WHERE item_id = ?", (gone,))
    connection.close()
    out = export_split(work / "split", tmp_path / "trl",
                       ExportConfig(format="trl", responses=str(stopped), skip_unanswered=True))
    assert gone not in pl.read_parquet(out / "sft.parquet")["item_id"].to_list()
    assert {"split": "sft", "item_id": gone, "reason": "not_responded", "n_tried": 0} in read_jsonl(
        out / "unanswered.jsonl")
