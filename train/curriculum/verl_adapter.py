"""SEC or DUMP inside verl 0.9.1, through the hook it has: `trainer.v1.sampler.custom_sampler`, a replay buffer
class its v1 trainer builds (PPOTrainer._build_replay_buffer) and asks for each training batch of finished groups.

verl 0.9.1 has no hook that chooses which prompts are generated (its AbstractCurriculumSampler went in 0.8, and
its dataloader's sampler is fixed), so the curriculum chooses among generated groups: each step this buffer asks
for (oversample - 1) batches of prompts more than the trainer's one, takes the finished groups as verl's own
buffer does, and picks a batch of them, one at a time, a category drawn with the bandit's probabilities among the
categories still on offer, then one of its groups uniformly. The rest are discarded (sync training stays
on-policy), which is the generation this costs: oversample times a plain step's, as verl's DAPO filter pays for
its refills. The bandit learns from the picked groups' advantages, computed by verl's own GRPO rule
(core_algos.compute_grpo_outcome_advantage) from each completion's reward (rm_scores summed).

    trainer.v1.trainer_mode=sync
    trainer.v1.sampler.custom_sampler.path=pkg://train.curriculum.verl_adapter
    trainer.v1.sampler.custom_sampler.name=CurriculumReplayBuffer
    +trainer.v1.sampler.sampler_kwargs.curriculum=dump   (and .field, .seed, .oversample, .settings as wanted)
    +trainer.v1.sampler.sampler_kwargs.checkpoint_dir='${trainer.default_local_dir}'
    trainer.checkpoint_callback_class=train.curriculum.verl_adapter.CurriculumCheckpoint

`curriculum` is sec or dump (`settings`: its bandit's, as train.curriculum.make_bandit takes them); `field` names a
column of the data that verl keeps with each completion (a top-level column such as data_source, the default, or
extra_info.KEY). The checkpoint callback writes the buffer's state (bandit and generator) into each checkpoint
folder as curriculum.json; on resume, the first step reads it back from checkpoint_dir/global_step_<N>/.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import transfer_queue as tq
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.checkpoint_callback import CheckpointCallback
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from curate.errors import ConfigError, RunDirError
from curate.files import write_atomic
from train.curriculum import make_bandit
from train.curriculum.protocol import arm, magnitudes
from train.curriculum.trl_sampler import STATE_FILE

SETTINGS = ("curriculum", "field", "seed", "oversample", "settings", "checkpoint_dir")


class CurriculumReplayBuffer(ReplayBuffer):
    def __init__(self, *args: Any, sampler_kwargs: Any, **kwargs: Any):
        super().__init__(*args, sampler_kwargs=sampler_kwargs, **kwargs)
        given = dict(sampler_kwargs or {})
        if unknown := sorted(set(given) - set(SETTINGS)):
            raise ConfigError(f"sampler_kwargs {unknown} are not settings of CurriculumReplayBuffer ({SETTINGS})")
        if self.trainer_mode != "sync" or self.refill_fn is None:
            raise ConfigError("CurriculumReplayBuffer runs in verl's sync trainer mode (trainer.v1.trainer_mode=sync)")
        self.field = str(given.get("field", "data_source"))
        self.oversample = int(given.get("oversample", 2))
        if self.oversample < 1:
            raise ConfigError(f"sampler_kwargs.oversample must be >= 1, got {self.oversample}")
        if "curriculum" not in given:
            raise ConfigError("sampler_kwargs.curriculum is missing: sec or dump")
        self.bandit = make_bandit(str(given["curriculum"]), dict(given.get("settings") or {}))
        self.rng = np.random.default_rng(int(given.get("seed", 0)))
        self.checkpoint_dir = given.get("checkpoint_dir")
        self.resumed = False

    def sample(self, global_steps: int, partition_id: str, batch_size: int) -> tuple[KVBatchMeta, dict]:
        if partition_id == "val":
            return super().sample(global_steps, partition_id, batch_size)
        self._resume(global_steps)
        if self.oversample > 1:
            self.refill_fn((self.oversample - 1) * batch_size)
        pool, metrics = super().sample(global_steps, partition_id, self.oversample * batch_size)
        groups: dict[str, list[int]] = defaultdict(list)
        for position, key in enumerate(pool.keys):
            groups[key.split("_")[0]].append(position)
        categories, advantages = self._read(pool)
        picked = self._pick(groups, categories, batch_size)
        chosen = sorted(position for uid in picked for position in groups[uid])
        self.bandit.observe(magnitudes([categories[p] for p in chosen], [advantages[p] for p in chosen]))
        kept = set(chosen)
        if surplus := [key for position, key in enumerate(pool.keys) if position not in kept]:
            tq.kv_clear(keys=surplus, partition_id=partition_id)
        metrics = {**metrics, **{f"curriculum/{name}": p for name, p in self._probabilities(categories).items()}}
        return KVBatchMeta(partition_id=partition_id, keys=[pool.keys[p] for p in chosen],
                           tags=[pool.tags[p] for p in chosen]), metrics

    def _read(self, pool: KVBatchMeta) -> tuple[list[str], list[float]]:
        """Each completion's category and GRPO advantage (verl's rule over the pool's groups)."""
        import torch
        from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

        column, _, key = self.field.partition(".")
        data = tq.kv_batch_get(keys=pool.keys, partition_id=pool.partition_id, select_fields=["rm_scores", column])
        scores = torch.stack([value.sum() for value in data["rm_scores"]]).float().unsqueeze(1)
        values = [getattr(value, "data", value) for value in data[column]]
        categories = [arm(value[key] if key else value) for value in values]
        index = np.array([k.split("_")[0] for k in pool.keys], dtype=object)
        advantages, _ = compute_grpo_outcome_advantage(scores, torch.ones_like(scores), index)
        return categories, advantages.squeeze(1).tolist()

    def _pick(self, groups: dict[str, list[int]], categories: list[str], batch_size: int) -> list[str]:
        """`batch_size` groups: each a category drawn among those still on offer, then one of its groups."""
        offered: dict[str, list[str]] = defaultdict(list)
        for uid, positions in sorted(groups.items()):
            offered[categories[positions[0]]].append(uid)
        picked = []
        while len(picked) < batch_size and offered:
            names = sorted(offered)
            name = names[self.rng.choice(len(names), p=self.bandit.probabilities(names))]
            picked.append(offered[name].pop(int(self.rng.integers(len(offered[name])))))
            if not offered[name]:
                del offered[name]
        return picked

    def _probabilities(self, categories: list[str]) -> dict[str, float]:
        names = sorted(set(categories))
        return dict(zip(names, self.bandit.probabilities(names).tolist(), strict=True))

    def state_dict(self) -> dict[str, Any]:
        return {"bandit": self.bandit.name, "state": self.bandit.state_dict(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["bandit"] != self.bandit.name:
            raise ConfigError(f"the curriculum state was saved by {state['bandit']}; this buffer runs "
                              f"{self.bandit.name}")
        self.bandit.load_state_dict(state["state"])
        self.rng.bit_generator.state = state["rng"]

    def _resume(self, global_steps: int) -> None:
        """At the first step after a checkpoint, the state its checkpoint callback saved."""
        if self.resumed:
            return
        self.resumed = True
        if global_steps <= 1:
            return
        if not self.checkpoint_dir:
            raise ConfigError(f"resuming at step {global_steps}: set sampler_kwargs.checkpoint_dir (verl's "
                              "trainer.default_local_dir) so the curriculum's state is read back")
        path = Path(self.checkpoint_dir) / f"global_step_{global_steps - 1}" / STATE_FILE
        if not path.is_file():
            raise RunDirError(f"resuming at step {global_steps}: {path} is missing; set "
                              "trainer.checkpoint_callback_class=train.curriculum.verl_adapter.CurriculumCheckpoint "
                              "so each checkpoint holds the curriculum's state")
        self.load_state_dict(json.loads(path.read_text(encoding="utf-8")))


class CurriculumCheckpoint(CheckpointCallback):
    """verl's checkpoint hook: the curriculum's state into each checkpoint folder."""

    def on_save(self, trainer: Any, global_step: int, checkpoint_dir: str, async_save: bool = False,
                **kwargs: Any) -> None:
        buffer = trainer.replay_buffer
        if isinstance(buffer, CurriculumReplayBuffer):
            write_atomic(Path(checkpoint_dir) / STATE_FILE, json.dumps(buffer.state_dict()))
