"""verl 0.9.1 on our verl exports, through verl's own code only: the PPO config composed by hydra from verl's
ppo_trainer.yaml with the overrides of the command the export's card prints; the train and val datasets, sampler and
loader built from it as verl's trainer builds them (create_rl_dataset → RLHFDataset, create_rl_sampler,
StatefulDataLoader with collate_fn); and the reward manager verl builds from the same config (load_reward_manager)
scoring responses to the rows it loaded: its default reward, and curate's (`curate.rewards`), which verl loads from
`reward.custom_reward_function`. Skipped when verl cannot be imported (scripts/install.sh installs it)."""

import json
import os
import shlex
from types import SimpleNamespace

import polars as pl
import pytest
from verlkit import logging_kept, ppo_config

from curate.command_config import ExportConfig
from curate.data.choices import CHOICE
from curate.export.exporters import export_split
from curate.testing import build_tokenizer

LABELS = [{"label": "A", "text": "3"}, {"label": "B", "text": "4"}]
GASES = [{"label": "1", "text": "oxygen"}, {"label": "2", "text": "carbon"}, {"label": "3", "text": "neon"}]
# id, question, reference, choices, score; then what a model that is right writes, what one that is wrong writes, and
# a right answer that verl's MATH scorer does not recognise but curate's verifiers do (None: none such).
ITEMS = [
    ("m1", "What is 3/4 as a fraction?", "\\frac{3}{4}", None, 2.0, "\\boxed{\\frac{3}{4}}", "\\boxed{\\frac{4}{3}}",
     "\\boxed{0.75}"),
    ("c2", "Which gas is noble?", "neon", GASES, 1.0, "\\boxed{3}", "\\boxed{1}", "\\boxed{neon}"),
    ("m2", "Sum 1 to 4.", "1 + 2 + 3 + 4 = $\\boxed{10}$.", None, 4.0, "\\boxed{10}", "\\boxed{12}", None),
    ("g1", "How many clips in all?", "She sold 48 + 1,032 = 1,080 clips.\n#### 1,080", None, 5.0, "\\boxed{1080}",
     "\\boxed{1079}", "She sold 1080 clips in all."),
    ("c1", "What is 2+2?", "B", LABELS, 4.5, "\\boxed{B}", "\\boxed{A}", "The answer is \\boxed{4}."),
    ("p1", "Prove that there are infinitely many primes.", None, None, 5.0, None, "\\boxed{7}", None),
]
SFT, RL = ["m1", "c2"], ["m2", "g1", "c1", "p1"]
STAGES = [["m2", "c1"], ["g1", "p1"]]
BY_ID = {item[0]: item for item in ITEMS}


def split_frame(ids: list[str], responses: bool) -> pl.DataFrame:
    rows = [BY_ID[i] for i in ids]
    frame = pl.DataFrame({"item_id": [r[0] for r in rows], "question": [r[1] for r in rows],
                          "reference": [r[2] for r in rows], "choices": [r[3] for r in rows],
                          "domain": [None] * len(rows), "score": [r[4] for r in rows], "level": [3] * len(rows)},
                         schema_overrides={"reference": pl.String, "choices": pl.List(CHOICE), "domain": pl.String,
                                           "score": pl.Float64})
    return frame.with_columns(response=pl.lit("Step by step... \\boxed{x}")) if responses else frame


def write_split(root):
    """A split directory as `curate split` writes one: both sides, an arm (one side of another empty), two stages."""
    (root / "arms" / "random").mkdir(parents=True)
    (root / "arms" / "rl_all").mkdir()
    (root / "stages").mkdir()
    (root / "manifest.json").write_text(json.dumps({"tau": 3, "counts": {"sft": 2, "rl": 4, "unscored": 0}}))
    split_frame(SFT, True).write_parquet(root / "sft.parquet")
    split_frame(RL, False).write_parquet(root / "rl.parquet")
    split_frame([], False).write_parquet(root / "unscored.parquet")
    split_frame(["m1", "g1"], True).write_parquet(root / "arms" / "random" / "sft.parquet")
    split_frame(["c2", "m2", "c1", "p1"], False).write_parquet(root / "arms" / "random" / "rl.parquet")
    split_frame([], True).write_parquet(root / "arms" / "rl_all" / "sft.parquet")
    split_frame(SFT + RL, False).write_parquet(root / "arms" / "rl_all" / "rl.parquet")
    for number, ids in enumerate(STAGES, start=1):
        split_frame(ids, False).write_parquet(root / "stages" / f"stage_{number}.parquet")
    return root


