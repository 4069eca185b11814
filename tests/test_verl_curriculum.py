"""The curriculum inside verl 0.9.1 through verl's own code: its PPO config composed by hydra with the overrides
train.curriculum.verl_adapter documents, the replay buffer built by verl's PPOTrainer._build_replay_buffer from
trainer.v1.sampler.custom_sampler, its batches taken by verl's ReplayBuffer.sample, advantages by verl's GRPO rule,
the checkpoint callback built by verl's build_checkpoint_callback. TransferQueue, verl's store of prompts and
completions, is a Ray service; here an in-memory one answers its four calls (kv_batch_put, kv_list, kv_batch_get,
kv_clear), and a simulated rollout fills it: three data sources whose pass rates are known. Skipped when verl's
v1 trainer cannot be imported (scripts/install.sh installs it)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from verlkit import logging_kept, ppo_config

from curate.errors import ConfigError, RunDirError

RATES = {"easy": 0.95, "edge": 0.5, "hard": 0.03}
GROUP, BATCH = 4, 3


@pytest.fixture(scope="module")
def verl():
    with logging_kept():
        try:
            import transfer_queue
            from verl.trainer.ppo.checkpoint_callback import build_checkpoint_callback
            from verl.trainer.ppo.v1.trainer_base import PPOTrainer
        except ImportError as exc:
            pytest.skip(f"verl's v1 trainer cannot be imported ({exc}): bash scripts/install.sh installs it")
    return SimpleNamespace(config=ppo_config, PPOTrainer=PPOTrainer, callback=build_checkpoint_callback,
                           tq=transfer_queue)


class Store:
    """TransferQueue's key-value calls, in memory: partition → key → (tag, fields)."""

    def __init__(self, monkeypatch, tq):
        self.partitions = {}
        for name in ("kv_batch_put", "kv_list", "kv_batch_get", "kv_clear"):
            monkeypatch.setattr(tq, name, getattr(self, name))

    def kv_batch_put(self, keys, partition_id, tags=None, fields=None):
        for number, key in enumerate(keys):
            self.partitions.setdefault(partition_id, {})[key] = (tags[number], (fields or [{}] * len(keys))[number])

    def kv_list(self, partition_id=None):
        return {partition: {key: tag for key, (tag, _) in items.items()} for partition, items in self.partitions.items()
                if partition_id in (None, partition)}

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        return {field: [self.partitions[partition_id][key][1][field] for key in keys] for field in select_fields}

    def kv_clear(self, keys, partition_id):
        for key in keys:
            self.partitions[partition_id].pop(key, None)


class Rollout:
    """verl's generation, simulated: each prompt's group of completions lands in the store, finished, with its
    rewards (rm_scores: the reward on the last token) and the prompt's data_source. Prompts come in the order a
    shuffled dataloader gives them; the outcomes are seeded by the prompt."""

    def __init__(self, store):
        self.store, self.made, self.step = store, 0, 1

    def __call__(self, count):
        import torch

        sources = list(RATES)
        for _ in range(count):
            uid, self.made = f"p{self.made}", self.made + 1
            source = sources[self.made % len(sources)]
            outcomes = np.random.default_rng(self.made).random(GROUP) < RATES[source]
            self.store.kv_batch_put([uid], "train", tags=[{"is_prompt": True, "status": "finished",
                                                           "global_steps": self.step}])
            self.store.kv_batch_put([f"{uid}_{s}_0" for s in range(GROUP)], "train",
                                    tags=[{"status": "success", "global_steps": self.step}] * GROUP,
                                    fields=[{"rm_scores": torch.tensor([0.0, float(hit)]), "data_source": source}
                                            for hit in outcomes])
        return count


def overrides(tmp_path, curriculum="dump"):
    return ["trainer.v1.trainer_mode=sync",
            "trainer.v1.sampler.custom_sampler.path=pkg://train.curriculum.verl_adapter",
            "trainer.v1.sampler.custom_sampler.name=CurriculumReplayBuffer",
            f"+trainer.v1.sampler.sampler_kwargs.curriculum={curriculum}",
            "+trainer.v1.sampler.sampler_kwargs.field=data_source", "+trainer.v1.sampler.sampler_kwargs.oversample=2",
            "+trainer.v1.sampler.sampler_kwargs.checkpoint_dir=${trainer.default_local_dir}",
            "trainer.checkpoint_callback_class=train.curriculum.verl_adapter.CurriculumCheckpoint",
            f"trainer.default_local_dir={tmp_path}"]


