"""`--executor ray`: a run's requests answered on a local Ray actor pool (num_cpus=2), its answers stored by the driver
alone. The same judgments as one process, with a tiny transformers model and with the scripted endpoint; an actor
killed mid-run is restarted and its batch asked again, or, with no restarts left, the run stops and a rerun loses
and duplicates nothing; a driver killed mid-run is the same."""

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import polars as pl
import psutil
import pytest
from conftest import REPO, write_jsonl
from polars.testing import assert_frame_equal

import curate
from curate import engine
from curate.backends import Completion, TokenLogprobs
from curate.config import RunConfig
from curate.engine import score
from curate.errors import BackendError
from curate.executors.ray_pool import completions_table, table_completions
from curate.testing import FakeOpenAIServer

ray = pytest.importorskip("ray")

ACTOR_TITLE = "MapBatches(BackendActor)"


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module's in-process runs (the executor joins a Ray already started, and leaves it up)."""
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=short_temp_dir())
    yield
    ray.shutdown()


def short_temp_dir() -> str:
    """Ray's socket paths must stay under 108 bytes: pytest's temporary directories are too deep."""
    return tempfile.mkdtemp(prefix="ray-", dir="/tmp")


def problems(path, items):
    return write_jsonl(path, [{"id": f"q{i:03d}", "question": f"Problem {i}: what is {i} + {i * 7 % 13}?",
                               "answer": "3"} for i in range(items)])


def judgments(run_dir) -> pl.DataFrame:
    """Every stored column but the time each record was committed."""
    return curate.load_judgments(run_dir).drop("created_at").sort("item_id", "sample_idx")


def endpoint_config(tmp_path, server, out, items=60, **overrides) -> RunConfig:
    return RunConfig.from_flat({
        "source": str(problems(tmp_path / "data.jsonl", items)), "out": str(tmp_path / out), "backend": "openai",
        "model": "judge", "base_url": server.base_url, "template": "difficulty/intensity", "max_in_flight": 4,
        "max_failure_fraction": 0.0, **overrides})


def test_completions_cross_to_the_driver_unchanged():
    sent = [Completion("a", 0, "Score: 3", "stop", 12, 3, logprobs=(
                TokenLogprobs("3", (("3", -0.25), ("4", -1.5), (" 2", float("-inf")))),)),
            Completion("b", 2, "", "", 0, 0, error="backend returned no completion for this request")]
    assert list(table_completions(completions_table(sent))) == sent


def test_ray_scores_as_one_process_does_with_a_local_model(tmp_path, local_ray, random_model):
    """A tiny transformers model, sampled with logprobs: the pool's judgments equal one process's. Texts, statuses,
    scores and counts exactly; logprobs to float32's precision, as the pool batches other requests together (two
    actors, blocks of 5) than one process does, and a padded batch of another shape sums in another order (the
    backend's own test holds its texts, not its logprobs, to batch independence)."""
    common = {"source": str(problems(tmp_path / "data.jsonl", 24)), "model": str(random_model),
              "template": "difficulty/intensity_score_only", "samples": 2, "temperature": 1.0, "seed": 3,
              "max_tokens": 4, "top_logprobs": 5, "max_failure_fraction": 1.0}
    local = score(RunConfig.from_flat({**common, "out": str(tmp_path / "local")}))
    pooled = score(RunConfig.from_flat({**common, "out": str(tmp_path / "ray"), "executor": "ray", "ray_actors": 2,
                                        "ray_batch_size": 5}))
    assert pooled.requested == local.requested == 48
    assert_equal_to_float32(judgments(tmp_path / "ray"), judgments(tmp_path / "local"))
    assert_equal_to_float32(pooled.per_item, local.per_item)


def assert_equal_to_float32(ours: pl.DataFrame, theirs: pl.DataFrame) -> None:
    """Equal frames, but for floats (also inside the JSON of stored logprobs) within float32's precision."""
    text = [c for c in ("score_probs", "top_logprobs") if c in ours.columns]
    assert_frame_equal(ours.drop(text), theirs.drop(text), check_exact=False, rtol=1e-5)
    for column in text:
        for mine, other in zip(ours[column], theirs[column], strict=True):
            assert (mine is None and other is None) or close(json.loads(mine), json.loads(other)), \
                (column, mine, other)


def close(mine, other) -> bool:
    if isinstance(mine, float) and isinstance(other, float):
        return math.isclose(mine, other, rel_tol=1e-5, abs_tol=1e-6)
    if isinstance(mine, list) and isinstance(other, list):
        return len(mine) == len(other) and all(close(a, b) for a, b in zip(mine, other, strict=True))
    return mine == other