@pytest.fixture(scope="module")
def verl():
    with logging_kept():
        try:
            import verl
            from torchdata.stateful_dataloader import StatefulDataLoader
            from verl.trainer.ppo.reward import load_reward_manager
            from verl.trainer.ppo.utils import create_rl_dataset, create_rl_sampler
            from verl.utils.dataset.rl_dataset import collate_fn
        except ImportError as exc:
            pytest.skip(f"verl's data path cannot be imported ({exc}): bash scripts/install.sh installs verl 0.9.1 "
                        "with it")
    return SimpleNamespace(version=verl.__version__, config=ppo_config, create_rl_dataset=create_rl_dataset,
                           create_rl_sampler=create_rl_sampler, collate_fn=collate_fn, loader=StatefulDataLoader,
                           load_reward_manager=load_reward_manager, DataProto=verl.DataProto)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The split exported for verl twice: with the default data_source, and with a name of our own."""
    work = tmp_path_factory.mktemp("verl-export")
    split = write_split(work / "split")
    return (export_split(split, work / "verl", ExportConfig(format="verl")),
            export_split(split, work / "custom", ExportConfig(format="verl", data_source="dereason/math")))


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer([item[1] for item in ITEMS] + [r for item in ITEMS for r in item[5:] if r] * 3,
                           vocab_size=400)


def card_commands(export) -> list[list[str]]:
    """The overrides of each `python -m verl.trainer.main_ppo` command in the export's card, as a shell splits them
    ($MODEL and $VAL_FILES set as a user sets them)."""
    card = (export / "README.md").read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0] for block in card.split("```bash\n")[1:]]
    values = {"$MODEL": "/models/policy", "$VAL_FILES": str(export / "rl.parquet")}
    commands = []
    for block in blocks:
        for name, value in values.items():
            block = block.replace(name, value)
        words = shlex.split(block.replace("\\\n", ""))  # the shell's line continuation
        assert words[:3] == ["python", "-m", "verl.trainer.main_ppo"]
        commands.append(words[3:])
    return commands


def load(verl, config, tokenizer, files=None) -> dict:
    """What verl's trainer feeds its first step: the train dataset from `config.data`, loaded as one batch."""
    dataset = verl.create_rl_dataset(files or config.data.train_files, config.data, tokenizer, None, is_train=True,
                                     max_samples=config.data.get("train_max_samples", -1))
    loader = verl.loader(dataset=dataset, batch_size=len(dataset), num_workers=0, drop_last=True,
                         collate_fn=verl.collate_fn, sampler=verl.create_rl_sampler(config.data, dataset))
    return next(iter(loader))


def rewards(verl, manager, tokenizer, batch, responses: list[str]) -> list[float]:
    """verl's reward manager on the loaded rows, each answered by one response (as token ids, as rollouts are)."""
    import torch

    ids = [tokenizer(response, add_special_tokens=False)["input_ids"] for response in responses]
    width = max(map(len, ids))
    assert all(tokenizer.decode(i) == r for i, r in zip(ids, responses, strict=True))
    data = verl.DataProto.from_single_dict({
        "responses": torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i in ids]),
        "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids]),
        **{key: batch[key] for key in ("data_source", "reward_model", "extra_info")}})
    return [manager.loop.run_until_complete(manager.run_single(data[i:i + 1]))["reward_score"]
            for i in range(len(responses))]


def test_the_cards_commands_make_verls_datasets(verl, exported, tokenizer):
    """The card's main_ppo overrides compose into verl's own config, and its train files load through verl's trainer
    path with every prompt, ground truth and index as written; the curriculum command keeps the stages in order."""
    export = exported[0]
    main, curriculum = card_commands(export)
    config = verl.config(main + ["data.dataloader_num_workers=0"])
    assert config.data.train_files == str(export / "rl.parquet") and config.algorithm.adv_estimator == "grpo"
    batch = load(verl, config, tokenizer)
    ids = [info["item_id"] for info in batch["extra_info"]]
    assert sorted(ids) == sorted(RL)  # shuffled by verl's sampler, none lost
    expected = pl.read_parquet(export / "rl.parquet").rows_by_key("data_source", named=True, unique=False)
    assert set(expected) == {"lighteval/MATH"}
    written = {row["extra_info"]["item_id"]: row for row in expected["lighteval/MATH"]}
    for position, item_id in enumerate(ids):
        row = written[item_id]
        assert list(batch["raw_prompt"][position]) == row["prompt"]
        assert batch["reward_model"][position] == row["reward_model"]
        assert batch["index"][position] == row["extra_info"]["index"]
    assert {i: batch["reward_model"][ids.index(i)]["ground_truth"] for i in RL} == {
        "m2": "10", "g1": "1080", "c1": "B", "p1": None}
    assert "\\boxed{}" in batch["raw_prompt"][ids.index("g1")][-1]["content"]

    config = verl.config(curriculum + ["data.dataloader_num_workers=0"])
    assert config.data.shuffle is False
    staged = load(verl, config, tokenizer)
    assert [info["item_id"] for info in staged["extra_info"]] == STAGES[0] + STAGES[1]


