"""The `math` verifier: a final answer against a LaTeX reference, compared by math-verify (sympy).

The response's answer is the content of its last `\\boxed{}` (after any closed `<think>`); when it has none and
the reference is one number, its last number (see curate.verify.extract). The reference is LaTeX without
delimiters (MATH's `answer`); surrounding `$` are dropped, and a reference holding a `\\boxed{}` (a full
solution, such as MATH's `solution`) is read by its last box. math-verify then decides equivalence: `\\frac12` =
`0.5`, `\\sqrt 2` = `2^{1/2}`, intervals by their ends and brackets, sets in any order, `10\\%` = `10`,
`x^2+2x+1` = `(x+1)^2`, `\\text{Monday}` = `Monday`, `y=2x+3` = `2x+3`.

Time: each comparison runs in a worker process (curate.verify.isolated, `math_check` inside it) and is killed
after `timeout_s`, which gives the verdict `timeout`; this works from any thread. Measured on 600 MATH train
answers (each against itself and against a wrong one), once a worker runs: median 1.5 ms, 90th percentile 13 ms,
99th 95 ms, slowest 0.2 s. Starting a worker (importing sympy) takes 1-2 s, once per worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from curate.verify.base import (
    EMPTY_BOX,
    Verdict,
    VerdictStatus,
    reference_and_answer,
    require_number,
)
from curate.verify.extract import last_boxed, numbers, read_number
from curate.verify.isolated import WorkerFailed, WorkerPool

_WORKERS = WorkerPool("curate.verify.math_check", "check", size=min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class MathVerifier:
    name: str = "math"
    version: int = 1
    timeout_s: float = 10.0

    def __post_init__(self):
        require_number(self, "timeout_s", positive=True)

    def verify(self, response: str, item: Mapping[str, Any]) -> Verdict:
        read = reference_and_answer(response, item, lambda text: (last_boxed(text) or text).strip("$ \n"))
        if isinstance(read, Verdict):
            return read
        reference, answer = read
        extracted = last_boxed(answer)
        if extracted == "":
            return EMPTY_BOX
        if extracted is None:
            if read_number(reference) is None:
                return Verdict(VerdictStatus.NO_ANSWER, "", "no \\boxed{} answer")
            found = numbers(answer)
            if not found:
                return Verdict(VerdictStatus.NO_ANSWER, "", "no \\boxed{} answer and no number")
            extracted = found[-1].text
        try:
            status, detail = _WORKERS.call([reference, extracted], self.timeout_s)
        except TimeoutError:
            return Verdict(VerdictStatus.TIMEOUT, extracted, f"math-verify took longer than {self.timeout_s:g} s")
        except WorkerFailed as exc:
            return Verdict(VerdictStatus.ERROR, extracted, f"math-verify failed: {exc}")
        return Verdict(VerdictStatus(status), extracted, detail)
