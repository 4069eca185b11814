"""The math verifier's comparison, run only inside a verification worker (curate.verify.isolated): importing this
module imports sympy through math-verify, about a second.

math-verify's own timeouts are off (`parsing_timeout=None`, `timeout_seconds=None`): the worker's caller bounds
the time by killing the worker, from any thread, and a timeout never becomes a silent False.
"""

from __future__ import annotations

import logging

from math_verify import parse, verify

# math-verify warns once that its timeouts are off: here that is the design, not a risk.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def check(reference: str, answer: str) -> list[str]:
    """[status, detail] for an answer against a reference, both LaTeX without delimiters."""
    gold = parse(f"\\boxed{{{reference}}}", parsing_timeout=None)
    if not gold:
        return ["error", f"math-verify cannot read the reference {reference[:60]!r}"]
    # parse() keeps the answer's text beside its sympy form, so text answers (\text{Monday}) compare as text.
    if verify(gold, parse(f"\\boxed{{{answer}}}", parsing_timeout=None), timeout_seconds=None):
        return ["correct", ""]
    return ["wrong", f"math-verify: not equivalent to the reference {reference[:60]!r}"]
