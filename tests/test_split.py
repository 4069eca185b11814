import hashlib
import json
from dataclasses import asdict

import numpy as np
import polars as pl
import pytest

from curate.errors import ConfigError
from curate.split import hygiene
from curate.split.hygiene import (
    check_disjoint,
    decontaminate,
    deduplicate,
    normalize_question,
    normalize_questions,
)
from curate.split.rules import (
    SIDES,
    TauRule,
    all_arm,
    assign_sides,
    budget_shares,
    choose_tau,
    curriculum_stages,
    random_arm,
    reversed_arm,
)


def frame(scores, domains=None, questions=None, **extra) -> pl.DataFrame:
    n = len(scores)
    return pl.DataFrame({"item_id": [f"i{i:02d}" for i in range(n)],
                         "question": questions or [f"question number {i}" for i in range(n)],
                         "reference": [None] * n, "domain": domains or ["math"] * n,
                         "score": scores, **extra},
                        schema_overrides={"score": pl.Float64, "reference": pl.String, "domain": pl.String})


TIES = [1, 2, 2, 3, 3, 3, 4, 4, 5, 5]  # #(score > v): v=1 → 9, 2 → 7, 3 → 4, 4 → 2, 5 → 0


# --- sides --------------------------------------------------------------------------------------

def test_sides_at_tau_3_keep_every_row_and_column():
    items = frame([1, 2, 3, 3.5, 4, 5, None], extra_col=list("abcdefg"))
    sided = assign_sides(items, 3)
    assert sided["side"].to_list() == ["sft", "sft", "sft", "rl", "rl", "rl", "unscored"]
    assert sided.drop("side").equals(items)
    assert set(sided["side"]) <= set(SIDES)
    fixed = choose_tau(items, TauRule(tau=3))
    assert (fixed.tau, fixed.method) == (3.0, "fixed") and choose_tau(items, TauRule()).tau == 3.0


def test_per_domain_tau_dict_with_null_domain_and_missing_domains():
    items = frame([1, 3, 3, 4, 2, None, 5], domains=["math", "math", "code", "code", None, "bio", None])
    sided = assign_sides(items, {"math": 2, "code": 3, "__none__": 4})
    assert sided["side"].to_list() == ["sft", "rl", "sft", "rl", "sft", "unscored", "rl"]  # bio: unscored only
    with pytest.raises(ValueError, match=r"\['__none__', 'code'\]"):
        assign_sides(items, {"math": 2})
    with pytest.raises(ValueError, match="NaN"):
        assign_sides(items.with_columns(pl.lit(float("nan")).alias("score")), 3)


# --- choosing τ ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("q", "tau", "n_rl", "n_at_tau"), [
    (0.3, 4.0, 2, 2),   # target 3; τ = 3 would give 4 > 3, so τ = 4 and RL = the two 5s
    (0.4, 3.0, 4, 3),   # target 4, reached exactly
    (0.0, 5.0, 0, 2),
    (1.0, 1.0, 9, 1),   # τ is an observed score, so the easiest tie group stays in SFT
])
def test_quantile_tau_never_breaks_ties(q, tau, n_rl, n_at_tau):
    items = frame([*TIES, None])
    choice = choose_tau(items, TauRule(quantile=q))
    assert choice.tau == tau and choice.method == "quantile"
    d = choice.detail
    assert (d["target_n_rl"], d["n_rl"], d["n_sft"], d["n_at_tau"], d["n_scored"], d["n_unscored"]) == \
        (int(q * 10), n_rl, 10 - n_rl, n_at_tau, 10, 1)
    assert d["rl_fraction"] == n_rl / 10
    assert (assign_sides(items, choice.tau)["side"] == "rl").sum() == n_rl
    json.dumps(asdict(choice))


def test_quantile_target_survives_floating_point():
    assert 0.29 * 100 < 29  # so the floor needs care
    assert choose_tau(frame(list(range(1, 101))), TauRule(quantile=0.29)).detail["n_rl"] == 29


@pytest.mark.parametrize(("n_rl", "tau", "reached"),
                         [(5, 3.0, 4), (4, 3.0, 4), (3, 4.0, 2), (0, 5.0, 0), (100, 1.0, 9)])
