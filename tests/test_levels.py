import polars as pl
import pytest

from curate.errors import ConfigError, DataError
from curate.split.levels import LEVELS_SCHEMA, LevelConfig, assign_levels
from curate.stats.passrate import pass_rates


def solve_run(outcomes: dict[str, tuple[int, int] | str]) -> pl.DataFrame:
    """A solve run's pass rates from (correct, attempts) per item, 'errors' for an item whose every rollout
    errored; built from verdict rows as `curate solve` stores them."""
    rows = []
    for item, outcome in outcomes.items():
        verdicts = ["error"] * 3 if outcome == "errors" else \
            ["correct"] * outcome[0] + ["wrong", "no_answer"] * ((outcome[1] - outcome[0]) // 2) + \
            ["wrong"] * ((outcome[1] - outcome[0]) % 2)
        rows += [(item, k, v) for k, v in enumerate(verdicts)]
    return pass_rates(pl.DataFrame(rows, schema=["item_id", "sample_idx", "verdict"], orient="row"))


# (small, middle, large) outcomes per item, 4 attempts each, one item per branch of the rules.
EXAMPLE = {
    "a": ((2, 4), (4, 4), (4, 4)),  # level 1 (small partial); large solves: a level-3 candidate
    "b": ((0, 4), (4, 4), (4, 4)),  # level 2: small fails, middle solves all; candidate
    "c": ((0, 4), (1, 4), (4, 4)),  # level 2: small fails, middle partial; candidate
    "d": ((3, 4), (2, 4), (3, 4)),  # level 1 and level 2 (both partial); candidate
    "e": ((4, 4), (4, 4), (0, 4)),  # level 3: large fails (the small solvers did solve it)
    "f": ((0, 4), (0, 4), (0, 4)),  # dropped: no solver ever solves it
    "g": ((4, 4), (4, 4), (4, 4)),  # only a level-3 candidate (easy for everyone)
    "h": ((0, 4), (0, 4), (2, 4)),  # only a level-3 candidate (only large solves it)
    "i": ("errors", (1, 4), (1, 4)),  # dropped: small has no countable attempt
}
SOLVERS = ("r1-1.5b", "r1-7b", "r1-32b")


def example_runs(example=EXAMPLE, solvers=SOLVERS) -> dict[str, pl.DataFrame]:
    return {s: solve_run({item: outcomes[k] for item, outcomes in example.items()}) for k, s in enumerate(solvers)}


def memberships(result) -> set[tuple[str, int, str]]:
    return set(result.levels.select("item_id", "level", "rule").iter_rows())


def test_paper_rules_keeping_every_success_show_every_branch():
    result = assign_levels(example_runs(), LevelConfig(solvers=SOLVERS, level3_success_fraction=1.0))
    assert memberships(result) == {
        ("a", 1, "small_partial"), ("d", 1, "small_partial"),
        ("b", 2, "small_fails_middle_solves"), ("c", 2, "small_fails_middle_partial"), ("d", 2, "both_partial"),
        ("e", 3, "large_fails"),
        *((item, 3, "large_solves_sampled") for item in "abcdgh"),
    }
    assert result.dropped.rows() == [
        ("f", "never_solved", "no solver ever solves it"),
        ("i", "unmeasured", "no countable attempt by r1-1.5b (every rollout error or timeout): retry them")]
    assert dict(result.levels.schema) == LEVELS_SCHEMA
    assert result.levels.select("level", "item_id").rows() == sorted(result.levels.select("level", "item_id").rows())
    reasons = dict(((i, r), why) for i, r, why in result.levels.select("item_id", "rule", "reason").iter_rows())
    assert reasons["b", "small_fails_middle_solves"] == "r1-1.5b solves 0 of 4, r1-7b solves 4 of 4"
    assert reasons["e", "large_fails"] == "r1-32b solves 0 of 4"


def test_sampling_none_of_the_successes_lists_them_as_not_sampled():
    result = assign_levels(example_runs(), LevelConfig(solvers=SOLVERS, level3_success_fraction=0.0))
    assert memberships(result) == {("a", 1, "small_partial"), ("d", 1, "small_partial"),
                                   ("b", 2, "small_fails_middle_solves"), ("c", 2, "small_fails_middle_partial"),
                                   ("d", 2, "both_partial"), ("e", 3, "large_fails")}
    # a, b, c, d are in other levels; g and h are in none, and say why
    assert result.dropped.select("item_id", "rule").rows() == [
        ("f", "never_solved"), ("g", "not_sampled"), ("h", "not_sampled"), ("i", "unmeasured")]
    reason = result.dropped.filter(pl.col("item_id") == "g")["reason"][0]
    assert reason == ("r1-32b solves 4 of 4; not in the level-3 sample of 0 of the 6 items it solves, "
                      "and in no other level")


def test_exclusive_levels_are_disjoint_and_sample_only_the_rest():
    config = LevelConfig(solvers=SOLVERS, level3_success_fraction=1.0, exclusive=True)
    result = assign_levels(example_runs(), config)
    assert memberships(result) == {("a", 1, "small_partial"), ("d", 1, "small_partial"),
                                   ("b", 2, "small_fails_middle_solves"), ("c", 2, "small_fails_middle_partial"),
                                   ("e", 3, "large_fails"), ("g", 3, "large_solves_sampled"),
                                   ("h", 3, "large_solves_sampled")}
    assert result.levels["item_id"].is_unique().all()
    half = assign_levels(example_runs(), LevelConfig(solvers=SOLVERS, level3_success_fraction=0.5, exclusive=True))
    sampled = half.levels.filter(pl.col("rule") == "large_solves_sampled")["item_id"].to_list()
    left_out = half.dropped.filter(pl.col("rule") == "not_sampled")["item_id"].to_list()
    assert len(sampled) == 1 and sorted(sampled + left_out) == ["g", "h"]  # round(0.5 · 2) = 1
    assert half.levels.filter(pl.col("rule") == "large_solves_sampled")["reason"][0].endswith(
        "in the level-3 sample of 1 of the 2 items it solves outside levels 1 and 2")


def test_every_item_is_in_a_level_or_dropped_never_both():
    for exclusive in (False, True):
        for fraction in (0.0, 0.5, 1.0):
            result = assign_levels(example_runs(), LevelConfig(solvers=SOLVERS, level3_success_fraction=fraction,
                                                               exclusive=exclusive))
            placed, dropped = set(result.levels["item_id"]), set(result.dropped["item_id"])
            assert placed | dropped == set(EXAMPLE) and not placed & dropped


def many_easy_items(n=101):
    return {f"q{i:03d}": ((4, 4), (4, 4), (3, 4)) for i in range(n)}  # no level 1 or 2: all level-3 candidates


def sampled(runs, **settings) -> list[str]:
    result = assign_levels(runs, LevelConfig(solvers=SOLVERS, **settings))
    return sorted(result.levels.filter(pl.col("rule") == "large_solves_sampled")["item_id"])


def test_level3_sample_is_the_rounded_fraction_seeded_and_independent_of_row_order():
    runs = example_runs(many_easy_items())
    assert len(sampled(runs, level3_success_fraction=0.1)) == 10  # 10.1
    assert len(sampled(runs)) == 51  # the paper's 0.5 for math: 50.5 rounds up
    shuffled = {name: frame.sample(fraction=1.0, shuffle=True, seed=3) for name, frame in runs.items()}
    assert sampled(shuffled, seed=7) == sampled(runs, seed=7)
    assert sampled(runs, seed=7) != sampled(runs, seed=8)


def test_drop_rule_of_the_paper_uses_the_strongest_solver():
    # The paper also ran DeepSeek-R1 and dropped what it never solves; the 32B's failures that R1 solves are
    # level 3's hardest items.
    example = {"x": ((1, 4), (0, 4), (0, 4), (0, 4)),  # small solves it once, R1 never: dropped by the paper
               "y": ((0, 4), (0, 4), (0, 4), (2, 4))}  # only R1 solves it: level 3, large fails
    solvers = (*SOLVERS, "deepseek-r1")
    runs = example_runs(example, solvers)
    paper = assign_levels(runs, LevelConfig(solvers=solvers, drop_unsolved_by="deepseek-r1"))
    assert memberships(paper) == {("y", 3, "large_fails")}
    assert paper.dropped.rows() == [("x", "never_solved", "deepseek-r1 never solves it")]
    anyone = assign_levels(runs, LevelConfig(solvers=solvers))
    assert memberships(anyone) == {("x", 1, "small_partial"), ("x", 3, "large_fails"), ("y", 3, "large_fails")}


def test_items_missing_from_a_run_are_an_error_naming_the_solver():
    runs = example_runs()
    runs["r1-7b"] = runs["r1-7b"].filter(~pl.col("item_id").is_in(["c", "g"]))
    with pytest.raises(ConfigError, match=r"solver 'r1-7b' has no pass rate for 2 of 9 items \(e\.g\. 'c'\)"):
        assign_levels(runs, LevelConfig(solvers=SOLVERS))


@pytest.mark.parametrize(("names", "message"), [
    (SOLVERS[:2], r"no pass rates for solver\(s\) \['r1-32b'\]"),
    ((*SOLVERS, "extra"), r"solver\(s\) \['extra'\] that solvers .* does not name"),
])
def test_runs_must_match_the_named_solvers(names, message):
    runs = {**example_runs(), "extra": example_runs()["r1-32b"]}
    with pytest.raises(ConfigError, match=message):
        assign_levels({n: runs[n] for n in names}, LevelConfig(solvers=SOLVERS))


def test_a_frame_that_is_not_pass_rates_is_a_data_error():
    runs = example_runs()
    runs["r1-32b"] = runs["r1-32b"].drop("attempts")
    with pytest.raises(DataError, match=r"solver 'r1-32b' lack column\(s\) \['attempts'\]"):
        assign_levels(runs, LevelConfig(solvers=SOLVERS))


@pytest.mark.parametrize(("settings", "message"), [
    ({"solvers": ("a", "b")}, "at least three solvers"),
    ({"solvers": ("a", "b", "a")}, "solvers must differ"),
    ({"solvers": ["a", "b", "c"]}, "a tuple of solver names"),
    ({"solvers": SOLVERS, "level3_success_fraction": 1.5}, r"level3_success_fraction must be in \[0, 1\]"),
    ({"solvers": SOLVERS, "drop_unsolved_by": "r1"}, "drop_unsolved_by 'r1' is not one of the solvers"),
])
def test_bad_settings_are_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        LevelConfig(**settings)


def test_settings_carry_help_text():
    from dataclasses import fields
    assert all(f.metadata.get("help") for f in fields(LevelConfig))
    assert LevelConfig(solvers=SOLVERS).level3_success_fraction == 0.5  # the paper's fraction for math
