"""The OpenAI-compatible backend against a scripted endpoint that injects faults: exact counts."""

import time

import pytest
from conftest import write_jsonl

import curate
from curate.config import ScoreConfig
from curate.engine import score
from curate.errors import BackendError
from curate.testing import FakeOpenAIServer

ITEMS = 150
FAULTS = {"rate_limit": 0.06, "server_error": 0.06, "drop": 0.05, "hang": 0.03, "truncate": 0.05, "unparseable": 0.05}


def config(tmp_path, server, **overrides) -> ScoreConfig:
    data = write_jsonl(tmp_path / "data.jsonl", [{"id": f"q{i}", "question": f"Problem {i}?"} for i in range(ITEMS)])
    return ScoreConfig.from_flat({
        "source": str(data), "out": str(tmp_path / "run"), "backend": "openai", "base_url": server.base_url,
        "model": "judge", "template": "difficulty/intensity", "samples": 2, "temperature": 1.0,
        "request_timeout": 1.0, "max_failure_fraction": 1.0, **overrides})


def test_every_fault_ends_scored_or_explicit_with_exact_counts(tmp_path):
    with FakeOpenAIServer(latency=0.005, faults=FAULTS, retry_after=0.2, hang_seconds=3) as server:
        result = score(config(tmp_path, server))
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
    assert result.summary["score_methods"] == {"logprobs": 20, "decoded": 0}
    judgments = curate.load_judgments(tmp_path / "run")
    assert judgments["score_mass"].to_list() == pytest.approx([0.9] * 20)
    for top, expected in zip(judgments["score"], judgments["expected_score"], strict=True):
        neighbour = top % 5 + 1  # the server puts 0.7 on the score, 0.2 on this one, 0.1 elsewhere
        assert expected == pytest.approx((0.7 * top + 0.2 * neighbour) / 0.9)


def test_completions_endpoint_renders_the_prompt_with_the_tokenizer(tmp_path, random_model):
    from transformers import AutoTokenizer

    with FakeOpenAIServer(answer_format="digit") as server:
        result = score(config(tmp_path, server, endpoint="completions", tokenizer=str(random_model),
                              template="difficulty/intensity_score_only", samples=1, temperature=0.0,
                              top_logprobs=3, max_tokens=1, limit=6))
    assert result.summary["score_methods"] == {"logprobs": 6, "decoded": 0}
    prompts = [json_body["prompt"] for json_body in server.bodies]
    tokenizer = AutoTokenizer.from_pretrained(random_model)
    assert all(p.startswith("<|im_start|>system\n") and p.endswith("<|im_start|>assistant\n") for p in prompts)
    messages = curate.engine.load_template("difficulty/intensity_score_only").render({"id": "q0", "question": "Problem 0?"})
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) in prompts
