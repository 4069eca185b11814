import json

import datasets
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from matplotlib.image import imread

from curate.command_config import FORMATS, ExportConfig
from curate.errors import ConfigError, DataError
from curate.export.card import dataset_card
from curate.export.exporters import export_split, push_to_hub

MANIFEST = {
    "tau": 2.5, "tau_method": "fixed", "score": "mean", "counts": {"sft": 3, "rl": 2, "unscored": 1},
    "run": {"template": "intensity-v1@abc123", "model": "judge-model-7b", "sampling": {"n": 3, "temperature": 0.7},
            "input_fingerprint": "sha256:feedbeef"},
    "calibration": {"target": "pass_rate", "n_fit": 40, "spearman": 0.61}, "seed": 17,
    "dereason_version": "0.1.0", "arms": ["random"], "stages": 2,
}
SCHEMA = {"item_id": pl.String, "question": pl.String, "reference": pl.String, "domain": pl.String,
          "score": pl.Float64, "side": pl.String}
SFT = [("a", "What is 1+1?", "2", "arith", 1.0, "sft", "1+1 = 2", 1),
       ("b", "What is 2*3?", "6", "arith", 2.0, "sft", "2*3 = 6", 1),
       ("c", "Solve x+1=3.", "2", None, 2.5, "sft", "x = 3-1 = 2", 2)]
RL = [("d", "Prove there are infinitely many primes.", None, "number theory", 4.0, "rl", 5),
      ("e", "Find all n with n^2 | 2^n + 1.", "1, 3", "number theory", 5.0, "rl", 5)]
UNSCORED = [("f", "What is 7-4?", "3", "arith", None, "unscored", 1)]
SPLITS = ["sft", "rl", "unscored", "random_sft", "random_rl", "stage_1", "stage_2"]
ROWS = {"sft": 3, "rl": 2, "unscored": 1, "random_sft": 2, "random_rl": 3, "stage_1": 1, "stage_2": 1}
VERL_COLUMNS = ["data_source", "prompt", "ability", "reward_model", "extra_info"]
BOXED = "Let's think step by step and output the final answer within \\boxed{}."  # instruct/boxed, the default
LABEL_BOXED = "Let's think step by step and output the label of the correct option within \\boxed{}."


def user(question: str) -> str:
    """The user turn instruct/boxed writes for a question without options."""
    return f"{question}\n\n{BOXED}"


def frame(rows, response: bool) -> pl.DataFrame:
    extra = {"response": pl.String, "level": pl.Int64} if response else {"level": pl.Int64}
    return pl.DataFrame(rows, schema={**SCHEMA, **extra}, orient="row")


def build_split_dir(root, with_response: bool = True):
    """A split directory as the split step writes it: base splits, one ablation arm, two RL stages."""
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps(MANIFEST))
    sft = frame(SFT, True) if with_response else frame([r[:6] + r[7:] for r in SFT], False)
    sft.write_parquet(root / "sft.parquet")
    frame(RL, False).write_parquet(root / "rl.parquet")
    frame(UNSCORED, False).write_parquet(root / "unscored.parquet")
    (root / "arms" / "random").mkdir(parents=True)
    sft.filter(pl.col("item_id").is_in(["a", "c"])).write_parquet(root / "arms" / "random" / "sft.parquet")
    pl.concat([sft.filter(pl.col("item_id") == "b").drop("response", strict=False), frame(RL, False)]).write_parquet(
        root / "arms" / "random" / "rl.parquet")
    (root / "stages").mkdir()
    frame(RL[:1], False).write_parquet(root / "stages" / "stage_1.parquet")
    frame(RL[1:], False).write_parquet(root / "stages" / "stage_2.parquet")
    return root


@pytest.fixture
def split_dir(tmp_path):
    return build_split_dir(tmp_path / "split")


@pytest.fixture(scope="module")
def tokenizer():
    from curate.testing import build_tokenizer

    return build_tokenizer([q for rows in (SFT, RL, UNSCORED) for r in rows for q in r[1:3] if q] * 5, vocab_size=300)


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---", 2)[1])