@pytest.mark.parametrize("command", ["score", "solve", "respond"])
def test_ray_runs_each_command_as_one_process_does_through_an_endpoint(tmp_path, local_ray, command):
    """The scripted endpoint answers by prompt and seed: score, solve (verified) and respond (asked a sample index at a
    time until verified, each round on a new pool) store the same records as one process."""
    settings = {} if command == "score" else {"template": "solve/step_by_step", "verify": "gsm8k", "samples": 3,
                                               "temperature": 1.0, "max_tokens": 64, "max_failure_fraction": 1.0}
    run = getattr(engine, command)
    with FakeOpenAIServer(latency=0.01, answer_format="tagged" if command == "score" else "boxed") as server:
        local = run(endpoint_config(tmp_path, server, "local", items=30, **settings))
        pooled = run(endpoint_config(tmp_path, server, "ray", items=30, executor="ray", ray_actors=2, ray_batch_size=8,
                                     ray_actor_cpus=0.5, **settings))
    assert pooled.requested == local.requested > 0
    assert judgments(tmp_path / "ray").equals(judgments(tmp_path / "local"))
    assert pooled.per_item.equals(local.per_item)


def actor_processes() -> list[psutil.Process]:
    """The pool's actors: this process's own Ray's (another Ray's, left by an earlier run, is not this test's)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if any(ACTOR_TITLE in part for part in process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def kill_an_actor_once_answers_are_stored(run_dir, killed: list[int]) -> threading.Thread:
    def kill() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stored = (run_dir / "judgments.sqlite").exists() and curate.load_judgments(run_dir).height
            actors = actor_processes()
            if stored and actors:
                actors[0].kill()
                killed.append(actors[0].pid)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("restarts", [3, 0])
def test_a_killed_actor_loses_only_its_batch(tmp_path, local_ray, restarts):
    """SIGKILL of an actor while its batch is in flight. With restarts left, Ray starts it again and asks its batch
    again: the run ends whole. With none, the run stops with one error, keeping what was stored; a rerun asks only for
    the rest. Either way each judgment is stored once and equals an uninterrupted run's."""
    killed: list[int] = []
    with FakeOpenAIServer(latency=0.15) as server:
        score(endpoint_config(tmp_path, server, "uninterrupted", items=48))
        config = endpoint_config(tmp_path, server, "ray", items=48, executor="ray", ray_actors=2, ray_batch_size=4,
                                 ray_actor_cpus=0.5, ray_actor_restarts=restarts, chunk_size=1)
        killer = kill_an_actor_once_answers_are_stored(tmp_path / "ray", killed)
        if restarts:
            result = score(config)
            assert result.requested == 48
        else:
            with pytest.raises(BackendError, match="Ray actor pool stopped .* run the same command again"):
                score(config)
            stored_before = curate.load_judgments(tmp_path / "ray").height
            assert 0 < stored_before < 48
            assert score(config).requested == 48 - stored_before
        killer.join()
    assert killed, "no actor was killed: the test did not test anything"
    assert judgments(tmp_path / "ray").equals(judgments(tmp_path / "uninterrupted"))


def test_a_killed_driver_loses_and_duplicates_nothing(tmp_path):
    """`curate score --executor ray` (its own local Ray) killed with SIGKILL, with its process group, mid-run; the same
    command again finishes the run, asking only for what was not stored."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_TMPDIR": short_temp_dir()}
    with FakeOpenAIServer(latency=0.15) as server:
        uninterrupted = score(endpoint_config(tmp_path, server, "uninterrupted", items=48))
        data, run_dir = tmp_path / "data.jsonl", tmp_path / "ray"
        command = [sys.executable, "-m", "curate.cli", "score", str(data), "--out", str(run_dir), "--backend",
                   "openai", "--model", "judge", "--base-url", server.base_url, "--template", "difficulty/intensity",
                   "--max-in-flight", "4", "--executor", "ray", "--ray-actors", "2", "--ray-batch-size", "4",
                   "--ray-actor-cpus", "0.5", "--chunk-size", "1", "--json"]
        driver = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not ((run_dir / "judgments.sqlite").exists()
                                                    and curate.load_judgments(run_dir).height >= 8):
            assert driver.poll() is None, driver.stdout.read().decode()[-3000:]
            time.sleep(0.05)
        group = psutil.Process(driver.pid).children(recursive=True)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
        for process in group:  # whatever of its Ray left its process group
            if process.is_running():
                process.kill()
        stored_before = curate.load_judgments(run_dir).height
        assert 8 <= stored_before < 48
        rerun = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert json.loads(rerun.stdout.splitlines()[-1])["requested"] == 48 - stored_before
    assert uninterrupted.requested == 48
    assert judgments(run_dir).equals(judgments(tmp_path / "uninterrupted"))


def test_a_model_that_does_not_load_is_one_error(tmp_path, local_ray):
    config = RunConfig.from_flat({"source": str(problems(tmp_path / "data.jsonl", 4)), "out": str(tmp_path / "run"),
                                  "model": str(tmp_path / "no-such-model"), "executor": "ray",
                                  "ray_actor_restarts": 0})
    with pytest.raises(BackendError, match="no-such-model"):
        score(config)
