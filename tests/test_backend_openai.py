"""The OpenAI-compatible backend against a scripted endpoint that injects faults: exact counts."""

import time

import pytest
import polars as pl
from conftest import assert_one_line_error, invoke, write_jsonl

import curate
from curate.backends.openai_answer import (
    MalformedAnswer, RetryableError, completions, read_answer, retry_after_seconds, server_message,
)
from curate.config import RunConfig
from curate.engine import score
from curate.errors import BackendError
from curate.testing import FakeOpenAIServer

ITEMS = 150
FAULTS = {"rate_limit": 0.06, "server_error": 0.06, "drop": 0.05, "hang": 0.03, "truncate": 0.05, "unparseable": 0.05}


def config(tmp_path, server, **overrides) -> RunConfig:
    data = write_jsonl(tmp_path / "data.jsonl", [{"id": f"q{i}", "question": f"Problem {i}?"} for i in range(ITEMS)])
    return RunConfig.from_flat({
        "source": str(data), "out": str(tmp_path / "run"), "backend": "openai", "base_url": server.base_url,
        "model": "judge", "template": "difficulty/intensity", "samples": 2, "temperature": 1.0,
        "request_timeout": 1.0, "max_failure_fraction": 1.0, **overrides})


def test_every_fault_ends_scored_or_explicit_with_exact_counts(tmp_path):
    # A timeout of 1 s was sometimes reached by answers slowed by a loaded machine, which were then asked twice.
    with FakeOpenAIServer(latency=0.005, faults=FAULTS, retry_after=0.2, hang_seconds=8) as server:
        result = score(config(tmp_path, server, request_timeout=3.0))
    keys = list(server.attempts)
    assert len(keys) == 2 * ITEMS  # one prompt key per (item, sample): seeds differ per sample
    expected = {"ok": 0, "unparseable": 0, "truncated": 0, "error": 0}
    for key in keys:
        status = "truncated" if server.hits("truncate", key) else \
            "unparseable" if server.hits("unparseable", key) else "ok"
        expected[status] += 1
        transport_fault = any(server.hits(f, key) for f in ("rate_limit", "server_error", "drop", "hang"))
        assert server.attempts[key] == 1 + transport_fault
    assert result.summary["status_counts"] == expected
    assert sum(expected.values()) == result.requested == result.summary["judgments"] == 2 * ITEMS
    assert expected["truncated"] > 0 and expected["unparseable"] > 0
    judgments = curate.load_judgments(tmp_path / "run")
    scores = dict(zip(judgments["raw_text"], judgments["score"], strict=False))
    assert all(scores[t] == int(t[-9]) for t in scores if t.endswith("</score>"))


def test_retry_after_is_waited_for(tmp_path):
    with FakeOpenAIServer(faults={"rate_limit": 1.0}, retry_after=0.6) as server:
        result = score(config(tmp_path, server, samples=1, temperature=0.0, limit=5))
    assert result.summary["status_counts"]["ok"] == 5
    gaps = [times[1] - times[0] for times in server.arrivals.values()]
    assert len(gaps) == 5 and min(gaps) >= 0.6


def test_persistent_failures_become_errors_after_the_last_retry(tmp_path):
    with FakeOpenAIServer(faults={"server_error": 0.2}, fail_attempts=100) as server:
        result = score(config(tmp_path, server, max_retries=2, limit=40, samples=1, temperature=0.0))
    failing = [k for k in server.attempts if server.hits("server_error", k)]
    assert failing and all(server.attempts[k] == 3 for k in failing)
    assert result.summary["status_counts"]["error"] == len(failing)
    judgments = curate.load_judgments(tmp_path / "run")
    errors = judgments.filter(judgments["status"] == "error")
    assert errors["detail"].str.starts_with("gave up after 3 attempt(s): HTTP 500: ").all()