def test_verl_reads_every_file_of_an_export_together(verl, exported, tokenizer):
    """Every file written loads, all of them at once (one schema), and `index` names one item across files: the same
    item has the same index in every file, and no two items share one. Splits without rows are not written."""
    export = exported[0]
    files = sorted(str(path) for path in export.glob("*.parquet"))
    assert [os.path.basename(f) for f in files] == ["random_rl.parquet", "random_sft.parquet", "rl.parquet",
                                                    "rl_all_rl.parquet", "sft.parquet", "stage_1.parquet",
                                                    "stage_2.parquet"]
    assert "Not written, as they hold no rows: rl_all_sft." in (export / "README.md").read_text(encoding="utf-8")
    config = verl.config(card_commands(export)[0] + ["data.dataloader_num_workers=0"])
    batch = load(verl, config, tokenizer, files)
    rows = sum(pl.read_parquet(f).height for f in files)
    pairs = {(info["item_id"], int(index)) for info, index in zip(batch["extra_info"], batch["index"], strict=True)}
    assert len(batch["index"]) == rows == 22
    assert len(pairs) == len({item for item, _ in pairs}) == len({index for _, index in pairs}) == len(ITEMS)


def test_verls_default_reward_scores_the_export(verl, exported, tokenizer):
    """verl's default reward (built from the card's config: no reward override) scores every exported row: a right
    boxed answer 1.0, a wrong one 0.0, and 0.0 for the item without a reference. Its MATH scorer compares strings, so
    right answers written otherwise score 0.0 there; curate's reward takes them (next test)."""
    config = verl.config(card_commands(exported[0])[0])
    batch = load(verl, config, tokenizer, sorted(str(path) for path in exported[0].glob("*.parquet")))
    manager = verl.load_reward_manager(config, tokenizer)
    assert manager.compute_score.__module__ == "verl.utils.reward_score"
    items = [BY_ID[info["item_id"]] for info in batch["extra_info"]]
    right = rewards(verl, manager, tokenizer, batch, [item[5] or "\\boxed{x}" for item in items])
    assert right == [0.0 if item[0] == "p1" else 1.0 for item in items]
    assert rewards(verl, manager, tokenizer, batch, [item[6] for item in items]) == [0.0] * len(items)
    assert set(rewards(verl, manager, tokenizer, batch, [item[7] or "\\boxed{x}" for item in items])) == {0.0}


def test_verl_loads_curates_reward_and_it_scores_the_export(verl, exported, tokenizer):
    """An export with a data_source of our own: verl's default reward refuses it, so the card's command adds
    `reward.custom_reward_function`, from which verl loads curate.rewards.compute_score. On every row it gives 1.0 for a
    right answer, however written (0.75 for 3/4, an option by its text), and 0.0 for a wrong one."""
    from verl.utils.reward_score import default_compute_score

    export = exported[1]
    with pytest.raises(NotImplementedError, match="dereason/math"):
        default_compute_score("dereason/math", "\\boxed{10}", "10")
    config = verl.config(card_commands(export)[0])
    assert config.reward.custom_reward_function == {"path": "pkg://curate.rewards", "name": "compute_score"}
    batch = load(verl, config, tokenizer, sorted(str(path) for path in export.glob("*.parquet")))
    assert set(batch["data_source"]) == {"dereason/math"}
    manager = verl.load_reward_manager(config, tokenizer)
    assert manager.compute_score.args[0].__module__ == "curate.rewards"
    items = [BY_ID[info["item_id"]] for info in batch["extra_info"]]
    right = rewards(verl, manager, tokenizer, batch, [item[5] or "\\boxed{x}" for item in items])
    assert right == [0.0 if item[0] == "p1" else 1.0 for item in items]
    assert rewards(verl, manager, tokenizer, batch, [item[6] for item in items]) == [0.0] * len(items)
    written_otherwise = [position for position, item in enumerate(items) if item[7]]
    subset = {key: batch[key][written_otherwise] for key in ("data_source", "reward_model", "extra_info")}
    assert rewards(verl, manager, tokenizer, subset, [items[p][7] for p in written_otherwise]) == [1.0] * len(
        written_otherwise)
