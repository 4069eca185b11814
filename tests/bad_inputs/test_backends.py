"""`curate score` with a backend or model that cannot run: one line saying what, where and what to do."""

import importlib.util
import json
import shutil

import pytest
import torch
from conftest import assert_one_line_error, invoke

SAMPLE = ["score", "bundled:math-sample", "--limit", "2", "--out", "run"]


def without_chat_template(tmp, model):
    copy = shutil.copytree(model, tmp / "no-template")
    (copy / "chat_template.jinja").unlink(missing_ok=True)
    settings = json.loads((copy / "tokenizer_config.json").read_text())
    settings.pop("chat_template", None)
    (copy / "tokenizer_config.json").write_text(json.dumps(settings))
    return copy


def empty_folder(tmp, _model):
    (tmp / "empty").mkdir()
    return tmp / "empty"


CASES = {
    "--device cuda without CUDA": (
        ["--device", "cuda"], "CUDA is not available on this machine; use --device cpu or auto"),
    "--device mps without MPS": (
        ["--device", "mps"], "MPS is not available on this machine; use --device cpu or auto"),
    "--device that torch does not know": (
        ["--device", "gpu"], "unknown --device 'gpu'; use auto, cpu, cuda, cuda:N or mps"),
    "--model: a relative path that does not exist": (
        ["--model", "./no/such/dir"], "model path ./no/such/dir does not exist; give a model directory or a Hub id"),
    "--model: a path of three parts cannot be a Hub id": (
        ["--model", "no/such/dir"], "model path no/such/dir does not exist"),
    "--model: a Hub id while offline, not cached": (
        ["--model", "dereason-test/not-cached"],
        "model 'dereason-test/not-cached' is not in the local Hugging Face cache and the Hub is offline "
        "(HF_HUB_OFFLINE=1); download it first (hf download dereason-test/not-cached) or give a local model directory"),
    "--model: a folder that holds no model": (
        [empty_folder], "cannot load model"),
    "--model: a model without a chat template": (
        [without_chat_template], "has no chat template; use a chat/instruct model"),
    "--backend vllm without vLLM": (
        ["--backend", "vllm"], "--backend vllm needs vLLM, which is not installed: pip install 'dereason[vllm]'"),
    "--backend openai without a URL": (
        ["--backend", "openai", "--model", "judge"], "--backend openai needs --base-url"),
    "--endpoint completions with a tokenizer path that does not exist": (
        ["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "judge", "--endpoint",
         "completions", "--tokenizer", "./no/such/tokenizer"], "model path ./no/such/tokenizer does not exist"),
    "--backend that does not exist": (["--backend", "nope"], "unknown backend 'nope'"),
    "--model: a bundled name that is not bundled": (
        ["--model", "bundled:nope"], "no bundled model 'bundled:nope'; the bundled models are bundled:smollm2-135m, "
        "bundled:smollm2-judge, bundled:tiny-judge: pass one as --model, e.g. --model bundled:tiny-judge"),
}
UNAVAILABLE = {"--device cuda without CUDA": torch.cuda.is_available(),
               "--device mps without MPS": torch.backends.mps.is_available(),
               "--backend vllm without vLLM": importlib.util.find_spec("vllm") is not None}


@pytest.mark.parametrize("case", list(CASES))
def test_one_line(tmp_path, monkeypatch, random_model, case):
    if UNAVAILABLE.get(case):
        pytest.skip("this machine has it")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    options, expected = CASES[case]
    if callable(options[0]):
        options = ["--model", options[0](tmp_path, random_model)]
    assert_one_line_error(invoke(*SAMPLE, *options), expected)
