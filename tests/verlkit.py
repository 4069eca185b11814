"""What the verl tests share: verl imported without changing this process's logging, and verl's PPO config composed
by hydra from verl's own ppo_trainer.yaml."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator


@contextlib.contextmanager
def logging_kept() -> Iterator[None]:
    """`import verl` calls logging.basicConfig, which would fix the format of every later log line of this process
    (curate's CLI configures logging on first use): the root logger is put back as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def ppo_config(overrides: list[str]):
    import verl
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=os.path.join(os.path.dirname(verl.__file__), "trainer", "config"),
                               version_base=None):
        return compose("ppo_trainer", overrides=overrides)