def test_api_key_is_sent_but_never_written(tmp_path, monkeypatch):
    secret = "sk-test-DO-NOT-STORE-4f1c9a"
    monkeypatch.setenv("JUDGE_KEY", secret)
    with FakeOpenAIServer(require_key=secret) as server:
        result = score(config(tmp_path, server, api_key_env="JUDGE_KEY", limit=10, samples=1, temperature=0.0))
    assert result.summary["status_counts"]["ok"] == 10
    assert all(h["Authorization"] == f"Bearer {secret}" for h in server.seen_headers)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert len(files) >= 6
    assert not [p.name for p in files if secret.encode() in p.read_bytes()]


def test_wrong_key_stops_the_run_early(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "wrong")
    with FakeOpenAIServer(require_key="right") as server:
        with pytest.raises(BackendError, match="HTTP 401"):
            score(config(tmp_path, server, api_key_env="JUDGE_KEY", max_in_flight=4))
    assert len(server.seen_headers) < 20  # stopped, not 300 doomed requests


def test_a_key_the_server_echoes_is_neither_stored_nor_printed(tmp_path, monkeypatch):
    secret = "sk-proj-ECHOED-7d2e91b4c0"
    monkeypatch.setenv("JUDGE_KEY", secret)
    with FakeOpenAIServer(faults={"echo_key": 0.5}) as server:
        result = score(config(tmp_path, server, api_key_env="JUDGE_KEY", limit=20, samples=1, temperature=0.0,
                              max_failure_fraction=1.0))
    errors = curate.load_judgments(tmp_path / "run").filter(pl.col("status") == "error")
    assert errors.height == result.summary["status_counts"]["error"] > 0
    assert errors["detail"].str.ends_with("your key was Bearer [redacted]").all()
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert not [p.name for p in files if secret.encode() in p.read_bytes()]
    with FakeOpenAIServer(require_key="sk-the-right-one") as server:  # 401 in OpenAI's words, quoting the key
        printed = invoke("score", tmp_path / "data.jsonl", "--backend", "openai", "--base-url", server.base_url,
                         "--model", "judge", "--api-key-env", "JUDGE_KEY", "--out", tmp_path / "other")
    assert_one_line_error(printed, "HTTP 401: Incorrect API key provided: [redacted]")
    assert secret not in printed.output + printed.stderr


@pytest.mark.parametrize("flag", ["--base-url", "--verify-base-url"])
def test_credentials_in_a_url_are_refused_before_anything_is_written(tmp_path, flag):
    url = "http://user:hunter2-PASSWORD@127.0.0.1:9/v1"
    args = ["solve", tmp_path / "data.jsonl", "--backend", "openai", "--model", "m", "--out", tmp_path / "run",
            "--verify", "model", "--verify-model", "judge", "--base-url", "http://127.0.0.1:9/v1", flag, url]
    write_jsonl(tmp_path / "data.jsonl", [{"question": "What is 1 + 2?", "answer": "3"}])
    result = invoke(*args)
    assert_one_line_error(result, f"{flag} http://[redacted]@127.0.0.1:9/v1 carries credentials")
    assert "hunter2" not in result.output + result.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("honour_n", [True, False])
def test_use_n_falls_back_to_seeded_requests(tmp_path, honour_n):
    with FakeOpenAIServer(honour_n=honour_n) as server:
        result = score(config(tmp_path, server, use_n=True, samples=3, limit=10))
    assert result.summary["judgments"] == 30 and result.summary["status_counts"]["ok"] == 30
    assert sum(server.attempts.values()) == (10 if honour_n else 30)


def test_requests_per_minute_limit_paces_requests(tmp_path):
    with FakeOpenAIServer() as server:
        start = time.monotonic()
        score(config(tmp_path, server, limit=6, samples=1, temperature=0.0, requests_per_minute=120))
        elapsed = time.monotonic() - start
    arrivals = sorted(t for times in server.arrivals.values() for t in times)
    # a burst of rpm/60 = 2, then 2 a second: the last of 6 arrives about 2 s after the first
    assert len(arrivals) == 6 and arrivals[-1] - arrivals[0] >= 1.5 and elapsed < 10