def build(verl, config, rollout):
    """verl's PPOTrainer._build_replay_buffer, on a trainer holding what it reads."""
    trainer = SimpleNamespace(config=config, trainer_mode=config.trainer.v1.trainer_mode,
                              _add_prompts_to_generate=rollout, _resolve_filter_groups_metric=lambda: None)
    return verl.PPOTrainer._build_replay_buffer(trainer)


def step(buffer, rollout, number):
    rollout.step = number
    rollout(BATCH)  # the trainer's own batch of prompts (prepare_step)
    return buffer.sample(global_steps=number, partition_id="train", batch_size=BATCH)


def test_verl_builds_the_buffer_and_its_batches_lean_to_the_data_source_near_half(verl, tmp_path, monkeypatch):
    from train.curriculum.verl_adapter import CurriculumReplayBuffer

    store = Store(monkeypatch, verl.tq)
    rollout = Rollout(store)
    buffer = build(verl, verl.config(overrides(tmp_path)), rollout)
    assert isinstance(buffer, CurriculumReplayBuffer) and buffer.bandit.name == "dump"
    picked = {source: 0 for source in RATES}
    for number in range(1, 31):
        batch, metrics = step(buffer, rollout, number)
        uids = {key.split("_")[0] for key in batch.keys}
        assert len(uids) == BATCH and len(batch.keys) == BATCH * GROUP and batch.partition_id == "train"
        # the surplus groups left the store; what was picked stays for the trainer to read
        assert set(store.partitions["train"]) == set(batch.keys)
        assert sum(metrics[f"curriculum/{source}"] for source in RATES) == pytest.approx(1.0)
        for key in batch.keys[::GROUP]:
            picked[store.partitions["train"][key][1]["data_source"]] += 1
        for key in batch.keys:
            store.kv_clear([key], "train")  # trained on
    assert rollout.made == 30 * BATCH * 2  # oversample 2: one batch more per step
    # Offered a third of each, DUMP picks mostly the groups whose advantages are not all zero (0.62-0.66 of the
    # picks over seeds 0-3).
    assert picked["edge"] >= 0.5 * sum(picked.values()), picked
    assert sum(buffer.bandit.seen.values()) == 30 * BATCH * GROUP


def test_the_state_goes_into_verls_checkpoint_and_a_resumed_buffer_picks_as_the_uninterrupted_one(verl, tmp_path,
                                                                                                  monkeypatch):
    config = verl.config(overrides(tmp_path, "sec"))
    callback = verl.callback(config)
    store = Store(monkeypatch, verl.tq)
    rollout = Rollout(store)
    buffer = build(verl, config, rollout)
    for number in (1, 2):
        batch, _ = step(buffer, rollout, number)
        store.kv_clear(batch.keys, "train")
    checkpoint = tmp_path / "global_step_2"
    checkpoint.mkdir()
    callback.on_save(trainer=SimpleNamespace(replay_buffer=buffer), global_step=2, checkpoint_dir=str(checkpoint))
    saved = json.loads((checkpoint / "curriculum.json").read_text())
    assert saved["bandit"] == "sec" and set(saved["state"]["values"]) <= set(RATES)

    made = rollout.made
    uninterrupted, _ = step(buffer, rollout, 3)
    store.kv_clear(uninterrupted.keys, "train")
    rollout.made = made  # the same prompts again, as a resumed run's rollout would bring them
    resumed_buffer = build(verl, config, rollout)
    resumed, _ = step(resumed_buffer, rollout, 3)
    assert resumed.keys == uninterrupted.keys
    assert resumed_buffer.state_dict() == buffer.state_dict()


def test_resuming_without_the_saved_state_or_with_wrong_settings_is_refused(verl, tmp_path, monkeypatch):
    store = Store(monkeypatch, verl.tq)
    rollout = Rollout(store)
    buffer = build(verl, verl.config(overrides(tmp_path)), rollout)
    with pytest.raises(RunDirError, match="global_step_4/curriculum.json is missing"):
        step(buffer, rollout, 5)
    bad = [*overrides(tmp_path), "+trainer.v1.sampler.sampler_kwargs.window=3"]
    with pytest.raises(ConfigError, match=r"sampler_kwargs \['window'\] are not settings"):
        build(verl, verl.config(bad), rollout)
    with pytest.raises(ConfigError, match="sync trainer mode"):
        build(verl, verl.config([*overrides(tmp_path), "trainer.v1.trainer_mode=colocate_async"]), rollout)
