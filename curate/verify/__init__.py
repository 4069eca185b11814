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

All but `math` are pure functions of their inputs; `math` runs sympy in a time-bounded worker process. Each
is a frozen dataclass whose fields other than name and version are its settings, so a verifier that needs more
to be built (a model judging equivalence: its backend and template) registers with those fields unset and is
made whole by `get_verifier(name, backend=…, template=…)`.

A reward for TRL is one line around any verifier:
    def reward(completions, reference, choices, **kwargs):
        return [float(verifier.verify(c, {"reference": r, "choices": o}).status == "correct")
                for c, r, o in zip(completions, reference, choices)]
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from curate.errors import ConfigError
from curate.verify.base import Verdict, VerdictStatus, Verifier
from curate.verify.math import MathVerifier
from curate.verify.simple import (
    ChoiceVerifier,
    ExactVerifier,
    Gsm8kVerifier,
    NumericVerifier,
)

VERIFIERS: dict[str, Verifier] = {verifier.name: verifier for verifier in (
    MathVerifier(), Gsm8kVerifier(), NumericVerifier(), ChoiceVerifier(), ExactVerifier())}


def get_verifier(name: str, **settings: Any) -> Verifier:
    """The verifier called `name`, with `settings` replacing its defaults."""
    try:
        verifier = VERIFIERS[name]
    except KeyError:
        raise ConfigError(f"unknown verifier {name!r}: choose one of {', '.join(VERIFIERS)}") from None
    known = [field.name for field in fields(verifier) if field.name not in ("name", "version")]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigError(f"verifier {name!r} has no setting {', '.join(unknown)}: "
                          f"{'its settings are ' + ', '.join(known) if known else 'it has no settings'}")
    return replace(verifier, **settings)


__all__ = ["VERIFIERS", "Verdict", "VerdictStatus", "Verifier", "get_verifier"]