def test_hf_export_loads_with_card_and_histogram(split_dir, tmp_path):
    out = export_split(split_dir, tmp_path / "hf", ExportConfig(format="hf"))
    loaded = datasets.load_from_disk(str(out))
    assert list(loaded) == SPLITS
    assert {name: loaded[name].num_rows for name in loaded} == ROWS
    columns = loaded["sft"].column_names
    assert columns[:6] == list(SCHEMA) and {"response", "level"} <= set(columns)
    assert all(loaded[name].column_names == columns for name in loaded)  # one config: same columns everywhere
    assert loaded["rl"]["response"] == [None, None] and loaded["unscored"]["score"] == [None]
    assert loaded["sft"]["reference"] == ["2", "6", "2"] and loaded["rl"]["reference"] == [None, "1, 3"]
    assert loaded["sft"].features["question"] == datasets.Value("string")  # not large_string
    # load_dataset reads the card's configs, which name data/<split>-*: the files the Hub gets from push_to_hub
    from_files = datasets.load_dataset(str(out))
    assert list(from_files) == SPLITS
    for name in SPLITS:
        assert from_files[name].features == loaded[name].features and from_files[name][:] == loaded[name][:], name

    card = (out / "README.md").read_text(encoding="utf-8")
    meta = front_matter(card)
    assert meta["license"] == "unknown" and meta["task_categories"] == ["text-generation"]
    assert meta["tags"] == ["dereason", "difficulty", "reasoning"]
    assert [f["split"] for f in meta["configs"][0]["data_files"]] == SPLITS
    assert "τ = 2.5" in card and "fixed" in card and "mean score" in card
    for name, rows in ROWS.items():
        assert f"| {name} | {rows} |" in card
    for text in ("judge-model-7b", "intensity-v1@abc123", "sampling.temperature", "0.7", "pass_rate", "0.61",
                 "sha256:feedbeef", "| seed | 17 |", "0.1.0", "![score histogram](score_histogram.png)"):
        assert text in card
    image = imread(out / "score_histogram.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.mark.parametrize("fmt,loader", [("parquet", "parquet"), ("jsonl", "json")])
def test_parquet_and_jsonl_load_with_datasets(split_dir, tmp_path, fmt, loader):
    out = export_split(split_dir, tmp_path / fmt, ExportConfig(format=fmt))
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.{fmt}" for name in SPLITS)
    loaded = datasets.load_dataset(loader, data_files={name: str(out / f"{name}.{fmt}") for name in SPLITS})
    assert {name: loaded[name].num_rows for name in loaded} == ROWS
    for name in SPLITS:
        assert loaded[name].column_names[:6] == list(SCHEMA)
        assert {"response", "level"} <= set(loaded[name].column_names)
    assert loaded["sft"]["item_id"] == ["a", "b", "c"] and loaded["sft"]["score"] == [1.0, 2.0, 2.5]
    assert loaded["sft"]["response"][2] == "x = 3-1 = 2" and loaded["unscored"]["score"] == [None]
    assert loaded["stage_1"]["item_id"] == ["d"] and loaded["stage_2"]["item_id"] == ["e"]


@pytest.mark.parametrize("system_prompt", [None, "Think step by step."])
def test_trl_export_is_conversational_for_trl(split_dir, tmp_path, tokenizer, system_prompt):
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    out = export_split(split_dir, tmp_path / "trl", ExportConfig(format="trl", system_prompt=system_prompt))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", "sft.parquet", "grpo.parquet", "random_sft.parquet", "random_grpo.parquet", "stage_1.parquet",
         "stage_2.parquet"])
    sft = datasets.load_dataset("parquet", data_files=str(out / "sft.parquet"), split="train")
    grpo = datasets.load_dataset("parquet", data_files=str(out / "grpo.parquet"), split="train")
    assert sft.column_names == ["item_id", "messages", "score"] and sft.num_rows == 3
    assert grpo.column_names == ["prompt", "reference", "choices", "item_id", "score"] and grpo.num_rows == 2
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    assert sft[0]["messages"] == [*system, {"role": "user", "content": user("What is 1+1?")},
                                  {"role": "assistant", "content": "1+1 = 2"}]
    assert grpo["reference"] == [None, "1, 3"] and grpo["item_id"] == ["d", "e"] and grpo["score"] == [4.0, 5.0]
    assert grpo["choices"] == [None, None]
    for example in sft:
        assert is_conversational(example)
        text = maybe_apply_chat_template(example, tokenizer)["text"]
        assert f"<|im_start|>user\n{example['messages'][-2]['content']}<|im_end|>" in text
        assert text.endswith(f"<|im_start|>assistant\n{example['messages'][-1]['content']}<|im_end|>\n")
        assert (f"<|im_start|>system\n{system_prompt}<|im_end|>" in text) == bool(system_prompt)
    for example in grpo:
        assert example["prompt"] == [*system, {"role": "user", "content": example["prompt"][-1]["content"]}]
        assert is_conversational(example)
        prompt = maybe_apply_chat_template(example, tokenizer)["prompt"]
        assert prompt.endswith(f"{example['prompt'][-1]['content']}<|im_end|>\n<|im_start|>assistant\n")
    stage = datasets.load_dataset("parquet", data_files=str(out / "stage_2.parquet"), split="train")
    assert stage.column_names == grpo.column_names and stage["item_id"] == ["e"]