def test_logprob_scoring_over_chat_completions(tmp_path):
    with FakeOpenAIServer(answer_format="digit") as server:
        result = score(config(tmp_path, server, template="difficulty/intensity_score_only", samples=1,
                              temperature=0.0, top_logprobs=5, max_tokens=1, limit=20))
    assert result.summary["score_methods"] == {"logprobs": 20, "constrained": 0, "decoded": 0}
    judgments = curate.load_judgments(tmp_path / "run")
    assert judgments["score_mass"].to_list() == pytest.approx([0.9] * 20)
    for top, expected in zip(judgments["score"], judgments["expected_score"], strict=True):
        neighbour = top % 5 + 1  # the server puts 0.7 on the score, 0.2 on this one, 0.1 elsewhere
        assert expected == pytest.approx((0.7 * top + 0.2 * neighbour) / 0.9)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_a_rationale_is_scored_from_the_logprobs_inside_its_final_score_tag(tmp_path, random_model, endpoint):
    """The fake's answer is "Needs k steps. <score>k</score>": its first digit is certain of itself, the one in
    the tag spread over k and a neighbour, so the expected score tells which position was read."""
    tokenizer = {"endpoint": "completions", "tokenizer": str(random_model)} if endpoint == "completions" else {}
    with FakeOpenAIServer() as server:
        result = score(config(tmp_path, server, samples=1, temperature=0.0, top_logprobs=3, limit=12, **tokenizer))
    assert result.summary["score_methods"] == {"logprobs": 12, "constrained": 0, "decoded": 0}
    judgments = curate.load_judgments(tmp_path / "run")
    for top, expected in zip(judgments["score"], judgments["expected_score"], strict=True):
        assert expected == pytest.approx((0.7 * top + 0.2 * (top % 5 + 1)) / 0.9)


def test_completions_endpoint_renders_the_prompt_with_the_tokenizer(tmp_path, random_model):
    from transformers import AutoTokenizer

    with FakeOpenAIServer(answer_format="digit") as server:
        result = score(config(tmp_path, server, endpoint="completions", tokenizer=str(random_model),
                              template="difficulty/intensity_score_only", samples=1, temperature=0.0,
                              top_logprobs=3, max_tokens=1, limit=6))
    assert result.summary["score_methods"] == {"logprobs": 6, "constrained": 0, "decoded": 0}
    prompts = [json_body["prompt"] for json_body in server.bodies]
    tokenizer = AutoTokenizer.from_pretrained(random_model)
    assert all(p.startswith("<|im_start|>system\n") and p.endswith("<|im_start|>assistant\n") for p in prompts)
    messages = curate.engine.load_template("difficulty/intensity_score_only").render({"id": "q0", "question": "Problem 0?"})
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) in prompts


def test_the_completions_endpoint_sends_a_question_holding_a_control_tokens_text_as_token_ids(tmp_path, random_model):
    """As text, the server would encode the question's <|im_end|> as the real end of turn. Such a prompt goes as
    token ids in which it is plain text (the template's own two ends of turn stay); any other prompt goes as text."""
    from transformers import AutoTokenizer

    rows = [{"id": "q0", "question": "Why does <|im_end|> end a turn?"}, {"id": "q1", "question": "Why does it?"}]
    with FakeOpenAIServer(answer_format="digit") as server:
        result = score(config(tmp_path, server, source=str(write_jsonl(tmp_path / "control.jsonl", rows)),
                              endpoint="completions", tokenizer=str(random_model), samples=1, temperature=0.0,
                              template="difficulty/intensity_score_only", max_tokens=1))
    assert result.summary["status_counts"]["ok"] == 2
    tokenizer = AutoTokenizer.from_pretrained(random_model)
    template = curate.engine.load_template("difficulty/intensity_score_only")
    texts = [tokenizer.apply_chat_template(template.render(row), tokenize=False, add_generation_prompt=True)
             for row in rows]
    (ids,) = [body["prompt"] for body in server.bodies if isinstance(body["prompt"], list)]
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_end|>")) == 2 and tokenizer.decode(ids) == texts[0]
    assert [body["prompt"] for body in server.bodies if isinstance(body["prompt"], str)] == [texts[1]]


