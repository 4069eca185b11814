"""Reading a final answer out of a response: the last `\\boxed{}`, numbers, and text normalised for comparison.

The rules are strict, so that a verifier reads what the model committed to and nothing else:
- `last_boxed`: the content of the last `\\boxed{…}` (or `\\fbox{…}`), braces balanced, escaped braces `\\{ \\}`
  skipped. The last box decides even when it is empty or never closed (a response cut off inside it): that
  reads as "" (no answer), never as an earlier box.
- A number is digits with optional thousands commas (`1,234`; `3,4` is two numbers), decimals and exponent
  (`1.5e3`), or an integer fraction (`3/4`, `\\frac{3}{4}`, `\\dfrac`, `\\tfrac`). A sign (`-`, `+`, `−`) belongs
  to it only after a space, an operator or an opening bracket, so `10-5` is 10 and 5. Digits inside a word
  (`H2O`, `x2`) are not numbers. A percent sign is ignored (`25%` is 25), as are `$`, `\\$` and LaTeX spacing.
- `read_number`: the number a text is, exact (a Fraction): one number and, around it, nothing but `name =`
  before it, units in `\\text{}`, `^\\circ`, `$`, `%`, brackets and punctuation. None otherwise: `x+1`,
  `\\sqrt{2}`, `2\\pi`, `2^{10}` and `3, 4` are not numbers (use the math verifier for those).
- `anchored_answers`: what follows each "answer is" / "answer:" (any case) to the end of its line or the next
  "answer", or the next line that is not blank when the anchor ends its line. "To answer this" is no anchor.
- `normalise`: for string comparison: NFKC, `\\text{…}`-like wrappers and `$` removed, casefolded (unless told
  not to), whitespace collapsed, surrounding punctuation, quotes and markdown emphasis stripped.
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction
from typing import NamedTuple

_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_INTEGER_FRACTION = re.compile(r"\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_LATEX_SPACING = re.compile(r"\\[,!;: ]|\{,\}")  # `1{,}234` and `1\,234` are thousands separators
_NUMBER = re.compile(
    r"(?<![\w.)\]}])(?P<sign>[-+−])?"  # a sign only where it cannot be a binary operator
    r"(?<![\w.])(?P<digits>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
    r"(?P<exponent>[eE][-+]?\d{1,3}(?!\d))?"  # 1e999999999 would take Fraction minutes to build
    r"(?:/(?P<denominator>\d+))?"
)
_DECORATION = re.compile(r"\\(?:text|mathrm|mbox)\s*\{[^{}]*\}|\^\s*\{?\\circ\}?|°|\\[$%]|^\s*[^\W\d]\w*\s*=")
_NOT_A_NUMBER = re.compile(r"[^\W\d]|[\\^]")  # a letter, a LaTeX command or a power left beside the number
_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_EDGE_PUNCTUATION = " \t\n.,;:!?\"'`*_()[]"
# "Answer: …", "The final answer is …", "**Answer**: …": what follows, to the end of its line or the next
# anchor (or the next line that is not blank, when the anchor ends its own).
_ANSWER_ANCHOR = re.compile(r"(?i:\banswer\b)[*_]*[^\S\n]*(?i:is\b|:)[^\S\n]*(?:\n\s*)?"
                            r"(?P<rest>(?:(?!(?i:\banswer\b))[^\n])*)")


class Number(NamedTuple):
    text: str  # as written, e.g. "1,234"; a LaTeX fraction as "3/4"
    value: Fraction


def last_boxed(text: str) -> str | None:
    """The stripped content of the last box; None if there is no box, "" if it is empty or never closed."""
    starts = list(_BOX_START.finditer(text))
    if not starts:
        return None
    depth, position = 1, starts[-1].end()
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2  # an escaped character, `\{` and `\}` included
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return text[starts[-1].end():position].strip()
        position += 1
    return ""


def anchored_answers(text: str) -> list[str]:
    """What follows each "answer is" / "answer:" in text (see the module docstring), in order."""
    return [match["rest"].strip() for match in _ANSWER_ANCHOR.finditer(text)]


def numbers(text: str) -> list[Number]:
    """Every number in text, in order (see the module docstring for what counts as one)."""
    return [number for _, number in _numbers_in(_latex_as_text(text))]


def _latex_as_text(text: str) -> str:
    return _LATEX_SPACING.sub("", _INTEGER_FRACTION.sub(r"\1/\2", text))


def _numbers_in(text: str) -> list[tuple[re.Match, Number]]:
    found = []
    for match in _NUMBER.finditer(text):
        sign = "-" if match["sign"] in ("-", "−") else ""
        try:
            value = Fraction(sign + match["digits"].replace(",", "") + (match["exponent"] or "")) / int(
                match["denominator"] or 1)
        except (ValueError, ZeroDivisionError):  # x/0, or more digits than Python converts (int_max_str_digits)
            continue
        found.append((match, Number(match[0], value)))
    return found


def read_number(text: str) -> Number | None:
    """The number text is (see the module docstring); None if it is not exactly one number."""
    text = _latex_as_text(_DECORATION.sub(" ", text))
    found = _numbers_in(text)
    if len(found) != 1:
        return None
    match, number = found[0]
    return None if _NOT_A_NUMBER.search(text[:match.start()] + text[match.end():]) else number


def normalise(text: str, fold_case: bool = True) -> str:
    text = unicodedata.normalize("NFKC", text)
    while (unwrapped := _WRAPPER.sub(r"\1", text)) != text:  # nested wrappers: \text{\textbf{B}}
        text = unwrapped
    text = text.replace("\\$", "").replace("$", "")
    return " ".join((text.casefold() if fold_case else text).split()).strip(_EDGE_PUNCTUATION)
