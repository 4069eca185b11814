"""The `model` verifier: a judge model decides whether a response's final answer is equivalent to the reference.

This is DeReason's reward for general STEM answers, where no rule reads every right form of an answer (units
spelled out, an equation rearranged, a name for a number). The final answer is read as the `exact` verifier reads
it (the last `\\boxed{}`, else what follows the last "answer is"/"answer:", else the whole answer after any
closed `<think>`). An answer equal to the reference after `normalise` is correct without asking the judge; every
other one is rendered through the judge's template (`kind: verifier`, default `verify/equivalence`, which sees
`answer` beside the item's variables) and sent, a batch at a time, through any curate backend (transformers,
vLLM, an OpenAI-compatible endpoint), greedy.

The judge's answer must be one word, yes or no (after any closed `<think>`; case, surrounding spaces and one
trailing full stop or similar ignored). Anything else is an `error` verdict that quotes it; so is a judge
request that failed or ran past its max_tokens. Never a silent False.

The verdicts are stored with the responses (status, the judge's answer in `detail`), in the transaction that
stores the responses: a crash loses a chunk's responses and verdicts together, and a rerun asks again for both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, field, replace
from typing import Any

from curate.backends import LazyBackend, backend_identity
from curate.backends.base import Backend, Request
from curate.config import BackendConfig, JudgeVerifierConfig, SamplingConfig
from curate.errors import ConfigError
from curate.parse import answer_part
from curate.settings import check
from curate.templates import JudgeTemplate, load_template
from curate.verify.base import Verdict, VerdictStatus
from curate.verify.simple import ExactVerifier

_VERDICT = re.compile(r"\s*(?P<word>yes|no)[\s.!]*", re.IGNORECASE)
DETAIL_CHARACTERS = 200  # of a judge's answer, quoted in the verdict's detail
_EXACT = ExactVerifier()


@dataclass(frozen=True)
class ModelVerifier:
    """`backend` and `template` make it whole (get_verifier('model', backend=…, template=…)); `judge` names the
    judge (model, backend, template identity) for the run's identity."""

    backend: Backend
    template: JudgeTemplate
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_tokens=16))
    judge: Mapping[str, Any] = field(default_factory=dict)
    name: str = "model"
    version: int = 1

    def __post_init__(self) -> None:
        if self.template.kind != "verifier":
            raise ConfigError(f"template {self.template.name!r} is a {self.template.kind} template; the model "
                              "verifier needs a verifier template (`kind: verifier`, e.g. verify/equivalence)")
        if self.sampling.temperature != 0 or self.sampling.samples != 1:
            raise ConfigError("the model verifier's judge answers greedily, once per response: temperature 0, "
                              "1 sample")

    def verify(self, response: str, item: Mapping[str, Any]) -> Verdict:
        return self.verify_batch([response], [item])[0]

    def verify_batch(self, responses: Sequence[str], items: Sequence[Mapping[str, Any]]) -> list[Verdict]:
        """A verdict per (response, item), asking the judge about every answer the rules do not settle at once."""
        verdicts: list[Verdict | None] = []
        asked: dict[str, tuple[int, str]] = {}  # request id → (position, the answer asked about)
        requests = []
        for position, (response, item) in enumerate(zip(responses, items, strict=True)):
            settled = _without_judge(response, item)
            verdicts.append(settled if isinstance(settled, Verdict) else None)
            if isinstance(settled, Verdict):
                continue
            request_id = str(position)
            asked[request_id] = (position, settled)
            messages = self.template.render({**item, "id": item.get("id", item.get("item_id", request_id)),
                                             "answer": settled})
            requests.append(Request(request_id, (0,), tuple(messages)))
        # Nothing to ask leaves the backend untouched: a lazily created one then never loads its model.
        for completion in self.backend.generate(requests, self.sampling) if requests else ():
            position, answer = asked.pop(completion.item_id)
            verdicts[position] = _judged(answer, completion.text, completion.finish_reason, completion.error)
        for position, answer in asked.values():  # a backend that drops a request leaves an explicit error
            verdicts[position] = Verdict(VerdictStatus.ERROR, answer, "the equivalence judge returned no answer")
        return verdicts  # type: ignore[return-value]  # every position was filled above


def judge_verifier(judge: JudgeVerifierConfig, run: BackendConfig, seed: int, template_dir: str | None,
                   resources: ExitStack) -> ModelVerifier:
    """The model verifier of `--verify model`: the judge's model, backend and URL over the run's backend settings
    (`run`: its device, dtype, endpoint settings and API key variable), greedy. Its backend is made at the first
    answer it must judge and closed with `resources`; its identity is that backend's, each key prefixed verifier_,
    with the judge's template and max tokens."""
    check(judge.verify_model is not None, "--verify model asks a judge model whether each answer equals the "
                                          "reference: name it with --verify-model (e.g. the served model's name, or "
                                          "a local path)")
    settings = replace(run, model=judge.verify_model, backend=judge.verify_backend or run.backend,
                       endpoint=replace(run.endpoint, base_url=[judge.verify_base_url] if judge.verify_base_url
                                        else run.endpoint.base_url))
    sampling = SamplingConfig(max_tokens=judge.verify_max_tokens, seed=seed)
    template = load_template(judge.verify_template, template_dir)
    backend = resources.enter_context(closing(LazyBackend(settings)))
    identity = {f"verifier_{key}": value for key, value in backend_identity(settings, sampling).items()}
    return ModelVerifier(backend=backend, template=template, sampling=sampling, judge={
        **identity, "verifier_template": template.identity, "verifier_max_tokens": judge.verify_max_tokens})


def _without_judge(response: str, item: Mapping[str, Any]) -> Verdict | str:
    """A verdict the rules settle (no reference, no answer, an exact match), else the final answer to ask about."""
    verdict = _EXACT.verify(response, item)
    # Differs from the reference as a string: only the judge can tell whether it is another form of it.
    return verdict.extracted if verdict.status == VerdictStatus.WRONG else verdict


def _judged(answer: str, text: str, finish_reason: str, error: str | None) -> Verdict:
    if error:
        return Verdict(VerdictStatus.ERROR, answer, f"the equivalence judge failed: {error}")
    said = answer_part(text)
    match = _VERDICT.fullmatch(said or "")
    if match is None:
        cut = " (cut at its max_tokens)" if finish_reason == "length" else ""
        return Verdict(VerdictStatus.ERROR, answer, f"the equivalence judge answered {text[:DETAIL_CHARACTERS]!r}"
                                                    f"{cut}, not yes or no")
    correct = match["word"].lower() == "yes"
    return Verdict(VerdictStatus.CORRECT if correct else VerdictStatus.WRONG, answer,
                   f"the equivalence judge said {match['word'].lower()}")
