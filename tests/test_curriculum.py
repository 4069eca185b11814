"""SEC and DUMP in a simulated course: five difficulty levels whose pass rates are known and rise as "training"
proceeds (the learner's skill walks from level 1 to level 5), advantages from Bernoulli groups as GRPO computes
them. The samplers must draw mostly what sits near p = 0.5 and follow it as it moves; their state must round-trip
through JSON; the TRL sampler keeps TRL's repeat order and resumes exactly."""

import json

import numpy as np
import pytest

from curate.errors import ConfigError, DataError
from train.curriculum import BANDITS, make_bandit, make_curriculum
from train.curriculum.trl_sampler import CurriculumRepeatSampler

LEVELS, PER_LEVEL, GROUP, BATCH, STEPS = 5, 20, 8, 16, 300
CATEGORIES = [level for level in range(1, LEVELS + 1) for _ in range(PER_LEVEL)]


def pass_rate(level: int, step: int) -> float:
    """The learner's skill rises from 1 to 5 over the course; a level it has reached is passed half the time."""
    skill = 1 + (LEVELS - 1) * step / (STEPS - 1)
    return 1 / (1 + np.exp(-2.5 * (skill - level)))


def group_advantages(rewards: np.ndarray) -> np.ndarray:
    """GRPO's (TRL's scale_rewards=group): (r - mean) / (std + 1e-4), the unbiased std."""
    return (rewards - rewards.mean()) / (rewards.std(ddof=1) + 1e-4)


def course(name: str | None, seed: int) -> tuple[np.ndarray, float]:
    """Draws per step and level, and the share of draws whose level was, at that step, the one nearest p = 0.5
    (None: uniform sampling)."""
    curriculum = make_curriculum(name, CATEGORIES, seed) if name else None
    uniform, outcomes = np.random.default_rng(seed), np.random.default_rng(seed + 1000)
    draws, nearest = np.zeros((STEPS, LEVELS)), 0
    for step in range(STEPS):
        indices = curriculum.sample(BATCH) if curriculum else uniform.integers(0, len(CATEGORIES), BATCH).tolist()
        rates = {level: pass_rate(level, step) for level in range(1, LEVELS + 1)}
        best = min(rates, key=lambda level: abs(rates[level] - 0.5))
        categories, advantages = [], []
        for index in indices:
            level = CATEGORIES[index]
            rewards = (outcomes.random(GROUP) < rates[level]).astype(float)
            categories += [level] * GROUP
            advantages += group_advantages(rewards).tolist()
            draws[step, level - 1] += 1
            nearest += level == best
        if curriculum:
            curriculum.update(categories, advantages)
    return draws, nearest / (STEPS * BATCH)


