"""Is this answer right? One implementation for `curate solve`, `curate respond --verify` and train's rewards.

A verifier is chosen by name (`get_verifier`, which also takes its settings: `timeout_s` for math, `rel_tol` and
`abs_tol` for numeric) and answers `verify(response, item) -> Verdict` with an explicit
status (correct, wrong, no_answer, error, timeout; see curate.verify.base). `item` is a row of curate's items
frame: `reference` (str or None) and `choices` (None or [{"label", "text"}, …]). Verifiers read only the
response's text after its last closed `</think>`, and never raise for a bad item or response.

    math     last \\boxed{} (or last number, for a numeric reference) ≡ reference, by math-verify (curate.verify.math)
    gsm8k    final number = the number after the reference's `####`, exactly (curate.verify.simple)
    numeric  final number ≈ the reference number, relative tolerance 1e-6, absolute 1e-9
    choice   the chosen option's label = the reference (a label or an option's text)
    exact    final answer = reference, after normalising case, spacing and LaTeX wrappers

    model    a judge model says whether the final answer is equivalent to the reference, through any curate
             backend and its own template (curate.verify.model); an exact match needs no judge

The rule verifiers are pure functions of their inputs; `math` runs sympy in a time-bounded worker process. Each
is a frozen dataclass whose fields other than name and version are its settings. The `model` verifier needs a
backend and a verifier template to exist: `get_verifier("model", backend=…, template=…)` (curate.engine builds
one from a run's --verify-* settings). `verify_all` decides a batch: one call to the judge for the batch.

The rewards of RL trainers (verl's compute_score, TRL's reward functions, dereason-train's GRPO) are these same
verifiers: curate.rewards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

from curate.errors import ConfigError
from curate.verify.base import BatchVerifier, Verdict, VerdictStatus, Verifier
from curate.verify.math import MathVerifier
from curate.verify.model import ModelVerifier
from curate.verify.simple import (
    ChoiceVerifier,
    ExactVerifier,
    Gsm8kVerifier,
    NumericVerifier,
)

VERIFIERS: dict[str, Verifier] = {verifier.name: verifier for verifier in (
    MathVerifier(), Gsm8kVerifier(), NumericVerifier(), ChoiceVerifier(), ExactVerifier())}
MODEL_VERIFIER = "model"
VERIFIER_NAMES = (*VERIFIERS, MODEL_VERIFIER)


def get_verifier(name: str, **settings: Any) -> Verifier:
    """The verifier called `name`, with `settings` replacing its defaults (the model verifier's: backend and
    template, which it cannot do without)."""
    if name == MODEL_VERIFIER:
        try:
            return ModelVerifier(**settings)
        except TypeError as exc:
            raise ConfigError(f"verifier 'model' needs backend= and template= (and takes sampling=, judge=): {exc}"
                              ) from None
    try:
        verifier = VERIFIERS[name]
    except KeyError:
        raise ConfigError(f"unknown verifier {name!r}: choose one of {', '.join(VERIFIER_NAMES)}") from None
    known = [field.name for field in fields(verifier) if field.name not in ("name", "version")]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigError(f"verifier {name!r} has no setting {', '.join(unknown)}: "
                          f"{'its settings are ' + ', '.join(known) if known else 'it has no settings'}")
    return replace(verifier, **settings)


def verify_all(verifier: Verifier, responses: Sequence[str], items: Sequence[Mapping[str, Any]]) -> list[Verdict]:
    """A verdict per (response, item): a verifier that asks a model gets the whole batch at once."""
    if isinstance(verifier, BatchVerifier):
        return verifier.verify_batch(responses, items)
    return [verifier.verify(response, item) for response, item in zip(responses, items, strict=True)]


__all__ = ["MODEL_VERIFIER", "VERIFIERS", "VERIFIER_NAMES", "ModelVerifier", "Verdict", "VerdictStatus", "Verifier",
           "get_verifier", "verify_all"]
