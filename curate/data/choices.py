"""Multiple-choice options: any common input shape → labelled options, and how prompts show them.

`CHOICE` is the canonical option: `{"label", "text"}`; an item's `choices` is a list of them in input
order, texts stripped. Accepted shapes: a list of strings (labelled A, B, C, …); a list of objects
with a label (`label`, `key`, `letter`, `aoVal` or `id`, case-insensitive; positional when absent)
and a text (`text`, `content`, `value` or `option`), each possibly wrapped in a one-element list
(TAL); an object `{"A": text, …}`; an object of parallel lists `{"label": [...], "text": [...]}`
(ARC on the Hub); or JSON text of any of these (CSV). One column per option is read by
`curate.data.items` (`--choices-field A,B,C,D`).
"""

from __future__ import annotations

import json
import string
from collections import Counter
from typing import Any

import polars as pl

CHOICE = pl.Struct({"label": pl.String, "text": pl.String})
LABEL_KEYS = ("label", "key", "letter", "aoval", "id")  # matched case-insensitively
TEXT_KEYS = ("text", "content", "value", "option")
JSON_TYPE_NAMES = {int: "number", float: "number", bool: "boolean", list: "array", dict: "object", str: "string"}


def canonical_choices(value: Any) -> list[dict[str, str]] | None:
    """Options in any accepted shape (see the module docstring) → `[{"label", "text"}, …]` in input
    order; null stays null. Raises ValueError saying what is wrong with them."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("text that is not a list of options") from None
        if isinstance(value, str):
            raise ValueError("text that is not a list of options")
    if isinstance(value, list):
        return _labelled([_label_and_text(element) for element in value])
    if not isinstance(value, dict):
        raise ValueError(f"a {JSON_TYPE_NAMES.get(type(value), type(value).__name__)}, not a list of options")
    keys = {key.lower(): key for key in value}
    text_key = next((keys[k] for k in TEXT_KEYS if k in keys), None)
    if text_key is None:
        return _labelled([(label, text) for label, text in value.items() if text is not None])
    if not isinstance(value[text_key], list):
        raise ValueError("one option, not a list of options")
    label_key = next((keys[k] for k in LABEL_KEYS if k in keys), None)
    labels = value[label_key] if label_key else [None] * len(value[text_key])
    if not isinstance(labels, list) or len(labels) != len(value[text_key]):
        raise ValueError(f"{label_key!r} and {text_key!r} are not lists of the same length")
    return _labelled(list(zip(labels, value[text_key], strict=True)))


def _label_and_text(element: Any) -> tuple[Any, Any]:
    while isinstance(element, list) and len(element) == 1:  # TAL wraps each option in a list
        element = element[0]
    if not isinstance(element, dict):
        return None, element
    fields = {key.lower(): value for key, value in element.items()}
    label = next((fields[k] for k in LABEL_KEYS if fields.get(k) is not None), None)
    return label, next((fields[k] for k in TEXT_KEYS if fields.get(k) is not None), None)


def _labelled(options: list[tuple[Any, Any]]) -> list[dict[str, str]]:
    choices = []
    for position, (label, text) in enumerate(options, start=1):
        if isinstance(text, (list, dict)) or isinstance(label, (list, dict)):
            raise ValueError(f"option {position} is not a label and a text")
        text = _as_text(text)
        if not text:
            raise ValueError(f"option {position} has no text")
        if label is None and position > len(string.ascii_uppercase):
            raise ValueError(f"more than {len(string.ascii_uppercase)} options without labels")
        label = string.ascii_uppercase[position - 1] if label is None else _as_text(label)
        if not label:
            raise ValueError(f"option {position} has an empty label")
        choices.append({"label": label, "text": text})
    repeated = [label for label, count in Counter(c["label"] for c in choices).items() if count > 1]
    if repeated:
        raise ValueError(f"label {repeated[0]!r} names two options")
    return choices


def _as_text(value: Any) -> str:
    return (value if isinstance(value, str) else "" if value is None else json.dumps(value)).strip()


def format_choices(choices: list[dict[str, str]] | None) -> str:
    """Options as the judge, the exports and the verifiers show them: one `LABEL. text` line each."""
    return "\n".join(f"{choice['label']}. {choice['text']}" for choice in choices or ())