@pytest.mark.parametrize(("name", "at_least"), [("sec", 0.27), ("dump", 0.7)])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_bandits_concentrate_near_half_and_follow_it_as_it_moves(name, at_least, seed):
    draws, nearest = course(name, seed)
    _, uniform = course(None, seed)
    assert uniform < 0.22  # one level in five
    assert nearest >= at_least  # SEC (temperature 1) measured 0.29-0.32 over 5 seeds, DUMP 0.81-0.86
    # In each fifth of the course the level drawn most is the one nearest p = 0.5 at its middle, or the one
    # before (DUMP's window of 300 advantages lags a little behind a moving target).
    for fifth, steps in enumerate(np.array_split(np.arange(STEPS), LEVELS)):
        middle = min(range(1, LEVELS + 1), key=lambda level: abs(pass_rate(level, int(steps.mean())) - 0.5))
        assert int(draws[steps].sum(axis=0).argmax()) + 1 in (middle, middle - 1), (fifth, draws[steps].sum(axis=0))
    first, last = draws[:STEPS // LEVELS].sum(axis=0), draws[-STEPS // LEVELS:].sum(axis=0)
    assert first.argmax() == 0 and last.argmax() >= LEVELS - 2


def test_sec_updates_each_category_by_td0_on_the_mean_absolute_advantage():
    sec = make_bandit("sec")
    sec.observe({"1": [1.0, 0.5], "2": [0.0]})  # magnitudes, as the curriculum hands them
    sec.observe({"1": [0.25]})
    assert sec.values == {"1": pytest.approx(0.5 * 0.25 + 0.5 * 0.5 * 0.75), "2": 0.0}
    curriculum = make_curriculum("sec", [1, 2], seed=0)
    curriculum.update([1, 1, 2], [1.0, -0.5, 0.0])
    expected = np.exp([0.375, 0.0]) / np.exp([0.375, 0.0]).sum()
    assert list(curriculum.probabilities().values()) == pytest.approx(expected.tolist())


def test_dump_scores_as_its_public_code():
    dump = make_bandit("dump", {"window": 3})
    dump.observe({"a": [0.5, 1.0, 0.25, 2.0], "b": [1.0]})
    assert dump.recent == {"a": [1.0, 0.25, 2.0], "b": [1.0]} and dump.seen == {"a": 4, "b": 1}
    total = 5
    expected = [np.mean([1.0, 0.25, 2.0]) + np.sqrt(2 * np.log(total + 1) / 5),
                1.0 + np.sqrt(2 * np.log(total + 1) / 2), np.sqrt(2 * np.log(total + 1) / 1)]
    assert dump.scores(["a", "b", "c"]).tolist() == pytest.approx(expected)
    weights = np.exp(np.array(expected) / 0.1)
    assert dump.probabilities(["a", "b", "c"]).tolist() == pytest.approx((weights / weights.sum()).tolist())
    assert make_bandit("dump").scores(["x", "y"]).tolist() == pytest.approx([np.sqrt(2 * np.log(2))] * 2)


@pytest.mark.parametrize("name", sorted(BANDITS))
def test_the_state_round_trips_through_json_and_the_restored_curriculum_draws_the_same(name):
    original = make_curriculum(name, CATEGORIES, seed=3)
    feedback = np.random.default_rng(0)
    for _ in range(5):
        drawn = original.sample(BATCH)
        original.update([CATEGORIES[i] for i in drawn], feedback.normal(size=BATCH).tolist())
    restored = make_curriculum(name, CATEGORIES, seed=99)
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    for _ in range(5):
        drawn = original.sample(BATCH)
        assert restored.sample(BATCH) == drawn
        advantages = feedback.normal(size=BATCH).tolist()
        for curriculum in (original, restored):
            curriculum.update([CATEGORIES[i] for i in drawn], advantages)
    assert restored.state_dict() == original.state_dict()


def test_a_state_of_other_categories_or_another_bandit_is_refused():
    state = make_curriculum("sec", [1, 2, 3], seed=0).state_dict()
    with pytest.raises(ConfigError, match=r"categories \['1', '2', '3'\].*with \['1', '2'\]"):
        make_curriculum("sec", [1, 2], seed=0).load_state_dict(state)
    with pytest.raises(ConfigError, match="saved by sec"):
        make_curriculum("dump", [1, 2, 3], seed=0).load_state_dict(state)


def test_items_without_a_category_unknown_categories_and_bad_settings_are_refused():
    with pytest.raises(DataError, match="1 of 3 items have no 'level'"):
        make_curriculum("sec", [1, None, 2], seed=0, field="level")
    with pytest.raises(DataError, match=r"categories \['7'\] that none of its items has"):
        make_curriculum("sec", [1, 2], seed=0).update([7], [0.5])
    with pytest.raises(ConfigError, match=r"takes the settings \['window', 'temperature'\], not \['alpha'\]"):
        make_bandit("dump", {"alpha": 0.1})
    with pytest.raises(ConfigError, match="alpha must be in"):
        make_bandit("sec", {"alpha": 2})


def sampler(seed: int = 0, repeat: int = 2, groups: int = 3) -> CurriculumRepeatSampler:
    return CurriculumRepeatSampler(make_curriculum("dump", CATEGORIES, seed), len(CATEGORIES), mini_repeat_count=2,
                                   batch_size=groups, repeat_count=repeat)


def test_the_sampler_keeps_trls_repeat_order_and_length():
    from trl.trainer.utils import RepeatSampler

    ours, trls = sampler(), RepeatSampler(CATEGORIES, mini_repeat_count=2, batch_size=3, repeat_count=2, seed=0)
    order = list(ours)
    assert len(order) == len(ours) == len(trls) == len(list(trls))
    for start in range(0, len(order), 12):  # a chunk: 3 prompts, each twice in a row, the whole chunk twice
        chunk = order[start:start + 12]
        assert chunk[:6] == chunk[6:] and chunk[0:6:2] == chunk[1:6:2]
    assert [chunk for chunk in ours.drawn] == [order[s:s + 6:2] for s in range(0, len(order), 12)]


def test_a_restored_sampler_gives_back_the_skipped_batches_then_draws_what_an_uninterrupted_one_draws():
    """The Trainer's loader (accelerate's DataLoaderShard) reads one batch ahead, and resumes mid-epoch by skipping
    the batches it trained on (skip_first_batches): the restored sampler hands them back from its record, then
    draws on as the uninterrupted sampler does."""
    from accelerate import skip_first_batches
    from accelerate.data_loader import DataLoaderShard

    def loader(of):
        return DataLoaderShard(range(len(CATEGORIES)), batch_size=12, sampler=of)  # a batch is one chunk

    def feed(curriculum, batch):
        curriculum.update([CATEGORIES[i] for i in batch], [float(i % 3) for i in batch])

    uninterrupted, first_run, cut = sampler(), sampler(), 4
    seen = []
    for batch in loader(uninterrupted):
        seen.append(batch.tolist())
        feed(uninterrupted.curriculum, seen[-1])
    for number, batch in enumerate(loader(first_run)):
        feed(first_run.curriculum, batch.tolist())
        if number == cut - 1:
            state = json.loads(json.dumps(first_run.state_dict()))  # the checkpoint after `cut` batches
            break
    assert len(state["drawn"]) == cut + 1  # the batch read ahead was drawn too
    resumed = sampler(seed=42)
    resumed.load_state_dict(state)
    after = []
    for batch in skip_first_batches(loader(resumed), cut):
        after.append(batch.tolist())
        feed(resumed.curriculum, after[-1])
    assert after == seen[cut:]

    next_epoch = sampler(seed=42)  # a record of epoch 0 is not handed back in epoch 1: it draws afresh
    next_epoch.load_state_dict(state)
    next_epoch.set_epoch(1)
    fresh = make_curriculum("dump", CATEGORIES, seed=7)
    fresh.load_state_dict(state["curriculum"])
    assert list(next_epoch)[:6:2] == fresh.sample(3)


def test_the_stage_setting_names_every_bandit():
    from train.config import CURRICULA

    assert CURRICULA == ("none", *BANDITS)
