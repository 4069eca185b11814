"""Unit tests for curate/parse.py: completion text → (status, score)."""

from __future__ import annotations

import math

import pytest

from curate.parse import (  # noqa: I001
    score_distribution,
    FAILED,
    PARSERS,
    Parsed,
    ScoreOnlyParser,
    Status,
    TaggedScoreParser,
    parse_completion,
    score_alternatives,
)

TAGGED = PARSERS["tagged_score"]
SCORE_ONLY = PARSERS["score_only"]
BOTH = pytest.mark.parametrize("parser", [TAGGED, SCORE_ONLY], ids=["tagged_score", "score_only"])


def DECODED(score: int) -> Parsed:  # noqa: N802 - reads as a constructor in tables
    """What parse_completion returns for a score read from the decoded text."""
    return Parsed(Status.OK, score, method="decoded")


def assert_invariant(result: Parsed) -> None:
    """Only OK carries a score, and that score is a plain int in 1..5."""
    assert isinstance(result.status, Status)
    if result.status is Status.OK:
        assert type(result.score) is int
        assert 1 <= result.score <= 5
    else:
        assert result.score is None


# --------------------------------------------------------------------------------------------
# Registry and types
# --------------------------------------------------------------------------------------------

def test_parsers_registry_names_and_types():
    assert sorted(PARSERS) == ["score_only", "tagged_score"]
    assert isinstance(TAGGED, TaggedScoreParser)
    assert isinstance(SCORE_ONLY, ScoreOnlyParser)
    for name, parser in PARSERS.items():
        assert parser.name == name
    assert {name: parser.version for name, parser in PARSERS.items()} == {"score_only": 1, "tagged_score": 2}


def test_status_values_and_failed_set():
    assert [s.value for s in Status] == ["ok", "unparseable", "truncated", "error"]
    assert Status.OK == "ok"
    assert set(FAILED) == {Status.UNPARSEABLE, Status.TRUNCATED, Status.ERROR}
    assert Status.OK not in FAILED


def test_parsed_is_frozen():
    parsed = Parsed(Status.OK, 3)
    assert parsed.detail == ""
    with pytest.raises(AttributeError):
        parsed.score = 4  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# error / truncated take precedence over the text
# --------------------------------------------------------------------------------------------

@BOTH
@pytest.mark.parametrize("finish_reason", ["stop", "length"])
def test_error_wins_over_everything(parser, finish_reason):
    text = "<score>4</score>" if parser is TAGGED else "4"
    result = parse_completion(parser, text, finish_reason, error="HTTP 500: upstream died")
    assert result == Parsed(Status.ERROR, None, "HTTP 500: upstream died")


@BOTH
def test_error_with_empty_text(parser):
    result = parse_completion(parser, "", "stop", error="timeout")
    assert result.status is Status.ERROR
    assert result.score is None
    assert result.detail == "timeout"


@pytest.mark.parametrize("parser, text", [
    (TAGGED, "<score>4</score>"),
    (TAGGED, "Level 1 - Recall ... in the form <score>N</score> ... <score>4</score>"),
    (TAGGED, "<think>hmm</think><score>5</score>"),
    (SCORE_ONLY, "4"),
    (SCORE_ONLY, " 3\n"),
    (SCORE_ONLY, ""),
])
def test_length_is_truncated_even_with_valid_looking_score(parser, text):
    result = parse_completion(parser, text, "length")
    assert result.status is Status.TRUNCATED
    assert result.score is None
    assert result.detail  # says why


@BOTH
def test_empty_error_string_is_not_an_error(parser):
    text = "<score>2</score>" if parser is TAGGED else "2"
    assert parse_completion(parser, text, "stop", error="") == DECODED(2)
    assert parse_completion(parser, text, "stop") == DECODED(2)