def test_trl_export_needs_a_response_column(tmp_path):
    split_dir = build_split_dir(tmp_path / "split", with_response=False)
    with pytest.raises(ConfigError, match=r"sft split has no 'response' column.*teacher"):
        export_split(split_dir, tmp_path / "trl", ExportConfig(format="trl"))
    assert not (tmp_path / "trl").exists()  # nothing half-written
    with pytest.raises(ConfigError, match=r"'answer'"):
        export_split(build_split_dir(tmp_path / "split2"), tmp_path / "trl",
                     ExportConfig(format="trl", response_field="answer"))
    complete = build_split_dir(tmp_path / "split3")
    sft = pl.read_parquet(complete / "sft.parquet")
    sft.with_columns(response=pl.when(pl.col("item_id") == "b").then(None).otherwise("response")).write_parquet(
        complete / "sft.parquet")
    with pytest.raises(ConfigError, match=r"1 of 3 items of the sft split have no 'response'"):
        export_split(complete, tmp_path / "trl", ExportConfig(format="trl"))
    pl.read_parquet(split_dir / "sft.parquet")  # the input is untouched


def test_verl_export_has_verl_columns(split_dir, tmp_path):
    out = export_split(split_dir, tmp_path / "verl",
                       ExportConfig(format="verl", system_prompt="Be brief.", data_source="math/dereason"))
    assert sorted(p.name for p in out.iterdir()) == sorted(["README.md", "sft.parquet", "rl.parquet",
                                                            "random_sft.parquet", "random_rl.parquet",
                                                            "stage_1.parquet", "stage_2.parquet"])
    message = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    option = pa.list_(pa.struct([("label", pa.string()), ("text", pa.string())]))
    expected = pa.schema([("data_source", pa.string()), ("prompt", message), ("ability", pa.string()),
                          ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
                          ("extra_info", pa.struct([("item_id", pa.string()), ("difficulty", pa.float64()),
                                                    ("index", pa.int64()), ("choices", option)]))])
    schema = pq.read_schema(out / "rl.parquet")
    assert schema.names == VERL_COLUMNS and schema.equals(expected)
    rows = pq.read_table(out / "rl.parquet").to_pylist()
    assert [r["reward_model"] for r in rows] == [{"style": "rule", "ground_truth": ref} for _, _, ref, *_ in RL]
    # index: the item's place among the export's items (sft a, b, c first), not its row in the file
    assert [r["extra_info"] for r in rows] == [{"item_id": "d", "difficulty": 4.0, "index": 3, "choices": None},
                                               {"item_id": "e", "difficulty": 5.0, "index": 4, "choices": None}]
    assert rows[1]["prompt"] == [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": user(RL[1][1])}]
    assert {r["data_source"] for r in rows} == {"math/dereason"}
    assert [r["ability"] for r in rows] == ["number theory", "number theory"]  # the domain, by default
    sft = pq.read_table(out / "sft.parquet")
    assert sft.schema.names == [*VERL_COLUMNS, "messages"] and sft.schema.field("messages").type == message
    assert sft.column("reward_model").to_pylist()[1] == {"style": "rule", "ground_truth": "6"}
    assert sft.column("messages").to_pylist()[0][-1] == {"role": "assistant", "content": "1+1 = 2"}
    assert pq.read_schema(out / "stage_1.parquet").equals(expected)
    loaded = datasets.load_dataset("parquet", data_files=str(out / "rl.parquet"), split="train")
    assert loaded.num_rows == 2 and loaded[0]["reward_model"]["style"] == "rule"


def test_push_to_hub_uploads_with_token_from_env(split_dir, tmp_path, monkeypatch):
    from huggingface_hub import HfApi, constants

    out = export_split(split_dir, tmp_path / "hf", ExportConfig(format="hf"))
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE"):  # the tests run offline
        push_to_hub(out, "someone/dereason-split")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    secret = "hf_test_secret_do_not_write_0123456789"
    monkeypatch.setenv("DEREASON_TEST_TOKEN", secret)
    pushed, uploaded = [], []
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub",
                        lambda self, repo_id, **kw: pushed.append((list(self), {n: self[n].num_rows for n in self},
                                                                   repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_file", lambda self, **kw: uploaded.append(kw))
    url = push_to_hub(out, "someone/dereason-split", token_env="DEREASON_TEST_TOKEN")
    assert url == "https://huggingface.co/datasets/someone/dereason-split"
    [(splits, rows, repo_id, kwargs)] = pushed
    assert splits == SPLITS and rows == ROWS and repo_id == "someone/dereason-split"
    assert kwargs == {"private": True, "token": secret}
    assert [u["path_in_repo"] for u in uploaded] == ["score_histogram.png", "README.md"]
    for upload in uploaded:
        assert upload["repo_id"] == "someone/dereason-split" and upload["repo_type"] == "dataset"
        assert upload["token"] == secret and upload["path_or_fileobj"] == str(out / upload["path_in_repo"])
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):  # the token reached no file
        assert secret.encode() not in path.read_bytes(), path
    push_to_hub(out, "someone/public", private=False, token_env="DEREASON_UNSET_TOKEN")
    assert pushed[-1][3] == {"private": False, "token": None}
    with pytest.raises(ConfigError, match="not an hf export"):
        push_to_hub(tmp_path, "someone/x")


def test_bad_inputs_are_named(split_dir, tmp_path):
    with pytest.raises(ConfigError, match="choose from hf, parquet, jsonl, trl, verl"):
        export_split(split_dir, tmp_path / "out", ExportConfig(format="csv"))
    assert set(FORMATS) == {"hf", "parquet", "jsonl", "trl", "verl"}
    with pytest.raises(DataError, match="not a split directory"):
        export_split(tmp_path, tmp_path / "out", ExportConfig(format="parquet"))
    with pytest.raises(ConfigError, match="is the split directory it reads"):
        export_split(split_dir, split_dir, ExportConfig(format="parquet"))
    manifest = json.loads((split_dir / "manifest.json").read_text())
    manifest["counts"]["rl"] = 7
    (split_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="rl.parquet holds 2 rows, its manifest counts 7"):
        export_split(split_dir, tmp_path / "out", ExportConfig(format="parquet"))


def test_empty_arm_and_missing_calibration(tmp_path, tokenizer):
    split_dir = build_split_dir(tmp_path / "split")
    (split_dir / "arms" / "rl_all").mkdir()
    frame([], False).write_parquet(split_dir / "arms" / "rl_all" / "sft.parquet")  # empty, and no response column
    pl.concat([frame(RL, False), frame(UNSCORED, False)]).write_parquet(split_dir / "arms" / "rl_all" / "rl.parquet")
    # `datasets` cannot load a parquet file without rows, so trl and verl list an empty split instead of writing it
    trl = export_split(split_dir, tmp_path / "trl", ExportConfig(format="trl"))
    assert not (trl / "rl_all_sft.parquet").exists() and pl.read_parquet(trl / "rl_all_grpo.parquet").height == 3
    assert "Not written, as they hold no rows: rl_all_sft." in (trl / "README.md").read_text(encoding="utf-8")
    verl = export_split(split_dir, tmp_path / "verl", ExportConfig(format="verl"))
    assert not (verl / "rl_all_sft.parquet").exists()
    assert pq.read_schema(verl / "rl_all_rl.parquet").names == VERL_COLUMNS
    assert pq.read_table(verl / "rl_all_rl.parquet").column("extra_info").to_pylist()[2]["difficulty"] is None
    hf = datasets.load_from_disk(str(export_split(split_dir, tmp_path / "hf", ExportConfig(format="hf"))))
    assert list(hf)[5:7] == ["rl_all_sft", "rl_all_rl"] and hf["rl_all_sft"].num_rows == 0
    from_files = datasets.load_dataset(str(tmp_path / "hf"))  # an empty split cannot be loaded: it is left out
    assert list(from_files) == [name for name in hf if name != "rl_all_sft"]
    assert "left out of the configs (`datasets.load_dataset` cannot load an empty split): rl_all_sft." in (
        tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    card = dataset_card({**MANIFEST, "calibration": None, "license": "cc-by-4.0"}, {"sft": 3}, "h.png")
    assert front_matter(card)["license"] == "cc-by-4.0" and "No calibration" in card
    assert "![score histogram](h.png)" in card


def test_trl_trainers_accept_the_export(split_dir, tmp_path, random_model):
    """One SFT and one GRPO step on a random tiny Qwen2: TRL's own preprocessing takes the files as written, and
    curate's reward function (curate.rewards.trl_reward) receives each item's `reference` (its final answer) and
    `choices` from the GRPO file, with or without options."""
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from curate.rewards import trl_reward

    out = export_split(split_dir, tmp_path / "trl", ExportConfig(format="trl", system_prompt="Be brief."))
    tokenizer = AutoTokenizer.from_pretrained(random_model)
    common = {"max_steps": 1, "per_device_train_batch_size": 2, "report_to": [], "use_cpu": True,
              "save_strategy": "no", "disable_tqdm": True}
    sft = datasets.load_dataset("parquet", data_files=str(out / "sft.parquet"), split="train")
    trainer = SFTTrainer(model=str(random_model), processing_class=tokenizer, train_dataset=sft,
                         args=SFTConfig(output_dir=str(tmp_path / "sft-run"), **common))
    assert trainer.train().global_step == 1
    seen, dereason = [], trl_reward("math")

    def reward(completions, reference, choices, item_id, **kwargs):
        scores = dereason(completions, reference=reference, choices=choices, item_id=item_id, **kwargs)
        seen.extend(zip(item_id, reference, map(json.dumps, choices), scores, strict=True))
        return scores

    grpo_out = export_split(build_choice_split(tmp_path / "choice-split"), tmp_path / "trl-choices",
                            ExportConfig(format="trl"))
    grpo = datasets.load_dataset("parquet", data_files=str(grpo_out / "grpo.parquet"), split="train")
    trainer = GRPOTrainer(model=str(random_model), processing_class=tokenizer, reward_funcs=reward, train_dataset=grpo,
                          args=GRPOConfig(output_dir=str(tmp_path / "grpo-run"), num_generations=2,
                                          max_completion_length=4, seed=0,
                                          **{**common, "per_device_train_batch_size": 4}))  # both prompts, twice
    assert trainer.train().global_step == 1
    assert {item[:3] for item in seen} == {("m2", None, "null"), ("m3", "3", json.dumps(CHOICES[2]))}
    # Four random tokens answer nothing (0.0); m2 has no reference, which the verifier cannot decide (no reward).
    assert {(item[0], item[3]) for item in seen} == {("m2", None), ("m3", 0.0)}


def test_per_domain_tau_without_unscored(tmp_path):
    """The split writer's other manifest shapes: τ per domain, arms and stages as row counts, unscored dropped."""
    split_dir = build_split_dir(tmp_path / "split")
    (split_dir / "unscored.parquet").unlink()
    manifest = {**MANIFEST, "tau": {"arith": 2.0, "number theory": 4.5}, "tau_method": "per_domain_quantile",
                "tau_detail": {"rule": "quantile", "value": 0.5}, "unscored_written": False,
                "arms": {"random": {"sft": 2, "rl": 3}}, "stages": {"1": 1, "2": 1},
                "hygiene": {"deduplicated": True, "removed": 4}}
    (split_dir / "manifest.json").write_text(json.dumps(manifest))
    out = export_split(split_dir, tmp_path / "hf", ExportConfig(format="hf"))
    assert list(datasets.load_from_disk(str(out))) == [s for s in SPLITS if s != "unscored"]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert front_matter(card)["tags"] == ["dereason", "difficulty", "reasoning"]
    for text in ("τ of its domain", "| number theory | 4.5 |", "| arith | 2 |", "per_domain_quantile",
                 "| rule | quantile |", "are left out", "2 stages", "Ablation arms",
                 "| hygiene | deduplicated: true; removed: 4 |"):
        assert text in card, text
    assert "| unscored |" not in card and "dashed line" not in card
    assert imread(out / "score_histogram.png").ndim == 3
    verl = export_split(split_dir, tmp_path / "verl", ExportConfig(format="verl"))
    assert pq.read_table(verl / "rl.parquet").num_rows == 2


CHOICES = [[{"label": "A", "text": "3"}, {"label": "B", "text": "4"}], None,
           [{"label": "1", "text": "oxygen"}, {"label": "2", "text": "carbon"}, {"label": "3", "text": "neon"}]]


def build_choice_split(root):
    """A split whose items carry labelled options (curate.data.choices.CHOICE), as the split step writes them."""
    from curate.data.choices import CHOICE

    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({**MANIFEST, "counts": {"sft": 1, "rl": 2, "unscored": 0}}))
    rows = {"item_id": ["m1", "m2", "m3"], "question": ["What is 1+2?", "Prove it.", "Which gas is noble?"],
            "reference": ["A", None, "3"], "choices": CHOICES, "domain": [None, "logic", None],
            "score": [2.0, 4.0, 5.0], "response": ["A", None, None]}
    items = pl.DataFrame(rows, schema_overrides={"choices": pl.List(CHOICE), "domain": pl.String,
                                                 "reference": pl.String})
    items[:1].write_parquet(root / "sft.parquet")
    items[1:].drop("response").write_parquet(root / "rl.parquet")
    items.head(0).drop("response").write_parquet(root / "unscored.parquet")
    return root


PROMPTS = [f"What is 1+2?\n\nA. 3\nB. 4\n\n{LABEL_BOXED}", user("Prove it."),
           f"Which gas is noble?\n\n1. oxygen\n2. carbon\n3. neon\n\n{LABEL_BOXED}"]


def test_trl_and_verl_prompts_carry_the_labelled_choices(tmp_path):
    """trl and verl dropped the options from the prompt, and verl's ability was always "math"."""
    split_dir = build_choice_split(tmp_path / "split")
    trl = export_split(split_dir, tmp_path / "trl", ExportConfig(format="trl"))
    sft, grpo = pl.read_parquet(trl / "sft.parquet"), pl.read_parquet(trl / "grpo.parquet")
    assert sft["messages"][0].to_list() == [{"role": "user", "content": PROMPTS[0]},
                                            {"role": "assistant", "content": "A"}]
    assert [p[-1]["content"] for p in grpo["prompt"].to_list()] == PROMPTS[1:]
    assert grpo["reference"].to_list() == [None, "3"]
    verl = export_split(split_dir, tmp_path / "verl", ExportConfig(format="verl"))
    rows = pq.read_table(verl / "rl.parquet").to_pylist() + pq.read_table(verl / "sft.parquet").to_pylist()
    assert [r["prompt"][-1]["content"] for r in rows] == PROMPTS[1:] + PROMPTS[:1]
    assert [r["reward_model"]["ground_truth"] for r in rows] == [None, "3", "A"]  # the answer key label
    assert [r["ability"] for r in rows] == ["logic", "multiple_choice", "multiple_choice"]
    chosen = export_split(split_dir, tmp_path / "verl2", ExportConfig(format="verl", ability="science"))
    assert set(pq.read_table(chosen / "rl.parquet").column("ability").to_pylist()) == {"science"}


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "hf"])
def test_plain_exports_keep_choices_as_labelled_options(tmp_path, fmt):
    out = export_split(build_choice_split(tmp_path / "split"), tmp_path / fmt, ExportConfig(format=fmt))
    if fmt == "hf":
        rl = datasets.load_from_disk(str(out))["rl"]["choices"]
    else:
        rl = datasets.load_dataset("json" if fmt == "jsonl" else fmt, data_files=str(out / f"rl.{fmt}"),
                                   split="train")["choices"]
    assert rl == CHOICES[1:]