def test_budget_tau(n_rl, tau, reached):
    choice = choose_tau(frame(TIES), TauRule(rl_budget=n_rl))
    assert (choice.tau, choice.detail["budget"], choice.detail["n_rl"]) == (tau, n_rl, reached)
    assert asdict(choose_tau(frame(TIES), TauRule(rl_budget=np.int64(n_rl)))) == json.loads(json.dumps(asdict(choice)))


@pytest.mark.parametrize(("rule", "message"), [
    ({"quantile": 1.5}, "--quantile is the fraction of scored items for RL and must lie in [0, 1], not 1.5"),
    ({"rl_budget": -1}, "--rl-budget must be at least 0, not -1"),
    ({"tau": 2, "quantile": 0.3}, "choose τ one way, not with --tau and --quantile"),
    ({"per_domain": True}, "--per-domain needs --quantile or --rl-budget"),
])
def test_a_tau_rule_is_checked_once_where_it_is_made(rule, message):
    with pytest.raises(ConfigError) as refused:
        TauRule(**rule)
    assert message in str(refused.value)


def test_tau_is_undefined_without_scores():
    with pytest.raises(ValueError, match="no scored items"):
        choose_tau(frame([None, None]), TauRule(quantile=0.5))
    with pytest.raises(ValueError, match="no scored items"):
        choose_tau(frame([None, None]), TauRule(rl_budget=1, per_domain=True))


def test_per_domain_quantile_gives_every_domain_rl():
    items = frame([1, 2, 3, 4, 5, 1, 1, 2, 3, 4, None],
                  domains=["math"] * 5 + ["code"] * 3 + [None, None, "bio"])
    choice = choose_tau(items, TauRule(quantile=0.4, per_domain=True))
    # math: target 2 → τ 3 (4, 5 in RL); code: target ⌊1.2⌋ = 1 → τ 1 (the 2); none: target 0 → τ 4
    assert choice.tau == {"__none__": 4.0, "code": 1.0, "math": 3.0}
    d = choice.detail
    assert {k: v["n_rl"] for k, v in d["domains"].items()} == {"__none__": 0, "code": 1, "math": 2}
    assert (d["n_null_domain"], d["null_domain_group"], choice.method) == (2, "__none__", "per_domain_quantile")
    sided = assign_sides(items, choice.tau)
    assert sided.filter(pl.col("side") == "rl")["item_id"].to_list() == ["i03", "i04", "i07"]
    # one RL item in all: math (5 of 10 scored) has the largest share
    budget = choose_tau(items, TauRule(rl_budget=1, per_domain=True))
    assert budget.tau == {"__none__": 4.0, "code": 2.0, "math": 4.0}
    json.dumps(asdict(choice))


@pytest.mark.parametrize(("sizes", "budget", "shares"), [
    ({"math": 5, "code": 3, "__none__": 2}, 5, {"math": 2, "code": 2, "__none__": 1}),  # 2.5, 1.5, 1: tie → code
    ({"math": 5, "code": 3, "__none__": 2}, 1, {"math": 1, "code": 0, "__none__": 0}),
    ({"a": 1, "b": 1, "c": 1}, 2, {"a": 1, "b": 1, "c": 0}),
    ({"a": 7, "b": 3}, 0, {"a": 0, "b": 0}),
    ({"a": 7, "b": 3}, 20, {"a": 14, "b": 6}),
])
def test_budget_shares_are_proportional_by_largest_remainders(sizes, budget, shares):
    assert budget_shares(sizes, budget) == shares and sum(shares.values()) == budget


def test_per_domain_budget_is_a_total_not_a_budget_per_domain():
    """--rl-budget N --per-domain gave each domain N (70 RL items for N = 10); N bounds the total."""
    domains = [f"d{i}" for i in range(7) for _ in range(10)]
    items = frame([float(i % 5 + 1) + (i % 7) / 10 for i in range(70)], domains=domains)
    choice = choose_tau(items, TauRule(rl_budget=10, per_domain=True))
    n_rl = int((assign_sides(items, choice.tau)["side"] == "rl").sum())
    assert 0 < n_rl <= 10 and sum(d["n_rl"] for d in choice.detail["domains"].values()) == n_rl
    assert {d["budget"] for d in choice.detail["domains"].values()} <= {1, 2}
    assert choice.detail["value"] == 10