# --------------------------------------------------------------------------------------------
# tagged_score
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, score", [
    ("<score>1</score>", 1),
    ("<score>2</score>", 2),
    ("<score>3</score>", 3),
    ("<score>4</score>", 4),
    ("<score>5</score>", 5),
    ("It needs a two-step argument. <score>3</score>", 3),
    ("<score> 4 </score>", 4),
    ("<score>\n4\n</score>", 4),
    ("<score>\t2\t</score>", 2),
    ("rationale\n<score>4</score>\n\n  \t", 4),  # trailing whitespace after the tag is fine
    ("first guess <score>2</score>, on reflection <score>5</score>", 5),  # LAST tag wins
    ("<score>5</score> no wait <score>1</score>", 1),
    # the rubric's placeholder echoed, then a real final answer
    ("The form is <score>N</score>. This takes two steps. <score>2</score>", 2),
    ("Format: <score>N</score>\n<score>2</score>", 2),
    # a score mentioned inside a closed thinking block is ignored; the answer's wins
    ("<think>maybe <score>5</score>?</think>Final: <score>1</score>", 1),
])
def test_tagged_ok(text, score):
    result = parse_completion(TAGGED, text, "stop")
    assert result == DECODED(score)
    assert type(result.score) is int


@pytest.mark.parametrize("text", [
    "",
    "   \n",
    "The answer is 4.",
    "4",
    "<score>0</score>",
    "<score>6</score>",
    "<score>9</score>",
    "<score>4.5</score>",
    "<score>4.0</score>",
    "<score>N</score>",  # the rubric's placeholder alone
    "<score></score>",
    "<score>   </score>",
    "<score>44</score>",
    "<score>04</score>",
    "<score>-3</score>",
    "<score>+3</score>",
    "<score>four</score>",
    "<score>4/5</score>",
    "<score>4</score> because it is multi-step",  # text after the last tag
    "<score>4</score>.",
    "<score>3</score> and the format is <score>N</score>",  # last tag is the placeholder
    "<score>2</score> <score>6</score>",  # last tag out of range: no fallback to an earlier one
    "<Score>4</Score>",
    "<SCORE>4</SCORE>",
    "<score>4",  # never closed
    "score: 4",
    "<score>4</score >",
])
def test_tagged_unparseable(text):
    result = parse_completion(TAGGED, text, "stop")
    assert result.status is Status.UNPARSEABLE
    assert result.score is None
    assert result.detail


def test_tagged_unparseable_details_say_why():
    assert "no <score>" in parse_completion(TAGGED, "nothing here", "stop").detail
    assert "text follows" in parse_completion(TAGGED, "<score>3</score> x", "stop").detail
    assert "'6'" in parse_completion(TAGGED, "<score>6</score>", "stop").detail


# --------------------------------------------------------------------------------------------
# score_only
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, score", [
    ("1", 1),
    ("2", 2),
    ("3", 3),
    ("4", 4),
    ("5", 5),
    (" 4\n", 4),
    ("\n\n5\n\n", 5),
    ("\t1 ", 1),
    ("<think>Probably 5? No.</think>\n3\n", 3),
])
def test_score_only_ok(text, score):
    result = parse_completion(SCORE_ONLY, text, "stop")
    assert result == DECODED(score)
    assert type(result.score) is int


@pytest.mark.parametrize("text", [
    "",
    "   ",
    "\n",
    "4.",
    "4.0",
    "Score: 4",
    "44",
    "6",
    "0",
    "-1",
    "+4",
    "four",
    "4/5",
    "4 5",
    "<score>4</score>",
    "N",
    "4\nbecause",
])
def test_score_only_unparseable(text):
    result = parse_completion(SCORE_ONLY, text, "stop")
    assert result.status is Status.UNPARSEABLE
    assert result.score is None
    assert result.detail


def test_score_only_empty_detail():
    assert parse_completion(SCORE_ONLY, "  \n", "stop").detail == "empty answer"


# --------------------------------------------------------------------------------------------
# <think> handling
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("parser, text, expected", [
    # only the text after the LAST </think> counts
    (TAGGED, "<think>I'd say <score>5</score></think>\n<score>2</score>", DECODED(2)),
    (TAGGED, "<think>a</think><think>b <score>5</score></think> <score>3</score>", DECODED(3)),
    (SCORE_ONLY, "<think>a</think>x<think>b</think>4", DECODED(4)),
    # a closing tag without an opening one (the chat template put <think> in the prompt)
    (TAGGED, "reasoning... <score>5</score></think><score>1</score>", DECODED(1)),
    (SCORE_ONLY, "reasoning 5 or 4</think>\n4", DECODED(4)),
])
def test_think_ok(parser, text, expected):
    assert parse_completion(parser, text, "stop") == expected


