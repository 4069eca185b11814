"""TRL's GRPOTrainer (written against TRL 1.16.0) with dereason's two curricula inside RL, each through one of the
extension points TRL has (it offers no dynamic sampling of its own):

    _get_train_sampler                 a curriculum draws the prompts (train.curriculum.trl_sampler), in TRL's
                                       repeat order; without one, TRL's sampler draws each epoch's order again on
                                       resume (EpochOrderedSampler)
    _generate_and_score_completions    the curriculum learns from each generation's advantages; the online filter
                                       (train.online_filter) keeps the groups in its band and refills the batch
    _save/_load_optimizer_and_scheduler  the curriculum's state is saved in each checkpoint (curriculum.json) and
                                       restored on resume, with the optimiser's

Without either, every other call is TRL's own. Imported only when a GRPO stage builds its trainer (it imports trl).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object
from torch.utils.data import Sampler
from trl import GRPOTrainer

from curate.errors import RunDirError
from curate.files import write_atomic
from train.curriculum.protocol import CategoryCurriculum
from train.curriculum.trl_sampler import STATE_FILE, CurriculumRepeatSampler
from train.online_filter import OnlineFilter


class EpochOrderedSampler(Sampler[int]):
    """TRL's RepeatSampler, whose order in each epoch is the same in a run resumed after a kill. TRL seeds the
    sampler's generator once, when the trainer is made, and each epoch draws the next order from it; so a run resumed
    in epoch e drew epoch 1's order again, not the uninterrupted run's, and trained on other prompts from there. The
    Trainer sets the epoch before each pass: the generator is seeded again and drawn past the earlier epochs, so every
    epoch has TRL's own order whether the run was stopped or not."""

    def __init__(self, sampler: Any):
        self.sampler = sampler
        self.generator = getattr(sampler, "generator", None)  # accelerate keeps it equal across processes, as TRL's

    def set_epoch(self, epoch: int) -> None:
        if not self.sampler.shuffle:
            return
        self.generator.manual_seed(self.sampler.seed)
        for _ in range(epoch):
            torch.randperm(self.sampler.num_samples, generator=self.generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class CurriculumGrpoTrainer(GRPOTrainer):
    def __init__(self, *args: Any, curriculum: CategoryCurriculum | None = None,
                 online_filter: OnlineFilter | None = None, **kwargs: Any):
        if online_filter is not None:
            rewards = list(kwargs["reward_funcs"])
            kwargs["reward_funcs"] = [online_filter.recorded(rewards[0]), *rewards[1:]]
        super().__init__(*args, **kwargs)
        self.curriculum, self.online_filter = curriculum, online_filter
        self.curriculum_sampler: CurriculumRepeatSampler | None = None

    def _get_train_sampler(self, dataset: Any = None) -> Any:
        if self.curriculum is None:
            return EpochOrderedSampler(super()._get_train_sampler(dataset))
        dataset = self.train_dataset if dataset is None else dataset
        self.curriculum_sampler = CurriculumRepeatSampler(
            self.curriculum, len(dataset), mini_repeat_count=self.num_generations,
            batch_size=self.args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation)
        return self.curriculum_sampler

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        if self.online_filter is not None:
            return self.online_filter.fill(self, inputs, self._generate_and_learn)
        return self._generate_and_learn(inputs)

    def _generate_and_learn(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if self.curriculum is not None:
            field = self.curriculum.field
            # Every process updates its own copy with every process's completions, so the copies stay equal.
            self.curriculum.update(gather_object([row[field] for row in inputs]),
                                   gather_object(output["advantages"].tolist()))
            for category, probability in self.curriculum.probabilities().items():
                self._metrics["train"][f"curriculum/{category}"].append(probability)
        return output

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.curriculum_sampler is not None and self.args.should_save:
            write_atomic(Path(output_dir) / STATE_FILE, json.dumps(self.curriculum_sampler.state_dict()))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or self.curriculum_sampler is None:
            return
        path = Path(checkpoint) / STATE_FILE
        if not path.is_file():
            raise RunDirError(f"{checkpoint} has no {STATE_FILE}, so its curriculum cannot be resumed; delete the "
                              "checkpoint to train again from the one before, or train in a new --out")
        self.curriculum_sampler.load_state_dict(json.loads(path.read_text(encoding="utf-8")))
