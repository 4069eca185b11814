"""A curriculum inside TRL's GRPO (TRL 1.16.0): the sampler, and how its state rides with the Trainer's checkpoints.

`CurriculumRepeatSampler` keeps the order of TRL's RepeatSampler (GRPOTrainer._get_train_sampler): chunks of
`batch_size` distinct prompts (a generation batch's worth), each chunk repeated `repeat_count` times (steps per
generation x iterations), each prompt `mini_repeat_count` times in a row (its group). Only the choice of each
chunk's prompts changes: the curriculum draws them when the loader reaches the chunk, so what it learnt from the
batches before steers the next one (the loader reads one batch ahead, so an update reaches the chunk after next at
the latest). An epoch has as many chunks as RepeatSampler's, so the Trainer counts the same steps.

Resume: the state (`state_dict`) is the curriculum's (its bandit and generator) and the chunks drawn so far in the
current epoch. On resume the Trainer skips the batches it already trained on by reading them again; the restored
sampler hands those back from the record instead of drawing, then draws on with the restored generator, so a
resumed stage sees the prompts an uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import Sampler

from train.curriculum.protocol import CategoryCurriculum

STATE_FILE = "curriculum.json"  # in each checkpoint folder


class CurriculumRepeatSampler(Sampler[int]):
    def __init__(self, curriculum: CategoryCurriculum, num_samples: int, mini_repeat_count: int, batch_size: int,
                 repeat_count: int):
        self.curriculum = curriculum
        self.mini_repeat_count, self.batch_size, self.repeat_count = mini_repeat_count, batch_size, repeat_count
        self.chunks = num_samples // batch_size
        self.epoch = 0
        self.drawn: list[list[int]] = []  # this epoch's chunks so far
        self.replay: tuple[int, list[list[int]]] | None = None  # a restored epoch's chunks, to hand back first

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        replay = self.replay[1] if self.replay is not None and self.replay[0] == self.epoch else []
        self.replay, self.drawn = None, []
        for number in range(self.chunks):
            chunk = replay[number] if number < len(replay) else self.curriculum.sample(self.batch_size)
            self.drawn.append(chunk)
            for _ in range(self.repeat_count):
                for index in chunk:
                    yield from [index] * self.mini_repeat_count

    def __len__(self) -> int:
        return self.chunks * self.batch_size * self.mini_repeat_count * self.repeat_count

    def state_dict(self) -> dict[str, Any]:
        return {"curriculum": self.curriculum.state_dict(), "epoch": self.epoch,
                "drawn": [list(chunk) for chunk in self.drawn]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curriculum.load_state_dict(state["curriculum"])
        self.replay = (state["epoch"], [[int(i) for i in chunk] for chunk in state["drawn"]])