@pytest.mark.parametrize("parser, text", [
    # the score lives only inside the thinking: the answer part has none
    (TAGGED, "<think>the answer is <score>4</score></think>"),
    (TAGGED, "<think>the answer is <score>4</score></think>\n\n"),
    (SCORE_ONLY, "<think>4</think>"),
    (TAGGED, "<score>4</score></think>not a score"),
    # opened and never closed
    (TAGGED, "<think>I think it is <score>4</score>"),
    (TAGGED, "<think>"),
    (SCORE_ONLY, "<think>4"),
    (SCORE_ONLY, "<think>\n4\n"),
    (TAGGED, "<score>4</score><think>"),
])
def test_think_unparseable(parser, text):
    result = parse_completion(parser, text, "stop")
    assert result.status is Status.UNPARSEABLE
    assert result.score is None


def test_unclosed_think_detail():
    result = parse_completion(SCORE_ONLY, "<think>4", "stop")
    assert "never closed" in result.detail


@pytest.mark.parametrize("parser, text", [
    (TAGGED, "<think>a</think><think>still thinking <score>3</score>"),
    (TAGGED, "<think>plan</think>\n<think>\nmaybe <score>4</score>\n"),
])
def test_reopened_unclosed_think_is_unparseable(parser, text):
    result = parse_completion(parser, text, "stop")
    assert result.status is Status.UNPARSEABLE
    assert result.score is None


# --------------------------------------------------------------------------------------------
# Unicode digits: one ASCII digit 1..5 only
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("parser, text", [
    (TAGGED, "<score>²</score>"),
    (SCORE_ONLY, "³"),
])
def test_superscript_digit_does_not_crash(parser, text):
    result = parse_completion(parser, text, "stop")
    assert result.status is Status.UNPARSEABLE
    assert result.score is None


@pytest.mark.parametrize("parser, text", [
    (TAGGED, "<score>٤</score>"),
    (SCORE_ONLY, "４"),
])
def test_non_ascii_digit_is_unparseable(parser, text):
    result = parse_completion(parser, text, "stop")
    assert result.status is Status.UNPARSEABLE


# --------------------------------------------------------------------------------------------
# Invariant over a mixed table: only OK carries a score
# --------------------------------------------------------------------------------------------

@BOTH
@pytest.mark.parametrize("text, finish_reason, error", [
    ("<score>3</score>", "stop", ""),
    ("3", "stop", ""),
    ("<score>3</score>", "length", ""),
    ("3", "length", ""),
    ("<score>3</score>", "stop", "boom"),
    ("3", "stop", "boom"),
    ("", "stop", ""),
    ("<think>3", "stop", ""),
    ("<score>7</score>", "stop", ""),
    ("7", "stop", ""),
])
def test_only_ok_carries_a_score(parser, text, finish_reason, error):
    result = parse_completion(parser, text, finish_reason, error)
    assert_invariant(result)


@pytest.mark.parametrize("parser, answer, expected", [
    (TAGGED, "<score>4</score>", Parsed(Status.OK, 4)),
    (SCORE_ONLY, "4", Parsed(Status.OK, 4)),
    # parse_answer sees the answer only: it does not strip thinking itself
    (SCORE_ONLY, "<think>x</think>4", None),
])
def test_parse_answer_directly(parser, answer, expected):
    result = parser.parse_answer(answer)
    if expected is None:
        assert result.status is Status.UNPARSEABLE
    else:
        assert result == expected


# --------------------------------------------------------------------------------------------
# logprob scoring
# --------------------------------------------------------------------------------------------

def logprobs(**probs: float) -> tuple[tuple[str, float], ...]:
    return tuple((token.replace("_", " "), math.log(p)) for token, p in probs.items())


def test_distribution_renormalises_and_sums_spacing_variants():
    dist = score_distribution((("4", math.log(0.4)), (" 4", math.log(0.2)), ("5", math.log(0.2)), ("The", math.log(0.2))))
    assert dist.mass == pytest.approx(0.8)
    assert dist.probs == pytest.approx((0, 0, 0, 0.75, 0.25))
    assert dist.expected == pytest.approx(4.25)
    assert dist.entropy == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert dist.argmax == 4


