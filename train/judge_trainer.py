"""The judge stage's trainer (train.judge): transformers' Trainer, with the loss on the answer's tokens alone.

A row is a prompt's token ids and its targets (the level's token, then the end of the turn). A batch is left-padded
so that every row ends at the last position; the model reads the prompt and the first target, and only the logits of
the last len(targets) positions are computed (`logits_to_keep`): they predict the targets.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer


class LevelTrainer(Trainer):
    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        targets = inputs.pop("targets")
        outputs = model(**inputs, logits_to_keep=targets.shape[1])
        loss = torch.nn.functional.cross_entropy(outputs.logits.float().flatten(0, 1), targets.flatten())
        return (loss, outputs) if return_outputs else loss


def left_padded(pad_id: int) -> Any:
    """The collator: prompt + targets, all but the last target as input, left-padded to the batch's longest."""

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences = [row["input_ids"] + row["targets"][:-1] for row in rows]
        width = max(map(len, sequences))
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, sequence in enumerate(sequences):
            input_ids[index, width - len(sequence):] = torch.tensor(sequence)
            attention_mask[index, width - len(sequence):] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "targets": torch.tensor([row["targets"] for row in rows], dtype=torch.long)}

    return collate


def level_trainer(model: Any, tokenizer: Any, dataset: Any, settings: Any, peft_config: Any) -> LevelTrainer:
    """The trainer of a judge stage, with LoRA adapters put on `model` when `peft_config` says so."""
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return LevelTrainer(model=model, args=settings, train_dataset=dataset.select_columns(["input_ids", "targets"]),
                        data_collator=left_padded(pad), processing_class=tokenizer)