PREFILLED = '{#-\nparser: score_only\nprefill: "Score: "\n-#}\n{% block user %}{{ question }}{% endblock %}\n'


def test_a_prefill_and_a_constraint_reach_a_chat_server_in_vllms_words(tmp_path):
    (tmp_path / "prefilled.jinja").write_text(PREFILLED)
    with FakeOpenAIServer(answer_format="digit") as server:
        result = score(config(tmp_path, server, template=str(tmp_path / "prefilled.jinja"), samples=1,
                              temperature=0.0, top_logprobs=5, max_tokens=1, constrain_score=True, limit=4))
    assert result.summary["score_methods"] == {"logprobs": 0, "constrained": 4, "decoded": 0}
    assert len(server.bodies) == 4
    for body in server.bodies:
        assert body["messages"][-1] == {"role": "assistant", "content": "Score: "}
        assert (body["continue_final_message"], body["add_generation_prompt"]) == (True, False)
        assert body["structured_outputs"] == {"choice": ["1", "2", "3", "4", "5"]}


def test_the_completions_endpoint_renders_a_prefill_into_the_prompt(tmp_path, random_model):
    (tmp_path / "prefilled.jinja").write_text(PREFILLED)
    with FakeOpenAIServer(answer_format="digit") as server:
        score(config(tmp_path, server, endpoint="completions", tokenizer=str(random_model), samples=1,
                     template=str(tmp_path / "prefilled.jinja"), temperature=0.0, top_logprobs=3, max_tokens=1,
                     limit=2))
    for body in server.bodies:
        assert body["prompt"].endswith("<|im_start|>assistant\nScore: ") and "continue_final_message" not in body


# --- answers a server should not send, through the real HTTP path --------------------------------

def one_sample(tmp_path, server, **overrides) -> RunConfig:
    return config(tmp_path, server, samples=1, temperature=0.0, limit=4, max_retries=2, **overrides)


@pytest.mark.parametrize("fault, detail", [
    ("empty_choices", "a 200 answer with no choices"),
    ("not_an_object", "a 200 answer that is a JSON array, not an object"),
    ("undecodable_error", "HTTP 500: upstream \ufffd\ufffd failed"),
])
def test_a_malformed_answer_is_retried_and_then_an_error_row(tmp_path, fault, detail):
    (tmp_path / "persistent").mkdir(), (tmp_path / "transient").mkdir()
    with FakeOpenAIServer(faults={fault: 1.0}, fail_attempts=100) as server:
        result = score(one_sample(tmp_path / "persistent", server))
    assert list(server.attempts.values()) == [3] * 4  # bounded by --max-retries 2, never a loop
    assert result.summary["status_counts"]["error"] == 4
    judgments = curate.load_judgments(tmp_path / "persistent" / "run")
    assert judgments["detail"].to_list() == [f"gave up after 3 attempt(s): {detail}"] * 4
    with FakeOpenAIServer(faults={fault: 1.0}) as server:  # only the first attempt fails
        result = score(one_sample(tmp_path / "transient", server))
    assert list(server.attempts.values()) == [2] * 4 and result.summary["status_counts"]["ok"] == 4


@pytest.mark.parametrize("fault, status, detail", [
    ("no_message", "error", "malformed answer: the choice has no message object"),
    ("null_content", "unparseable", "no <score>…</score> tag in the answer"),
    ("no_finish_reason", "error", "the answer has no finish_reason, so a complete answer cannot be told from one "
                                  "cut at max_tokens"),
    ("content_filter", "error", "the server ended the answer with finish_reason 'content_filter'"),
    ("no_usage", "ok", ""),
    ("context_exceeded", "error", "HTTP 400: This model's maximum context length is 2048 tokens. However, you "
                                  "requested 9606 tokens (9094 in the messages, 512 in the completion). Please "
                                  "reduce the length of the messages or completion."),
])
def test_an_odd_answer_ends_as_an_explicit_row_without_retries(tmp_path, fault, status, detail):
    with FakeOpenAIServer(faults={fault: 1.0}) as server:
        score(one_sample(tmp_path, server))
    assert list(server.attempts.values()) == [1] * 4  # the same server would answer the same way again
    judgments = curate.load_judgments(tmp_path / "run")
    assert judgments["status"].to_list() == [status] * 4 and judgments["detail"].to_list() == [detail] * 4
    assert judgments["completion_tokens"].to_list() == [0 if fault in ("no_usage", "context_exceeded") else 5] * 4