def test_distribution_ties_go_low_and_no_score_token_is_none():
    assert score_distribution((("2", math.log(0.5)), ("3", math.log(0.5)))).argmax == 2
    assert score_distribution((("The", -0.1), ("6", -2.0), ("²", -3.0))) is None


def test_logprobs_give_the_score_even_when_decoding_stopped_at_max_tokens():
    alternatives = (("3", math.log(0.5)), ("4", math.log(0.3)), ("x", math.log(0.2)))
    parsed = parse_completion(SCORE_ONLY, "3", "length", top_logprobs=alternatives)
    assert (parsed.status, parsed.score, parsed.method) == (Status.OK, 3, "logprobs")
    assert parsed.distribution.expected == pytest.approx((3 * 0.5 + 4 * 0.3) / 0.8)


def test_too_little_mass_on_scores_falls_back_to_the_decoded_text():
    low = (("The", math.log(0.7)), ("4", math.log(0.3)))
    decoded = parse_completion(SCORE_ONLY, "4", "stop", top_logprobs=low)
    assert (decoded.status, decoded.score, decoded.method) == (Status.OK, 4, "decoded")
    assert decoded.distribution.mass == pytest.approx(0.3)  # kept for calibration all the same
    failed = parse_completion(SCORE_ONLY, "The", "length", top_logprobs=low)
    assert failed.status is Status.TRUNCATED and failed.score is None
    assert "score tokens held 30%" in failed.detail


def tokens_of(*pieces: str, at: str | None = None, alternatives=(("5", 0.0),)) -> list:
    """Per-token (text, alternatives): `alternatives` at the piece equal to `at`, a marker elsewhere."""
    return [(piece, alternatives if piece == at else (("elsewhere", 0.0),)) for piece in pieces]


@pytest.mark.parametrize("parser, pieces, at", [
    (SCORE_ONLY, ["3"], "3"),
    (SCORE_ONLY, [" ", "\n", " 4", "."], " 4"),  # the first token the answer's first character is in
    (SCORE_ONLY, ["<think>", "rate 2", "</think>", "\n", "5"], "5"),  # a thinking model, read after </think>
    (TAGGED, ["Step 1", " then 2", ". <score>", "4", "</score>"], "4"),  # not the digits of the rationale
    (TAGGED, ["<score>", "1", "</score>", " no, ", "<score>", " 3", "</score>", "\n"], " 3"),  # the final tag
    (TAGGED, ["<think>", "<score>2</score>", "</think>", "ok <sco", "re>", "5</score>"], "5</score>"),  # pieces split the tag
])
def test_the_alternatives_read_are_those_where_the_score_digit_was_generated(parser, pieces, at):
    assert score_alternatives(parser, tokens_of(*pieces, at=at)) == (("5", 0.0),)


@pytest.mark.parametrize("parser, pieces", [
    (SCORE_ONLY, []),
    (SCORE_ONLY, [" ", "\n"]),
    (SCORE_ONLY, ["<think>", "maybe 3"]),  # still thinking: there is no answer yet
    (TAGGED, ["It needs two steps, so 2."]),
    (TAGGED, ["<score>", "2", "</score>", " (I think)"]),  # text after the final tag breaks the format
])
def test_no_alternatives_where_the_answer_has_no_score_position(parser, pieces):
    assert score_alternatives(parser, tokens_of(*pieces)) == ()


def test_a_tagged_answer_is_scored_from_the_distribution_at_its_score_tag():
    alternatives = (("4", math.log(0.6)), ("3", math.log(0.3)), ("x", math.log(0.1)))
    parsed = parse_completion(TAGGED, "Two steps. <score>4</score>", "stop", top_logprobs=alternatives)
    assert (parsed.status, parsed.score, parsed.method) == (Status.OK, 4, "logprobs")
    assert parsed.distribution.expected == pytest.approx((4 * 0.6 + 3 * 0.3) / 0.9)


# --------------------------------------------------------------------------------------------
# constrained runs: the first answer token was restricted to the score tokens
# --------------------------------------------------------------------------------------------