# --- arms ---------------------------------------------------------------------------------------

@pytest.fixture
def sided() -> pl.DataFrame:
    scores = [1, 5, 2, 4, 3, None, 2, 5, 1, 4, 3, 3, 2, 4, 5, 1, None, 2, 3, 4]
    return assign_sides(frame(scores), 3)  # 11 SFT, 7 RL, 2 unscored


def sizes(arm: pl.DataFrame) -> dict[str, int]:
    return {s: int((arm["side"] == s).sum()) for s in SIDES}


def test_random_arm_matches_sizes_and_is_deterministic(sided):
    arm = random_arm(sided, seed=0)
    assert sizes(sided) == {"sft": 11, "rl": 7, "unscored": 2} == sizes(arm)
    assert arm.equals(random_arm(sided, seed=0))
    assert not arm.equals(random_arm(sided, seed=1))
    assert arm.drop("side", "arm").equals(sided.drop("side"))  # rows and order kept
    assert set(arm["arm"]) == {"random"}
    assert arm.filter(pl.col("score").is_null())["side"].to_list() == ["unscored", "unscored"]
    rl, sft = (set(arm.filter(pl.col("side") == s)["item_id"]) for s in ("rl", "sft"))
    assert not rl & sft
    scored = sided.filter(pl.col("score").is_not_null())["item_id"].to_list()
    by_hash = sorted(scored, key=lambda i: hashlib.sha256(f"0\x1f{i}".encode()).hexdigest())
    assert rl == set(by_hash[:7])  # the documented recipe, recomputed here
    check_disjoint(arm)


def test_reversed_and_all_arms(sided):
    flipped = reversed_arm(sided)
    assert sizes(flipped) == {"sft": 7, "rl": 11, "unscored": 2}
    assert flipped.filter(pl.col("side") == "sft")["item_id"].to_list() == \
        sided.filter(pl.col("side") == "rl")["item_id"].to_list()
    assert set(flipped["arm"]) == {"reversed"}
    assert sizes(all_arm(sided, "rl")) == {"sft": 0, "rl": 18, "unscored": 2}
    assert set(all_arm(sided, "sft")["arm"]) == {"sft_all"}
    with pytest.raises(ValueError, match="side must be"):
        all_arm(sided, "both")
    with pytest.raises(ValueError, match="null score"):
        random_arm(sided.with_columns(pl.lit("sft").alias("side")), 0)


# --- curriculum ---------------------------------------------------------------------------------

def test_stages_are_equal_sized_and_monotone():
    rl = assign_sides(frame([3.5, 4, 4, 4, 5, 5, 4.5]), 3)
    staged = curriculum_stages(rl, 3)
    # ranks 0..6 → ⌊r·3/7⌋ + 1 = 1,1,1,2,2,3,3: sizes 3, 2, 2
    assert staged.group_by("stage").len().sort("stage")["len"].to_list() == [3, 2, 2]
    stage_of = dict(zip(staged["score"].to_list(), staged["stage"].to_list(), strict=False))
    assert (stage_of[3.5], stage_of[4.5], stage_of[5.0]) == (1, 2, 3)
    bounds = staged.group_by("stage").agg(pl.col("score").min().alias("lo"), pl.col("score").max().alias("hi"))
    bounds = bounds.sort("stage")
    assert all(hi <= lo for hi, lo in zip(bounds["hi"][:-1], bounds["lo"][1:], strict=True))
    assert staged.drop("stage").equals(rl)
    assert staged.equals(curriculum_stages(rl, 3))
    # k > n: ⌊r·10/7⌋ + 1 leaves stages 4, 7 and 10 empty
    assert sorted(curriculum_stages(rl, 10)["stage"].to_list()) == [1, 2, 3, 5, 6, 8, 9]


