"""The local backend on a random tiny Qwen2: batching (rows, token budget, halving after running out of
memory), order and resumption never change a judgment; the sampler draws each token with its probability."""

import itertools
import json

import pytest
from conftest import invoke, write_jsonl

import curate
from curate.backends import Request, create_backend
from curate.config import BackendConfig, SamplingConfig, RunConfig
from curate.engine import score
from curate.parse import PARSERS, Status, parse_completion
from curate.templates import load_template


@pytest.fixture(scope="module")
def backend(random_model):
    config = BackendConfig(model=str(random_model), batch_size=4)
    created = create_backend(config)
    yield created
    created.close()


REQUESTS = [Request(f"i{i}", (0, 1, 2), ({"role": "user", "content": "what is " * (1 + 3 * i) + f"{i}?"},))
            for i in range(7)]
SAMPLED = SamplingConfig(samples=3, temperature=1.0, top_p=0.9, max_tokens=6, seed=11)


def run(backend, requests, sampling, batch_size):
    backend.batch_size = batch_size
    try:
        return {(c.item_id, c.sample_idx): c for c in backend.generate(requests, sampling)}
    finally:
        backend.batch_size = 4


@pytest.mark.parametrize("sampling", [SamplingConfig(max_tokens=6), SAMPLED], ids=["greedy", "sampled"])
def test_batch_size_and_order_do_not_change_results(backend, sampling):
    batched = run(backend, REQUESTS, sampling, batch_size=5)
    single = run(backend, list(reversed(REQUESTS)), sampling, batch_size=1)
    assert len(batched) == 21 and batched.keys() == single.keys()
    assert {k: c.text for k, c in batched.items()} == {k: c.text for k, c in single.items()}


def test_a_resumed_subset_equals_the_full_run(backend):
    full = run(backend, REQUESTS, SAMPLED, batch_size=4)
    subset = [Request(r.item_id, (2,), r.messages) for r in REQUESTS[3:]]
    resumed = run(backend, subset, SAMPLED, batch_size=4)
    assert {k: c.text for k, c in resumed.items()} == {k: full[k].text for k in resumed}


def test_samples_differ_and_the_seed_matters(backend):
    first = run(backend, REQUESTS, SAMPLED, batch_size=4)
    texts_per_item = [{first[(r.item_id, s)].text for s in range(3)} for r in REQUESTS]
    assert sum(len(texts) > 1 for texts in texts_per_item) >= 5
    reseeded = run(backend, REQUESTS, SamplingConfig(samples=3, temperature=1.0, top_p=0.9, max_tokens=6, seed=12), 4)
    assert sum(first[k].text != reseeded[k].text for k in first) >= 15


def test_max_tokens_truncates_and_token_counts_are_reported(backend):
    results = run(backend, REQUESTS[:2], SamplingConfig(max_tokens=3), batch_size=2)
    for (item_id, _), completion in results.items():
        prompt = backend.prompt_ids(REQUESTS[int(item_id[1:])].messages)
        assert completion.prompt_tokens == len(prompt)
        assert completion.completion_tokens <= 3
        assert completion.finish_reason == ("length" if completion.completion_tokens == 3 else "stop")