def test_unlabelled_choices_are_refused_but_empty_ones_pass(tmp_path):
    split_dir = build_split_dir(tmp_path / "split")
    sft = pl.read_parquet(split_dir / "sft.parquet")
    sft.with_columns(pl.lit(None, pl.List(pl.String)).alias("choices")).write_parquet(split_dir / "sft.parquet")
    trl = export_split(split_dir, tmp_path / "trl", ExportConfig(format="trl"))
    assert pl.read_parquet(trl / "sft.parquet").height == 3
    sft.with_columns(pl.lit(["x", "y"], pl.List(pl.String)).alias("choices")).write_parquet(split_dir / "sft.parquet")
    with pytest.raises(DataError, match=r"the sft split's `choices` are List\(String\), not labelled options"):
        export_split(split_dir, tmp_path / "verl", ExportConfig(format="verl"))
    assert not (tmp_path / "verl").exists()


def test_push_to_hub_is_refused_before_anything_is_written(split_dir, tmp_path):
    """--push-to-hub with --format parquet, or while offline, failed only after writing the export."""
    from conftest import assert_one_line_error, invoke

    assert_one_line_error(invoke("export", split_dir, "--format", "parquet", "--out", tmp_path / "out",
                                 "--push-to-hub", "org/name"), "--push-to-hub needs --format hf")
    assert_one_line_error(invoke("export", split_dir, "--format", "hf", "--out", tmp_path / "out",
                                 "--push-to-hub", "org/name"), "HF_HUB_OFFLINE")
    assert not (tmp_path / "out").exists()