def test_stages_by_any_numeric_field_in_the_given_direction_and_refuse_missing():
    rl = frame([4, 4, 4, 4], pass_rate=[0.1, 0.9, 0.5, 0.0], steps=[3, 9, 5, 1])
    assert curriculum_stages(rl, 2, by="pass_rate", harder_when="low")["stage"].to_list() == [2, 1, 1, 2]
    assert curriculum_stages(rl, 2, by="steps", harder_when="high")["stage"].to_list() == [1, 2, 2, 1]
    with pytest.raises(ValueError, match="1 of 4 RL item"):
        curriculum_stages(rl.with_columns(pl.Series("pass_rate", [0.1, None, 0.5, 0.0])), 2, by="pass_rate",
                          harder_when="low")
    with pytest.raises(ValueError, match="harder_when"):
        curriculum_stages(rl, 2, by="steps", harder_when="up")
    with pytest.raises(ValueError, match="numeric column"):
        curriculum_stages(rl, 2, by="question")
    with pytest.raises(ValueError, match="not on the RL side"):
        curriculum_stages(assign_sides(frame([1, 4]), 3), 2)


# --- hygiene ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("Find $x$ if  $x^2=4$.", "find $x$ if $x^2=4$."),
    ("find $ x $ if $x^2 = 4$ .", "find $x$ if $x^2=4$."),
    ("Let $\\alpha \\, b = { x }$ ,\tso~\\quad y !", "let $\\alpha b={x}$, so y!"),
    ("$$ a + b $$ costs \\$5 ", "$$a+b$$ costs \\$5"),
    ("a \\\\, b \\quadrilateral", "a \\\\, b \\quadrilateral"),  # a line break, not \, ; not \quad
    ("x^{2}", "x^{2}"),
])
def test_normalize_question(text, expected):
    assert normalize_question(text) == expected


# Texts where a column-wise normaliser could part from normalize_question: every whitespace str.split() knows
# (\x1c-\x1f, \x85, U+2003...), case beyond ASCII, control characters, punctuation after spaces, braces, math.
TRICKY = ["", " ", "\x1c\x1d\x1e\x1fA\x0bB\x0c\rC\n", "  Lead and trail \t", "a , b ; c : d ! e ? f . g",
          "{ x }  { } ", "a\x00b\x7f C", "İSTANBUL ß Σ Ǆ", "non\u00a0breaking\u2003em\u3000ideographic\x85nel",
          "Price $5 and ~ tilde", "back\\slash \\, \\quad", "$ a + b $ then $$ c $$", "\\$ not math $",
          "ZERO\u200bWIDTH", "tab\t,", "é , É", "Ⅻ ǅ", "x^{ 2 } ,", "(a) ; [b] !"]


def test_normalize_questions_is_normalize_question_on_every_text(sample_rows):
    rng = np.random.default_rng(0)
    alphabet = list("aZ09 ,.;:!?{}$~\\\t\n") + ["\x1c", "\x1f", "\x0b", "\u00a0", "\u2003", "İ", "ß", "\\quad"]
    made = ["".join(rng.choice(alphabet, size=rng.integers(0, 30))) for _ in range(5000)]
    texts = TRICKY + [row["question"] for row in sample_rows] + made
    assert normalize_questions(pl.Series(texts, dtype=pl.String)).to_list() == [normalize_question(t) for t in texts]


def test_deduplicate_exact_and_normalised_keeps_the_first():
    questions = ["Find $x$ if  $x^2=4$.", "find $ x $ if $x^2 = 4$ .", "Find $x$ if  $x^2=4$.",
                 "Find $x$ if $x^{2}=4$.", "Find x if x^2=4."]
    kept, removed = deduplicate(frame([1, 2, 3, 4, 5], questions=questions))
    assert kept["item_id"].to_list() == ["i00", "i03", "i04"]  # braces and $…$ vs plain text are not merged
    assert removed.select("item_id", "reason").rows() == [("i01", "normalised duplicate of i00"),
                                                         ("i02", "exact duplicate of i00")]
    assert removed.columns == [*kept.columns, "reason"]