def test_left_padding_gives_the_unpadded_logits(backend):
    import torch

    short, long = (backend.prompt_ids(r.messages) for r in (REQUESTS[0], REQUESTS[6]))
    width = len(long)
    ids = torch.full((2, width), backend.pad_id)
    mask = torch.zeros((2, width), dtype=torch.long)
    ids[0, width - len(short):], mask[0, width - len(short):] = torch.tensor(short), 1
    ids[1], mask[1] = torch.tensor(long), 1
    with torch.inference_mode():
        padded = backend.model(input_ids=ids, attention_mask=mask,
                               position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[0, -1]
        alone = backend.model(input_ids=torch.tensor([short])).logits[0, -1]
    torch.testing.assert_close(padded, alone, rtol=1e-4, atol=1e-4)


def test_top_logprobs_are_those_of_each_generated_position(backend):
    import torch

    sampling = SamplingConfig(max_tokens=4, top_logprobs=5)
    (completion,) = backend.generate([Request("i0", (0,), REQUESTS[0].messages)], sampling)
    prompt = backend.prompt_ids(REQUESTS[0].messages)
    generated = backend.tokenizer(completion.text, add_special_tokens=False)["input_ids"]
    assert len(completion.logprobs) == len(generated) == completion.completion_tokens  # greedy: no stop token met
    for step, (token, alternatives) in enumerate(completion.logprobs):
        with torch.inference_mode():
            logits = backend.model(input_ids=torch.tensor([prompt + generated[:step]])).logits[0, -1]
        best = torch.log_softmax(logits, -1).topk(5)
        assert [lp for _, lp in alternatives] == pytest.approx(best.values.tolist(), abs=1e-4)
        assert [t for t, _ in alternatives] == [backend.tokenizer.decode([i]) for i in best.indices.tolist()]
        assert token == backend.tokenizer.decode([generated[step]]) == alternatives[0][0]  # greedy took the best


def test_a_constrained_answer_is_a_score_token_with_the_exact_unconstrained_mass(backend):
    import torch

    from curate.backends.base import first_token_ids
    from curate.parse import score_distribution

    sampling = SamplingConfig(max_tokens=1, top_logprobs=3)
    completions = list(backend.generate([r._replace(first_tokens=tuple("12345")) for r in REQUESTS], sampling))
    scores = set(first_token_ids(backend.tokenizer, "12345"))
    assert scores and all(backend.tokenizer.decode([i]).strip() in "12345" for i in scores)
    for completion in completions:
        ((token, alternatives),) = completion.logprobs
        assert token.strip() in list("12345") and completion.text == token  # a random model, yet a score
        with torch.inference_mode():
            ids = backend.prompt_ids(next(r for r in REQUESTS if r.item_id == completion.item_id).messages)
            logprobs = torch.log_softmax(backend.model(input_ids=torch.tensor([ids])).logits[0, -1], -1)
        assert score_distribution(alternatives).mass == pytest.approx(logprobs[sorted(scores)].exp().sum().item(),
                                                                      rel=1e-3)
        assert score_distribution(alternatives).mass < 0.5  # random weights put little on five tokens


def test_any_first_tokens_a_request_allows_bind_its_answer_and_requests_of_other_ones_batch_apart(backend):
    """The backend knows no judge: it allows what each request says (a multiple-choice judge's letters here)."""
    letters, digits = ("A", "B", "C"), tuple("12345")
    mixed = [r._replace(first_tokens=letters if i % 2 else digits) for i, r in enumerate(REQUESTS)]
    completions = list(backend.generate(mixed, SamplingConfig(max_tokens=1, top_logprobs=2)))
    wanted = {r.item_id: r.first_tokens for r in mixed}
    assert len(completions) == 21 and all(c.text.strip() in wanted[c.item_id] for c in completions)


def test_reusing_the_shared_prefix_changes_nothing(random_model):
    from curate.backends.transformers import TransformersBackend

    config = BackendConfig(model=str(random_model), batch_size=3)
    rubric = {"role": "system", "content": "Rate the reasoning intensity from 1 to 5. " * 4}
    requests = [Request(r.item_id, r.sample_indices, (rubric, *r.messages)) for r in REQUESTS]
    sampling = SamplingConfig(samples=3, temperature=1.0, max_tokens=5, top_logprobs=4, seed=5)
    reused_backend = TransformersBackend(config)
    reused = {(c.item_id, c.sample_idx): c for c in reused_backend.generate(requests, sampling)}
    assert reused_backend._prefix is not None and len(reused_backend._prefix[0]) > 20
    plain = {(c.item_id, c.sample_idx): c
             for c in TransformersBackend(config, reuse_prefix=False).generate(requests, sampling)}
    assert {k: c.text for k, c in reused.items()} == {k: c.text for k, c in plain.items()}
    for key, completion in reused.items():
        assert [lp for _, alternatives in completion.logprobs for _, lp in alternatives] == pytest.approx(
            [lp for _, alternatives in plain[key].logprobs for _, lp in alternatives], abs=1e-4)


def test_a_failure_midway_through_a_batch_answers_each_sample_once(tmp_path, random_model, monkeypatch):
    from curate.backends.transformers import TransformersBackend

    data = write_jsonl(tmp_path / "d.jsonl", [{"id": f"q{i}", "question": f"Problem {i}?"} for i in range(3)])
    config = RunConfig.from_flat({"source": str(data), "out": str(tmp_path / "run"), "model": str(random_model),
                                    "batch_size": 4, "max_tokens": 3, "max_failure_fraction": 1.0})
    backend = TransformersBackend(config.backend_config)
    decode, calls = backend.tokenizer.decode, itertools.count(1)

    def decode_failing_on_the_third_row(ids, **kwargs):
        if next(calls) == 3:
            raise ValueError("cannot decode token 4095")
        return decode(ids, **kwargs)

    monkeypatch.setattr(backend.tokenizer, "decode", decode_failing_on_the_third_row)
    result = score(config, backend=backend)
    judgments = curate.load_judgments(tmp_path / "run")
    assert judgments.height == result.summary["judgments"] == 3 and judgments["item_id"].is_unique().all()
    errors = judgments.filter(judgments["status"] == "error")
    assert errors["detail"].to_list() == ["ValueError: cannot decode token 4095"]


@pytest.fixture(scope="module")
def judge():
    """The bundled judge: 2,048 positions, one token per " x"."""
    from curate.backends.transformers import TransformersBackend

    created = TransformersBackend(BackendConfig(model="bundled:tiny-judge", batch_size=8))
    yield created
    created.close()


def test_prompts_never_run_past_the_models_context(judge):
    def asking(item_id, fillers):
        return Request(item_id, (0,), ({"role": "user", "content": "Rate:" + " x" * fillers},))

    requests = [asking("short", 10), asking("fills", 2100), asking("nearly", 0), asking("at_the_edge", 0)]
    base = len(judge.prompt_ids(requests[2].messages))
    requests[2], requests[3] = asking("nearly", 2048 - base - 3), asking("at_the_edge", 2048 - base - 1)
    assert len(judge.prompt_ids(requests[3].messages)) == 2047
    positions = []

    def record_positions(_module, _args, kwargs):
        if "position_ids" in kwargs:
            positions.append(int(kwargs["position_ids"].max()))

    hook = judge.model.register_forward_pre_hook(record_positions, with_kwargs=True)
    try:
        results = {c.item_id: c for c in judge.generate(requests, SamplingConfig(max_tokens=50))}
    finally:
        hook.remove()
    fills = judge.prompt_ids(requests[1].messages)
    assert results["fills"].error == (f"prompt has {len(fills)} tokens; the model's context is 2048 positions "
                                      "(max_position_embeddings); shorten the question or use a model with a longer "
                                      "context")
    assert (results["fills"].text, results["fills"].prompt_tokens) == ("", len(fills))
    assert max(positions) < 2048  # the long prompt never reached the model
    assert results["short"].error == results["nearly"].error == results["at_the_edge"].error == ""
    assert results["nearly"].completion_tokens <= 3  # what is left of the context, not max_tokens
    edge = results["at_the_edge"]
    assert (edge.completion_tokens, edge.finish_reason) in ((1, "length"), (1, "stop"))


def test_sampled_logprob_scores_are_what_each_sample_drew(judge, sample_rows):

    template = load_template("difficulty/intensity_score_only")
    requests = [Request(row["id"], tuple(range(5)), tuple(template.render(row))) for row in sample_rows[:12]]
    sampling = SamplingConfig(samples=5, temperature=1.0, max_tokens=1, top_logprobs=20, seed=3)
    scores: dict[str, list[int]] = {row["id"]: [] for row in sample_rows[:12]}
    spread = set()
    for completion in judge.generate(requests, sampling):
        parsed = parse_completion(PARSERS["score_only"], completion.text, completion.finish_reason,
                                  completion.error, completion.logprobs[0].alternatives, sampled=True)
        drawn = completion.text.strip()
        if len(drawn) == 1 and drawn in "12345":
            assert (parsed.status, parsed.score, parsed.method) == (Status.OK, int(drawn), "decoded")
            scores[completion.item_id].append(parsed.score)
        else:  # a draw outside the score tokens, cut off by max_tokens
            assert (parsed.status, parsed.score) == (Status.TRUNCATED, None)
        if max(parsed.distribution.probs) < 0.8:
            spread.add(completion.item_id)
    assert sum(map(len, scores.values())) >= 50
    assert spread and any(len(set(scores[item_id])) > 1 for item_id in spread)



RUBRIC = {"role": "system", "content": "Rate the reasoning intensity from 1 to 5. " * 4}


def forward_calls(model):
    """Record (rows, input width, attention-mask width) of every forward call; returns them and the hook."""
    calls = []

    def record(_module, _args, kwargs):
        mask = kwargs.get("attention_mask")
        calls.append((*kwargs["input_ids"].shape, None if mask is None else mask.shape[1]))

    return calls, model.register_forward_pre_hook(record, with_kwargs=True)


def test_only_the_last_positions_logits_are_computed(random_model):
    from curate.backends.transformers import TransformersBackend

    backend = TransformersBackend(BackendConfig(model=str(random_model), batch_size=4))
    shapes = []
    hook = backend.model.register_forward_hook(lambda _module, _args, output: shapes.append(output.logits.shape))
    requests = [Request(r.item_id, r.sample_indices, (RUBRIC, *r.messages)) for r in REQUESTS]
    try:
        list(backend.generate(requests, SamplingConfig(max_tokens=2, top_logprobs=3)))
    finally:
        hook.remove()
    assert backend._prefix is not None  # the shared prefix ran on its own too
    assert len(shapes) > 7 and all(shape[1] == 1 for shape in shapes)


def test_the_current_cache_keyword_is_used(backend):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # transformers 5.x: "`past_key_values` is deprecated"
        assert len(run(backend, REQUESTS[:2], SAMPLED, batch_size=2)) == 6


def run_within(backend, budget, requests, sampling, batch_size):
    """`run` with a token budget, and the forward calls it made."""
    backend.max_batch_tokens = budget
    calls, hook = forward_calls(backend.model)
    try:
        return run(backend, requests, sampling, batch_size), calls
    finally:
        hook.remove()
        backend.max_batch_tokens = BackendConfig.__dataclass_fields__["max_batch_tokens"].default


def test_batches_keep_to_the_token_budget_and_results_do_not_change(backend):
    sampling = SamplingConfig(samples=3, temperature=1.0, max_tokens=4, seed=2)
    unbounded = run(backend, REQUESTS, sampling, batch_size=8)
    budget = 2 * (max(len(backend.prompt_ids(r.messages)) for r in REQUESTS) + 4)
    budgeted, calls = run_within(backend, budget, REQUESTS, sampling, batch_size=8)
    # A batch's prompt forward: more than one token per row (decode steps feed one), under an attention mask
    # (a shared prefix runs alone, without one).
    prompts = [(rows, mask_width) for rows, width, mask_width in calls if width > 1 and mask_width is not None]
    assert any(rows > 1 for rows, _ in prompts)
    assert all(rows * (mask_width + 4) <= budget for rows, mask_width in prompts)
    assert {k: c.text for k, c in budgeted.items()} == {k: c.text for k, c in unbounded.items()}


def test_by_default_the_token_budget_alone_sizes_a_batch(random_model):
    """Logprob scoring of short prompts: 16,384 tokens hold far more than 16 rows of about 20 tokens and one to
    generate, and a row cap set by hand still binds."""
    config = BackendConfig(model=str(random_model))
    default = create_backend(config)
    requests = [Request(f"q{i}", (0,), ({"role": "user", "content": f"What is {i} plus {i}?"},)) for i in range(200)]
    calls, hook = forward_calls(default.model)
    try:
        list(default.generate(requests, SamplingConfig(max_tokens=1, top_logprobs=5)))
        assert max(rows for rows, width, mask in calls if width > 1 and mask is not None) > 100
        calls.clear()
        default.batch_size = 16
        list(default.generate(requests, SamplingConfig(max_tokens=1, top_logprobs=5)))
        assert max(rows for rows, _, _ in calls) == 16
    finally:
        hook.remove()
        default.close()


def test_a_prompt_over_the_token_budget_runs_alone(backend):
    results, calls = run_within(backend, 5, REQUESTS[:3], SamplingConfig(max_tokens=2), batch_size=8)
    assert len(results) == 9 and all(c.error == "" for c in results.values())
    assert {rows for rows, _, _ in calls} == {1}


CPU_OUT_OF_MEMORY = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                     "tried to allocate 24189255811072 bytes. Error code 12 (Cannot allocate memory)")