LOW_MASS = (("To", math.log(0.9)), ("2", math.log(0.01)), ("4", math.log(0.03)))


def test_a_constrained_greedy_answer_is_the_argmax_whatever_mass_the_scores_held():
    parsed = parse_completion(SCORE_ONLY, "4", "length", top_logprobs=LOW_MASS, constrained=True)
    assert (parsed.status, parsed.score, parsed.method) == (Status.OK, 4, "constrained")
    assert parsed.distribution.mass == pytest.approx(0.04)
    assert parsed.distribution.probs[1] == pytest.approx(0.25)


def test_a_constrained_sample_scores_the_token_it_drew():
    parsed = parse_completion(SCORE_ONLY, "2", "length", top_logprobs=LOW_MASS, sampled=True, constrained=True)
    assert (parsed.status, parsed.score, parsed.method) == (Status.OK, 2, "constrained")


def test_a_constrained_answer_without_score_tokens_among_the_alternatives_is_its_token():
    parsed = parse_completion(SCORE_ONLY, "3", "length", top_logprobs=(("To", -0.1),), constrained=True)
    assert (parsed.status, parsed.score, parsed.method, parsed.distribution) == (Status.OK, 3, "constrained", None)


def test_a_backend_that_ignored_the_constraint_is_not_scored():
    parsed = parse_completion(SCORE_ONLY, "To", "length", top_logprobs=(("To", -0.1),), constrained=True)
    assert parsed.status is Status.TRUNCATED and parsed.score is None
    assert "backend returned another" in parsed.detail


# --------------------------------------------------------------------------------------------
# sampled runs: each sample's score is the answer it drew, the distribution only describes it
# --------------------------------------------------------------------------------------------

SPREAD = (("3", math.log(0.5)), ("4", math.log(0.3)), ("x", math.log(0.2)))


@pytest.mark.parametrize("text, finish_reason, expected", [
    ("4", "stop", (Status.OK, 4, "decoded")),
    ("4", "length", (Status.OK, 4, "decoded")),  # --max-tokens 1 cuts every answer right after its digit
    (" 2\n", "stop", (Status.OK, 2, "decoded")),
    ("<think>maybe 3</think>5", "stop", (Status.OK, 5, "decoded")),
    ("x", "stop", (Status.UNPARSEABLE, None, "")),
    ("x", "length", (Status.TRUNCATED, None, "")),
    ("", "length", (Status.TRUNCATED, None, "")),
    ("<think>3", "length", (Status.TRUNCATED, None, "")),
])
def test_a_sampled_judgment_scores_what_it_drew(text, finish_reason, expected):
    parsed = parse_completion(SCORE_ONLY, text, finish_reason, top_logprobs=SPREAD, sampled=True)
    assert (parsed.status, parsed.score, parsed.method) == expected
    assert_invariant(parsed)
    assert parsed.distribution.expected == pytest.approx((3 * 0.5 + 4 * 0.3) / 0.8)  # kept all the same
    assert parsed.distribution.mass == pytest.approx(0.8)


def test_greedy_judgments_keep_the_argmax():
    assert parse_completion(SCORE_ONLY, "4", "stop", top_logprobs=SPREAD).method == "logprobs"
    assert parse_completion(SCORE_ONLY, "4", "stop", top_logprobs=SPREAD).score == 3
    assert parse_completion(SCORE_ONLY, "4", "stop", top_logprobs=SPREAD, sampled=False).score == 3


def test_sampling_changes_nothing_without_logprobs_or_for_errors():
    assert parse_completion(SCORE_ONLY, "4", "length", sampled=True).status is Status.TRUNCATED
    assert parse_completion(SCORE_ONLY, "4", "stop", sampled=True) == DECODED(4)
    tagged = parse_completion(TAGGED, "<score>2</score>", "stop", top_logprobs=SPREAD, sampled=True)
    assert tagged == DECODED(2)._replace(distribution=score_distribution(SPREAD))  # what it drew, not the argmax 3
    failed = parse_completion(SCORE_ONLY, "", "", "HTTP 500", top_logprobs=SPREAD, sampled=True)
    assert failed == Parsed(Status.ERROR, None, "HTTP 500")