def test_check_disjoint_names_the_offending_ids():
    items = frame([1, 4, 5, 2], questions=["Same  question.", "same question .", "other", "else"])
    with pytest.raises(ValueError, match=r"normalised question.*\['i00', 'i01'\]"):
        check_disjoint(assign_sides(items, 3))
    clash = assign_sides(items.with_columns(pl.Series("item_id", ["a", "b", "c", "c"])), 3)
    with pytest.raises(ValueError, match=r"item_id.*\['c'\]"):
        check_disjoint(clash)
    check_disjoint(assign_sides(items, 10))  # all SFT


BENCH = " ".join(f"w{i}" for i in range(30))  # 30 distinct tokens


def test_decontaminate_catches_13_gram_not_12_gram():
    copy13 = "Intro " + " ".join(f"W{i}" for i in range(5, 18)) + "  outro"  # case and spacing differ
    copy12 = "intro " + " ".join(f"w{i}" for i in range(5, 17)) + " outro w18 w19"
    items = frame([1, 2, 3], questions=[copy13, copy12, "an unrelated question with many words in it here ok"])
    kept, removed = decontaminate(items, [BENCH], source_names=["AIME"])
    assert kept["item_id"].to_list() == ["i01", "i02"]
    assert removed["reason"].to_list() == ["13-gram overlap with AIME: '" + " ".join(f"w{i}" for i in range(5, 18))
                                           + "'"]
    assert removed.drop("reason").equals(items[:1])


def test_decontaminate_short_texts_compare_whole():
    items = frame([1, 2, 3, 4], questions=["solve w3 w4 w5 now", "w3 w4 w5", "w3 w5",
                                           "long question " + " ".join(f"x{i}" for i in range(20)) + " x3 y"])
    kept, removed = decontaminate(items, [BENCH, "X3 y"])
    assert kept["item_id"].to_list() == ["i00", "i02"]  # i00 has 5 tokens but not all in a row in BENCH
    assert removed["reason"].to_list() == [
        "whole text (3 tokens, under 13) found in benchmark text 0: 'w3 w4 w5'",
        "contains all of benchmark text 1 (2 tokens, under 13): 'x3 y'"]
    with pytest.raises(ValueError, match="source names"):
        decontaminate(items, [BENCH], source_names=["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        decontaminate(items, [BENCH, "  "])


def test_decontaminate_verifies_hash_candidates(monkeypatch):
    """With a zero multiplier a run's hash is its last token's: collisions everywhere, the text decides."""
    items = frame([1, 2, 3], questions=[" ".join(f"w{i}" for i in range(3, 16)), "a b c d e f g h i j k l w29",
                                        "w1 w2 w3 " + " ".join(f"z{i}" for i in range(9)) + " w29"])
    expected = decontaminate(items, [BENCH])
    monkeypatch.setattr(hygiene, "_MULTIPLIER", np.uint64(0))
    assert [r.equals(e) for r, e in zip(decontaminate(items, [BENCH]), expected, strict=True)] == [True, True]
    assert expected[1]["item_id"].to_list() == ["i00"]


def test_the_same_stem_over_other_options_is_another_problem():
    """Found scoring ARC: "Which activity is an example of a good health habit?" asked over four other options
    was removed as an exact duplicate; 32 of the 35 ARC items dedup removed had other options."""
    def options(*texts):
        return [{"label": chr(65 + i), "text": t} for i, t in enumerate(texts)]

    habit = "Which activity is an example of a good health habit?"
    items = pl.DataFrame({
        "item_id": ["a", "b", "c", "d"],
        "question": [habit, habit, habit, "What is 2 + 2?"],
        "choices": [options("smoking", "wearing a hat in the Sun"), options("watching television", "exercising"),
                    options("wearing a hat in the Sun", "smoking"), None],
        "score": [2.0, 4.0, 3.0, 1.0],
    }, schema_overrides={"choices": pl.List(pl.Struct({"label": pl.String, "text": pl.String}))})
    kept, removed = deduplicate(items)
    assert kept["item_id"].to_list() == ["a", "b", "d"]
    assert removed.select("item_id", "reason").rows() == [("c", "normalised duplicate of a")]  # options reordered
    check_disjoint(assign_sides(kept, 3.0))  # a (SFT) and b (RL) share a stem, not a problem