def cuda_out_of_memory():
    import torch

    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


@pytest.mark.parametrize("error", [cuda_out_of_memory, lambda: RuntimeError(CPU_OUT_OF_MEMORY), MemoryError],
                         ids=["cuda", "cpu allocator", "MemoryError"])
def test_out_of_memory_splits_the_batch_until_it_fits(backend, error):
    complete = run(backend, REQUESTS, SAMPLED, batch_size=8)

    def refuse_more_than_two_rows(_module, _args, kwargs):
        if kwargs["input_ids"].shape[0] > 2:
            raise error()

    hook = backend.model.register_forward_pre_hook(refuse_more_than_two_rows, with_kwargs=True)
    try:
        split = run(backend, REQUESTS, SAMPLED, batch_size=8)
    finally:
        hook.remove()
    assert all(c.error == "" for c in split.values())
    assert {k: c.text for k, c in split.items()} == {k: c.text for k, c in complete.items()}


def test_a_row_that_does_not_fit_alone_is_one_error_and_the_run_completes(tmp_path, random_model):
    from curate.backends.transformers import TransformersBackend

    rows = [{"id": f"q{i}", "question": f"Problem {i}: what is {i} + {i}?"} for i in range(5)]
    rows += [{"id": "long", "question": "Find x if x^2 = 4. " * 60}, {"id": "100 KB", "question": "x " * 50_000}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    config = RunConfig.from_flat({"source": str(data), "out": str(tmp_path / "run"), "model": str(random_model),
                                    "max_tokens": 3, "max_failure_fraction": 1.0})
    backend = TransformersBackend(config.backend_config)
    template = load_template(config.template)
    long_prompt = len(backend.prompt_ids(template.render(rows[5])))
    assert long_prompt < backend.context  # it fits the context, but (here) not the memory

    def refuse_long_rows(_module, _args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.sum(-1).max() > long_prompt - 100:
            raise cuda_out_of_memory()

    hook = backend.model.register_forward_pre_hook(refuse_long_rows, with_kwargs=True)
    try:
        result = score(config, backend=backend)
    finally:
        hook.remove()
    judgments = curate.load_judgments(tmp_path / "run")
    assert judgments.height == result.summary["judgments"] == 7 and judgments["item_id"].is_unique().all()
    errors = dict(judgments.filter(judgments["status"] == "error").select("item_id", "detail").iter_rows())
    assert errors.keys() == {"long", "100 KB"}
    assert errors["long"] == (f"out of memory even alone: prompt of {long_prompt} tokens plus up to 3 generated on cpu "
                              "(OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB); shorten the "
                              "question, lower --max-tokens or use a device with more memory")
    assert "the model's context is 1024 positions" in errors["100 KB"]


def test_the_token_budget_is_not_part_of_the_runs_identity(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": f"q{i}", "question": f"Problem {i}?"} for i in range(3)])
    common = ["score", data, "--out", tmp_path / "run", "--max-tokens", "1", "--json"]
    first = invoke(*common, "--max-batch-tokens", "300")
    again = invoke(*common, "--max-batch-tokens", "9000", "--batch-size", "2")
    assert first.exit_code in (0, 3) and again.exit_code in (0, 3), first.stderr + again.stderr
    assert json.loads(first.stdout)["requested"] == 3 and json.loads(again.stdout)["requested"] == 0


def test_uniforms_are_splitmix64_per_row_and_step():
    import torch

    from curate.backends.sampling import uniforms

    drawn = uniforms([0, 7, 2**63 - 1], 5)
    assert drawn[0, 0].item() == 0xE220A8 / 2**24  # the top 24 bits of SplitMix64(0)'s first output, 0xE220A8397B1DCDAF
    assert torch.equal(uniforms([7], 3), drawn[1:2, :3])  # independent of the other rows and of the length
    assert drawn.dtype == torch.float32 and 0 <= drawn.min() and drawn.max() < 1


@pytest.mark.parametrize(("probs", "top_p", "expected"), [
    ([0.15, 0.5, 0.05, 0.3], 1.0, [0.15, 0.5, 0.05, 0.3]),
    ([0.15, 0.5, 0.05, 0.3], 0.7, [0.0, 0.625, 0.0, 0.375]),  # the nucleus, 0.5 and 0.3, renormalised
    ([0.0, 0.6, 0.4, 0.0], 1.0, [0.0, 0.6, 0.4, 0.0]),
], ids=["full", "nucleus", "impossible tokens"])
def test_each_token_is_drawn_with_its_probability(probs, top_p, expected):
    import torch

    from curate.backends.sampling import next_tokens

    n = 10_000
    logits = torch.tensor(probs).log().expand(n, -1)
    evenly_spread = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    tokens = next_tokens(logits, 1.0, top_p, evenly_spread)
    assert (torch.bincount(tokens, minlength=4) / n).tolist() == pytest.approx(expected, abs=2 / n)
    extremes = next_tokens(logits[:2], 1.0, top_p, torch.tensor([0.0, 1 - 2**-24]))
    assert all(expected[token] > 0 for token in extremes.tolist())


def test_temperature_zero_is_the_argmax():
    import torch

    from curate.backends.sampling import next_tokens

    assert next_tokens(torch.tensor([[0.1, 3.0, -1.0], [2.0, 0.0, 1.9]]), 0.0, 1.0, None).tolist() == [1, 0]


def test_a_prefilled_answer_is_continued_not_restarted(backend):
    messages = (*REQUESTS[0].messages, {"role": "assistant", "content": "Score: "})
    text = backend.tokenizer.decode(backend.prompt_ids(messages))
    assert text.endswith("<|im_start|>assistant\nScore: ") and text.count("<|im_start|>assistant") == 1
    assert backend.prompt_ids(messages)[:len(backend.prompt_ids(REQUESTS[0].messages))] == \
        backend.prompt_ids(REQUESTS[0].messages)  # the same conversation, with the answer begun


def test_a_draw_does_not_change_when_rounding_swaps_two_near_equal_tokens():
    """Two tokens a rounding error apart (a batch of another shape computes them so) keep their intervals: the
    nucleus was once walked in probability order, and every draw between them changed token when they swapped."""
    import torch

    from curate.backends.sampling import next_tokens

    one_way = torch.tensor([[0.3, 0.3 + 1e-6, 0.25, 0.15]]).log()
    other_way = torch.tensor([[0.3 + 1e-6, 0.3, 0.25, 0.15]]).log()
    uniforms = torch.linspace(0.01, 0.99, 99)
    for top_p in (1.0, 0.9):
        draws = [(next_tokens(one_way, 1.0, top_p, u[None]).item(), next_tokens(other_way, 1.0, top_p, u[None]).item())
                 for u in uniforms]
        assert sum(a != b for a, b in draws) <= 1, top_p  # at most a draw on the boundary itself


def test_prefetching_keeps_order_raises_what_the_producer_raised_and_stops_with_the_consumer():
    import threading

    from curate.backends.base import prefetched

    def failing():
        yield from (1, 2)
        raise ValueError("template line 3: boom")

    seen = []
    with pytest.raises(ValueError, match="boom"):
        for value in prefetched(failing()):
            seen.append(value)
    assert seen == [1, 2]
    pulled = []

    def counting():
        for value in itertools.count():
            pulled.append(value)
            yield value

    for value in prefetched(counting()):
        if value == 3:
            break
    assert 4 <= len(pulled) <= 6  # at most one item ahead waiting, one being handed over
    assert not any(thread.name == "dereason-prefetch" for thread in threading.enumerate())


@pytest.mark.parametrize(("torch_threads", "cores", "background"), [(2, 2, False), (1, 2, True)],
                         ids=["every core in torch: inline", "a core to spare: in the background"])
def test_windows_are_tokenized_in_the_background_only_with_a_core_to_spare(backend, monkeypatch, torch_threads,
                                                                           cores, background):
    """On CPU a tokenizing thread beside torch's threads on every core preempts them (BENCHMARKS.md (e))."""
    import threading

    import torch

    from curate.backends import transformers

    monkeypatch.setattr(torch, "get_num_threads", lambda: torch_threads)
    monkeypatch.setattr(transformers, "available_cores", lambda: cores)
    tokenized_in = []
    rows = transformers.TransformersBackend._rows

    def recording(self, requests):
        tokenized_in.append(threading.current_thread().name)
        return rows(self, requests)

    monkeypatch.setattr(transformers.TransformersBackend, "_rows", recording)
    assert len(run(backend, REQUESTS, SamplingConfig(max_tokens=2), batch_size=4)) == 21
    assert tokenized_in and set(tokenized_in) == {"dereason-prefetch" if background else "MainThread"}


def test_a_template_error_in_a_later_window_reaches_the_caller(tmp_path, random_model, monkeypatch):
    from curate.backends import transformers

    monkeypatch.setattr(transformers, "FIRST_WINDOW_ROWS", 2)
    source = write_jsonl(tmp_path / "d.jsonl", [{"id": f"q{i}", "question": f"What is {i}?"} for i in range(6)])
    template = tmp_path / "t.jinja"
    template.write_text("{#-\nparser: score_only\n-#}\n{% block user %}{{ question }}{{ 1 // (id != 'q4') }}"
                        "{% endblock %}\n")
    result = invoke("score", source, "--model", random_model, "--template", template, "--out", tmp_path / "run",
                    "--max-tokens", "1")
    # Raised in the thread that renders the next window while the model runs the first, it surfaces as a run error.
    assert result.exit_code == 1 and "ZeroDivisionError" in result.stderr and "'q4'" in result.stderr


@pytest.mark.parametrize("setting", ["as loaded", "truncating", "splitting special tokens", "a class of its own"])
def test_prompt_ids_are_those_transformers_gives_whatever_the_tokenizer_keeps(backend, setting):
    """Prompts skip transformers' per-encoding conversions where those change nothing: a tokenizer file that keeps
    a truncation, a tokenizer set to split special tokens, or a class that encodes in its own way (Code Llama's)
    must still give what transformers' own call gives."""
    import copy

    from curate.backends.base import continues_answer, prompts_token_ids

    tokenizer = copy.deepcopy(backend.tokenizer)
    if setting == "truncating":
        tokenizer.backend_tokenizer.enable_truncation(8)  # what a tokenizer.json with "truncation" set loads as
    if setting == "splitting special tokens":
        tokenizer.split_special_tokens = True
    if setting == "a class of its own":
        class Shouting(type(tokenizer)):
            def _encode_plus(self, text, *args, **kwargs):
                return super()._encode_plus([t.upper() for t in text] if isinstance(text, list) else text.upper(),
                                            *args, **kwargs)

        tokenizer.__class__ = Shouting
    conversations = [request.messages for request in REQUESTS[:3]] + [
        (*REQUESTS[1].messages, {"role": "assistant", "content": "Score: "}), REQUESTS[4].messages]
    ids = prompts_token_ids(tokenizer, conversations)
    texts = [tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=not continues_answer(
        messages), continue_final_message=continues_answer(messages)) for messages in conversations]
    assert ids == [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    assert prompts_token_ids(tokenizer, []) == []


def test_the_heap_is_frozen_while_the_backend_is_open_unless_someone_else_froze_it(random_model):
    """The garbage collector's full passes rescanned torch, transformers and the model every time enough new objects
    had outlived two collections: 0.4 s per 3,000 judgments of a small model."""
    import gc

    config = BackendConfig(model=str(random_model))
    gc.unfreeze()  # what a backend of another test froze
    created = create_backend(config)
    try:
        assert gc.get_freeze_count() > 100_000  # torch, transformers and the model
    finally:
        created.close()
    assert gc.get_freeze_count() == 0
    gc.freeze()
    frozen = gc.get_freeze_count()
    try:
        create_backend(config).close()
        assert gc.get_freeze_count() > frozen // 2  # not unfrozen (objects it freed leave the count)
    finally:
        gc.unfreeze()


def test_a_batch_whose_top_tokens_are_all_known_is_answered_at_the_transformers_floor(backend, monkeypatch):
    """transformers 5.6, the floor, decodes an empty batch as ['']: once every top token of a batch had been seen,
    learning the texts of none of them failed the batch."""
    batch_decode = type(backend.tokenizer).batch_decode
    monkeypatch.setattr(type(backend.tokenizer), "batch_decode",
                        lambda self, sequences, **kwargs: batch_decode(self, sequences, **kwargs) if sequences else [""])
    sampling = SamplingConfig(max_tokens=1, top_logprobs=3)
    for _ in range(2):  # the second time, every token is known
        completions = list(backend.generate(REQUESTS[:2], sampling))
        assert all(not c.error and c.logprobs for c in completions)