def test_an_unreachable_hub_is_one_line_and_keeps_the_export(split_dir, tmp_path, monkeypatch):
    from conftest import assert_one_line_error, invoke
    from huggingface_hub import constants
    from huggingface_hub.errors import HTTPError

    def unreachable(self, repo_id, **kwargs):
        raise HTTPError("[Errno -2] Name or service not known")  # what an unreachable Hub raises (ConnectError's base)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", unreachable)
    assert_one_line_error(invoke("export", split_dir, "--format", "hf", "--out", tmp_path / "hf", "--push-to-hub",
                                 "org/name"), "pushing")
    assert datasets.load_from_disk(str(tmp_path / "hf"))["sft"].num_rows == 3


def test_the_cli_shows_no_progress_bars_of_other_libraries(split_dir, tmp_path):
    """`export --format hf` printed `datasets`' "Saving the dataset" bars (and loading a GGUF model, transformers'
    "de-quantizing" bar): other libraries' tqdm bars interleave with curate's own output. tqdm reads its settings
    when it is imported, so this runs the command as a user does, in a process of its own."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    result = subprocess.run([str(Path(sys.executable).parent / "curate"), "export", str(split_dir), "--format", "hf",
                             "--out", str(tmp_path / "hf")], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Saving the dataset" not in result.stderr and "it/s" not in result.stderr


@pytest.mark.parametrize("reference, choices, expected", [
    ("\\frac{3}{4}", None, "\\frac{3}{4}"),  # a MATH answer, as it is
    ("$\\frac{3}{4}$ ", None, "\\frac{3}{4}"),
    ("1 + 2 + 3 + 4 = $\\boxed{10}$.", None, "10"),  # a MATH solution: its last box
    ("48 + 1,032 = 1,080 clips.\n#### 1,080", None, "1080"),  # GSM8K: after ####, without thousands commas
    ("B", CHOICES[0], "B"),
    ("4", CHOICES[0], "B"),  # an option's text: its label
    ("neon", CHOICES[2], "3"),
    ("xenon", CHOICES[2], "xenon"),  # names no option: as it is (the choice verifier calls it an error)
    (None, None, None), ("  ", CHOICES[0], None),
])
def test_final_answer_is_what_verls_preprocessing_writes(reference, choices, expected):
    from curate.export.trainers import final_answer

    assert final_answer(reference, choices) == expected


def test_template_and_system_prompt_write_the_prompts(tmp_path):
    """--template picks the response template (solve/step_by_step writes a system message of its own, so a
    --system-prompt beside it is refused); judge templates, prefills and options a format ignores are refused."""
    from conftest import assert_one_line_error, invoke

    split_dir = build_choice_split(tmp_path / "split")
    out = export_split(split_dir, tmp_path / "trl", ExportConfig(format="trl", template="solve/step_by_step"))
    prompt = pl.read_parquet(out / "grpo.parquet")["prompt"][1].to_list()
    assert [m["role"] for m in prompt] == ["system", "user"] and "\\boxed{answer}" in prompt[0]["content"]
    assert prompt[1]["content"].startswith("Which gas is noble?\n\n1. oxygen\n2. carbon\n3. neon")
    assert "solve/step_by_step@" in (out / "README.md").read_text(encoding="utf-8")
    result = invoke("export", split_dir, "--format", "verl", "--out", tmp_path / "verl", "--system-prompt", "Be brief.",
                    "--data-source", "dereason/math", "--ability", "science", "--template", "instruct/boxed")
    assert result.exit_code == 0 and "README.md says how to train on it" in " ".join(result.stdout.split())
    row = pl.read_parquet(tmp_path / "verl" / "rl.parquet").row(1, named=True)
    assert (row["data_source"], row["ability"]) == ("dereason/math", "science")
    assert row["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPTS[2]}]
    assert_one_line_error(invoke("export", split_dir, "--format", "verl", "--out", tmp_path / "v1", "--template",
                                 "solve/step_by_step", "--system-prompt", "Be brief."),
                          "writes its own system message, so --system-prompt has no place")
    assert_one_line_error(invoke("export", split_dir, "--format", "verl", "--out", tmp_path / "v2", "--template",
                                 "difficulty/intensity"), "is a judge template")
    prefilled = tmp_path / "prefilled.jinja"
    prefilled.write_text("{#-\nkind: response\nprefill: 'The answer is '\n-#}\n{% block user %}{{ question }}"
                         "{% endblock %}\n", encoding="utf-8")
    assert_one_line_error(invoke("export", split_dir, "--format", "trl", "--out", tmp_path / "v3", "--template",
                                 prefilled), "has a prefill")
    assert_one_line_error(invoke("export", split_dir, "--format", "hf", "--out", tmp_path / "v4", "--system-prompt",
                                 "Be brief.", "--ability", "math"), "--system-prompt, --ability: only the trl and verl")
    assert_one_line_error(invoke("export", split_dir, "--format", "trl", "--out", tmp_path / "v5", "--data-source",
                                 "x"), "--data-source: only the verl export uses it")
    assert not any((tmp_path / f"v{i}").exists() for i in range(1, 6))


def test_a_renamed_input_field_is_named(tmp_path):
    """`--response-field answer` failed with "no 'answer' column": curate reads an input's `answer` as the reference."""
    from conftest import assert_one_line_error, invoke

    split_dir = build_split_dir(tmp_path / "split", with_response=False)
    assert_one_line_error(invoke("export", split_dir, "--format", "trl", "--out", tmp_path / "trl", "--response-field",
                                 "answer"), "reads an input field 'answer' as the item's 'reference', which is what "
                                            "the split holds: pass --response-field reference")
    result = invoke("export", split_dir, "--format", "trl", "--out", tmp_path / "trl", "--response-field", "reference")
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(tmp_path / "trl" / "sft.parquet")["messages"][0].to_list()[-1]["content"] == "2"
    assert_one_line_error(invoke("export", split_dir, "--format", "trl", "--out", tmp_path / "trl2"),
                          "has no 'response' column (it has item_id, question, reference,")