def test_logprobs_of_the_wrong_shape_end_as_error_rows(tmp_path):
    with FakeOpenAIServer(faults={"bad_logprobs": 1.0}, answer_format="digit") as server:
        score(one_sample(tmp_path, server, template="difficulty/intensity_score_only", top_logprobs=5, max_tokens=1))
    judgments = curate.load_judgments(tmp_path / "run")
    assert judgments["status"].to_list() == ["error"] * 4
    assert judgments["detail"].str.starts_with("malformed answer: logprobs.content holds [").all()


# --- reading an answer's body, shape by shape ---------------------------------------------------

@pytest.mark.parametrize("body, message", [
    (b"[]", "a 200 answer that is a JSON array, not an object"),
    (b'"x"', "a 200 answer that is a JSON string, not an object"),
    (b"null", "a 200 answer that is a JSON null, not an object"),
    (b'{"choices": []}', "a 200 answer with no choices"),
    (b'{"choices": null}', "a 200 answer with no choices"),
    (b'{"error": {"message": "model\\n overloaded"}}', "a 200 answer with no choices: model overloaded"),
    (b'{"choi', "a 200 answer that is not JSON (6 bytes)"),
    (b"\xff\xfe{", "a 200 answer that is not JSON (3 bytes)"),
])
def test_an_unusable_answer_is_retryable_and_says_what_it_is(body, message):
    with pytest.raises(MalformedAnswer) as raised:
        read_answer(body)
    assert str(raised.value) == message and isinstance(raised.value, RetryableError)


def choice(**fields) -> dict:
    return {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "<score>3</score>"},
            **fields}


@pytest.mark.parametrize("raw, expected", [
    (choice(), ("<score>3</score>", "stop", "")),
    (choice(finish_reason="eos_token"), ("<score>3</score>", "stop", "")),  # TGI's word for stop
    (choice(message={"role": "assistant", "content": None}, finish_reason="length"), ("", "length", "")),
    (choice(message={"content": ["<score>", "3"]}), ("", "", "malformed answer: message.content is a JSON array, "
                                                            "not a string")),
    (choice(message="<score>3</score>"), ("", "", "malformed answer: the choice has no message object")),
    ("<score>3</score>", ("", "", "malformed answer: the choice is a JSON string, not an object")),
    (choice(finish_reason="tool_calls"), ("<score>3</score>", "", "the server ended the answer with "
                                                                  "finish_reason 'tool_calls'")),
    (choice(logprobs={"content": None}), ("<score>3</score>", "stop", "")),
    (choice(logprobs=[]), ("", "", "malformed answer: logprobs is a JSON array, not an object")),
    (choice(logprobs={"content": [{"token": "3"}]}), ("<score>3</score>", "stop", "")),
    (choice(logprobs={"content": "3"}), ("", "", "malformed answer: logprobs.content is a JSON string, not an "
                                                 "array")),
    (choice(logprobs={"content": [{"token": "3", "top_logprobs": [{"token": "3", "logprob": None}]}]}),
     ("", "", 'malformed answer: logprobs.content holds ["3", null], not a token and its logprob')),
    (choice(logprobs={"content": [{"top_logprobs": []}]}),
     ("", "", "malformed answer: logprobs.content[0] has token null, not a string")),
])
def test_each_chat_choice_is_a_completion_or_an_explicit_error(raw, expected):
    (completion,) = completions({"choices": [raw]}, "q1", (0,), chat=True)
    assert (completion.text, completion.finish_reason, completion.error) == expected


