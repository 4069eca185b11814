"""Several endpoints behind one openai backend: least-loaded dispatch, a failing endpoint backed off while the others
carry on, exact counts, and a run that resumes on other endpoints."""

import json
import socket
import threading
import time
from collections import Counter

import pytest
import yaml
from conftest import assert_one_line_error, invoke, write_jsonl

import curate
from curate.config import RunConfig
from curate.engine import score
from curate.testing import FakeOpenAIServer


def config(tmp_path, servers, items=40, **overrides) -> RunConfig:
    data = write_jsonl(tmp_path / "data.jsonl", [{"id": f"q{i}", "question": f"Problem {i}?"} for i in range(items)])
    return RunConfig.from_flat({
        "source": str(data), "out": str(tmp_path / "run"), "backend": "openai", "model": "judge",
        "base_url": [server if isinstance(server, str) else server.base_url for server in servers],
        "template": "difficulty/intensity", "request_timeout": 2.0, "max_failure_fraction": 0.0, **overrides})


def answered(*servers: FakeOpenAIServer) -> Counter:
    """Answers per prompt key over these servers (a fault-free server answers every request it takes)."""
    return sum((server.attempts for server in servers), Counter())


def assert_exact(result, tmp_path, judgments: int) -> None:
    assert result.summary["status_counts"] == {"ok": judgments, "unparseable": 0, "truncated": 0, "error": 0}
    assert result.summary["judgments"] == judgments
    stored = curate.load_judgments(tmp_path / "run")
    assert stored.height == judgments and (stored["status"] == "ok").all()


def dead_url() -> str:
    """A loopback port nothing listens on: every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/v1"


def test_each_request_goes_to_the_endpoint_with_the_fewest_in_flight(tmp_path):
    with FakeOpenAIServer(latency=0.4) as slow, FakeOpenAIServer(latency=0.01) as fast, \
            FakeOpenAIServer(latency=0.01) as other:
        result = score(config(tmp_path, [slow, fast, other], items=60, max_in_flight=6))
    assert_exact(result, tmp_path, 60)
    taken = [sum(server.attempts.values()) for server in (slow, fast, other)]
    assert sum(taken) == 60 and 0 < taken[0] < min(taken[1:]) / 2, taken


def test_ties_go_to_the_endpoint_given_first(tmp_path):
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        result = score(config(tmp_path, [first, second], items=10, max_in_flight=1))
    assert_exact(result, tmp_path, 10)
    assert sum(first.attempts.values()) == 10 and not second.attempts


BROKEN = {"always_500": {"server_error": 1.0}, "always_429": {"rate_limit": 1.0}, "refused": {}}


@pytest.mark.parametrize("failing", sorted(BROKEN))
def test_a_failing_endpoint_is_backed_off_while_the_others_carry_on(tmp_path, failing):
    broken = FakeOpenAIServer(faults=BROKEN[failing], fail_attempts=10**6, retry_after=30)
    with broken, FakeOpenAIServer(latency=0.01) as good, FakeOpenAIServer(latency=0.01) as other:
        started = time.monotonic()
        result = score(config(tmp_path, [broken if BROKEN[failing] else dead_url(), good, other], samples=2,
                              temperature=1.0, max_in_flight=8, max_retries=2))
        elapsed = time.monotonic() - started
    assert_exact(result, tmp_path, 80)
    assert set(answered(good, other).values()) == {1} and len(answered(good, other)) == 80  # nothing asked twice
    assert sum(broken.attempts.values()) < 20  # backed off: probed now and then, not sent a third of the requests
    assert elapsed < 10  # a failed request went to another endpoint at once, not after the 30 s Retry-After


def test_an_endpoint_stopped_mid_run_loses_and_duplicates_nothing(tmp_path):
    stopping = FakeOpenAIServer(latency=0.02).start()
    stopped_at: list[float] = []

    def stop_after_ten_answers() -> None:
        while len(stopping.log) < 10:
            time.sleep(0.005)
        stopping.stop()
        stopped_at.append(time.monotonic())

    stopper = threading.Thread(target=stop_after_ten_answers, daemon=True)
    stopper.start()
    with FakeOpenAIServer(latency=0.02) as staying:
        result = score(config(tmp_path, [stopping, staying], items=80, max_in_flight=8))
    stopper.join(10)
    assert_exact(result, tmp_path, 80)  # the store holds each judgment once, whichever server answered it
    assert 10 <= len(stopping.log) < 60 and any(arrival > stopped_at[0] for arrival, _ in staying.log)


def test_a_run_resumes_on_another_list_of_endpoints(tmp_path):
    with FakeOpenAIServer(faults={"server_error": 0.3}, fail_attempts=10**6) as first:
        begun = score(config(tmp_path, [first], max_retries=0, max_failure_fraction=1.0))
    failed = begun.summary["status_counts"]["error"]
    assert begun.requested == 40 and 0 < failed < 40
    with FakeOpenAIServer() as second, FakeOpenAIServer() as third:
        resumed = score(config(tmp_path, [second, third], retry_failed=True))
    assert resumed.requested == failed == sum(answered(second, third).values())
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    assert "base_url" not in manifest["identity"]
    assert_exact(resumed, tmp_path, 40)


def test_the_cli_takes_the_flag_repeated(tmp_path):
    write_jsonl(tmp_path / "data.jsonl", [{"question": f"Problem {i}?"} for i in range(20)])
    with FakeOpenAIServer(latency=0.05) as first, FakeOpenAIServer(latency=0.05) as second:
        result = invoke("score", tmp_path / "data.jsonl", "--backend", "openai", "--base-url", first.base_url,
                        "--base-url", second.base_url, "--model", "judge", "--template", "difficulty/intensity",
                        "--max-in-flight", "4", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output + result.stderr
    assert first.attempts and second.attempts and len(answered(first, second)) == 20
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["config"]["base_url"] == [first.base_url, second.base_url]
    assert "Repeatable." in invoke("score", "--help").output


@pytest.mark.parametrize(("second", "expected"), [
    ("http://user:hunter2-PASSWORD@127.0.0.1:9/v1", "--base-url http://[redacted]@127.0.0.1:9/v1 carries credentials"),
    ("http://127.0.0.1:8/v1", "--base-url http://127.0.0.1:8/v1 is given more than once"),
])
def test_a_job_files_list_of_endpoints_is_checked_before_anything_is_written(tmp_path, second, expected):
    write_jsonl(tmp_path / "data.jsonl", [{"question": "What is 1 + 2?"}])
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"backend": "openai", "model": "judge", "out": str(tmp_path / "run"),
                                   "base_url": ["http://127.0.0.1:8/v1", second]}), encoding="utf-8")
    result = invoke("score", tmp_path / "data.jsonl", "--config", job)
    assert_one_line_error(result, expected)
    assert "hunter2" not in result.output + result.stderr and not (tmp_path / "run").exists()