def test_the_cards_tell_how_to_train(split_dir, tmp_path):
    """The trl and verl cards: files and rows, the template and the first prompt, and the next command: verl's
    default reward for lighteval/MATH (curate's as an option), curate's in the command for any other data_source."""
    from curate.export.card import VERL_CUSTOM_REWARD

    verl = export_split(split_dir, tmp_path / "verl", ExportConfig(format="verl"))
    card = (verl / "README.md").read_text(encoding="utf-8")
    for text in ("| rl.parquet | 2 |", "| stage_2.parquet | 1 |", "instruct/boxed@",
                 f"````text\n{user(RL[0][1])}\n````", "`data_source` `lighteval/MATH` with its MATH scorer",
                 f"data.train_files={verl}/rl.parquet",
                 f"'data.train_files=[{verl}/stage_1.parquet,{verl}/stage_2.parquet]'", "data.shuffle=False"):
        assert text in card, text
    assert card.count(VERL_CUSTOM_REWARD[0]) == 1  # offered, not in the commands
    custom = export_split(split_dir, tmp_path / "custom", ExportConfig(format="verl", data_source="dereason/math"))
    custom = (custom / "README.md").read_text(encoding="utf-8")
    assert "no scorer for `data_source` `dereason/math`" in custom and custom.count(VERL_CUSTOM_REWARD[0]) == 2
    trl = (export_split(split_dir, tmp_path / "trl", ExportConfig(format="trl")) / "README.md").read_text(
        encoding="utf-8")
    for text in ("| grpo.parquet | 2 |", "from curate.rewards import trl_reward", "reward_funcs=trl_reward(\"math\")",
                 f'data_files="{tmp_path}/trl/grpo.parquet"'):
        assert text in trl, text