def test_choices_come_in_index_order_with_usage_shared_and_missing_counts_zero():
    answer = {"choices": [choice(index=1, message={"content": "b"}), choice(index=0, message={"content": "a"}),
                          choice(index="2", message={"content": "c"})],
              "usage": {"prompt_tokens": 12, "completion_tokens": 9}}
    texts = [(c.sample_idx, c.text, c.prompt_tokens, c.completion_tokens)
             for c in completions(answer, "q1", (4, 5, 6), chat=True)]
    assert texts == [(4, "a", 12, 3), (5, "c", 12, 3), (6, "b", 12, 3)]  # a choice without an int index sorts as 0
    for usage in (None, [], {"prompt_tokens": None, "completion_tokens": "5"}, {"prompt_tokens": True}):
        (only,) = completions({"choices": [choice()], "usage": usage}, "q1", (0,), chat=True)
        assert (only.prompt_tokens, only.completion_tokens, only.error) == (0, 0, "")


@pytest.mark.parametrize("logprobs, expected", [
    ({"tokens": ["3"], "top_logprobs": [{"3": -0.1, " 4": -2.5}]}, (("3", (("3", -0.1), (" 4", -2.5))),)),
    ({"tokens": ["<", "3"], "top_logprobs": [{"<": -0.2}, {"3": -0.1}]}, (("<", (("<", -0.2),)), ("3", (("3", -0.1),)))),
    ({"tokens": ["3"], "top_logprobs": [None]}, (("3", ()),)),
    ({"top_logprobs": None}, ()),
    (None, ()),
])
def test_completions_endpoint_logprobs_per_token(logprobs, expected):
    (completion,) = completions({"choices": [{"text": "3", "finish_reason": "length", "logprobs": logprobs}]},
                                "q1", (0,), chat=False)
    assert (completion.text, completion.logprobs, completion.error) == ("3", expected, "")


def test_chat_logprobs_per_token():
    logprobs = {"content": [{"token": "<score>", "logprob": -0.01, "top_logprobs": [{"token": "<score>", "logprob": -0.01}]},
                            {"token": "4", "logprob": -0.3, "top_logprobs": [{"token": "4", "logprob": -0.3},
                                                                            {"token": "3", "logprob": -1.5}]}]}
    (completion,) = completions({"choices": [choice(logprobs=logprobs)]}, "q1", (0,), chat=True)
    assert completion.logprobs == (("<score>", (("<score>", -0.01),)), ("4", (("4", -0.3), ("3", -1.5))))


@pytest.mark.parametrize("logprobs, message", [
    ({"tokens": ["3", "4"], "top_logprobs": [{"3": -0.1}]}, "logprobs has 2 tokens but 1 top_logprobs entries"),
    ({"tokens": [3], "top_logprobs": [{"3": -0.1}]}, "logprobs.top_logprobs[0] has token 3, not a string"),
    ({"tokens": ["3"], "top_logprobs": [["3", -0.1]]}, "logprobs.top_logprobs[0] is a JSON array, not an object"),
])
def test_malformed_completions_logprobs_are_an_explicit_error(logprobs, message):
    (completion,) = completions({"choices": [{"text": "3", "finish_reason": "length", "logprobs": logprobs}]},
                                "q1", (0,), chat=False)
    assert completion.error == f"malformed answer: {message}"


@pytest.mark.parametrize("body, message", [
    (b'{"error": {"message": "prompt is too long", "code": 400}}', "prompt is too long"),
    (b'{"object": "error", "message": "max context\\n2048"}', "max context 2048"),
    (b'{"detail": "Not Found"}', "Not Found"),
    (b"<html>\n<b>Bad gateway</b></html>", "<html> <b>Bad gateway</b></html>"),
    (b"\xff upstream", "\ufffd upstream"),
    (b"x" * 2000, "x" * 500),
])
def test_an_error_body_becomes_one_line_of_the_servers_words(body, message):
    assert server_message(body) == message


@pytest.mark.parametrize("value, seconds", [
    ("2", 2.0), ("-3", 0.0), (None, None), ("", None), ("soon", None), ("inf", None), ("nan", None),
])
def test_retry_after_that_cannot_be_read_is_ignored(value, seconds):
    assert retry_after_seconds(value) == seconds
