"""Bad input data through the CLI: each case (an input → the one-line message naming what, where and
what to do), never a traceback, and never the internal `__row` column."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from conftest import assert_one_line_error, invoke

Writer = Callable[[Path], Path]


def text(name: str, content: str | bytes) -> Writer:
    def write(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path
    return write


def jsonl(*rows: dict | str) -> Writer:
    return text("in.jsonl", "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def parquet(frame: pl.DataFrame) -> Writer:
    def write(folder: Path) -> Path:
        frame.write_parquet(folder / "in.parquet")
        return folder / "in.parquet"
    return write


def folder_of_notes(folder: Path) -> Path:
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.txt").write_text("not a dataset")
    return folder / "notes"


Q = {"question": "Which is prime?"}

CASES = [
    # choices that cannot be read are bad rows with the reason
    ("choices-text", jsonl({**Q, "choices": "A or B"}), [],
     "unreadable choices in 'choices': text that is not a list of options at rows 1"),
    ("choices-number", jsonl({**Q, "choices": 5}), [], "unreadable choices in 'choices': a number, not a list"),
    ("choices-option-without-text", jsonl({**Q, "choices": [{"label": "A"}, {"label": "B", "text": "7"}]}), [],
     "option 1 has no text at rows 1"),
    ("choices-repeated-label", jsonl({**Q, "choices": [{"label": "A", "text": "4"}, {"label": "A", "text": "7"}]}),
     [], "label 'A' names two options"),
    ("choices-column-missing", text("in.csv", "question,opa,opb\nQ,4,7\n"), ["--choices-field", "opa,opx"],
     "no column 'opx' for choices (columns: ['question', 'opa', 'opb']); set --choices-field"),
    ("choices-column-nested", parquet(pl.DataFrame({"question": ["Q"], "A": [["4"]], "B": ["7"]})),
     ["--choices-field", "A,B"], "column 'A' (an option of --choices-field) holds List(String), not text"),
    # CSV
    ("csv-unclosed-quote", text("in.csv", 'question,answer\nq1,1\n"q2,2\nq3,3\n'), [],
     "in.csv, line 3: malformed CSV (unexpected end of data)"),
    ("csv-stray-quote", text("in.csv", 'question,answer\nq1,1\n"q"2,2\n'), [], "in.csv, line 3: malformed CSV"),
    ("csv-ragged-row", text("in.csv", "question,answer\nq1,1\nq2,2,extra\n"), [],
     "3 fields where the header has 2 (line 3) at rows 2"),
    ("csv-repeated-header", text("in.csv", "question,question\nq,q\n"), [],
     "in.csv, line 1: column 'question' appears twice in the header"),
    ("csv-invalid-utf8", text("in.csv", b"question\nq1\nq\xff2\n"), [],
     "in.csv, line 3: not valid UTF-8 (byte 0xff); save the file as UTF-8"),
    # JSON Lines and JSON
    ("jsonl-invalid-utf8", text("in.jsonl", b'{"question": "a"}\n{"question": "b\xff"}\n'), [],
     "invalid UTF-8 at rows 2"),
    ("jsonl-lone-surrogate", text("in.jsonl", '{"question": "a"}\n{"question": "b\\ud800"}\n'), [],
     "invalid Unicode (lone surrogate) at rows 2"),
    ("json-element-not-object", text("in.json", '[{"question": "a"}, 5]'), [], "element is not a JSON object at rows 2"),
    ("json-invalid", text("in.json", '[{"question": "a"},\n'), [], "in.json, line 2: invalid JSON"),
    ("reference-is-a-list", jsonl({**Q, "answer": ["7", "seven"]}), [],
     "field 'answer' (reference) holds List(String) values, not text; map a text field with --reference-field"),
    ("duplicate-content", jsonl({**Q, "answer": "7"}, {"id": "", **Q, "answer": "7"}), [],
     "duplicate content (same question, reference and choices as an earlier row) at rows 2"),
    ("unknown-question-field", jsonl({**Q, "answer": "7"}), ["--question-field", "problem"],
     "no column 'problem' for question (columns: ['question', 'answer']); set --question-field"),
    ("reserved-column-jsonl", jsonl({**Q, "__row": 3}), [], "field '__row' is reserved for row numbers at rows 1"),
    ("reserved-column-csv", text("in.csv", "question,__row\nq,1\n"), [],
     "in.csv, line 1: the column name '__row' is reserved for row numbers; rename it"),
    ("reserved-column-parquet", parquet(pl.DataFrame({"question": ["q"], "__row": [1]})), [],
     "in.parquet: the column name '__row' is reserved for row numbers; rename it"),
    # parquet
    ("parquet-int-question", parquet(pl.DataFrame({"question": [1, 2]})), [],
     "field 'question' must hold strings, but the column is Int64"),
    ("parquet-not-parquet", text("in.parquet", "question\nq\n"), [], "in.parquet is not a readable parquet file"),
    # inputs that are not a dataset at all
    ("folder-not-a-dataset", folder_of_notes, [],
     ("notes is a folder but not a datasets save_to_disk directory (it has no dataset_dict.json or state.json); "
      "give a .jsonl, .json, .parquet or .csv file")),
    ("hub-id-offline", lambda folder: "someorg/someset", [],
     "Hub dataset 'someorg/someset' is not available offline: HF_HUB_OFFLINE is set"),
    # nothing to score
    ("empty-jsonl", text("in.jsonl", ""), [], "in.jsonl: it holds no rows"),
    ("blank-jsonl", text("in.jsonl", "\n  \n\n"), [], "in.jsonl: it holds no rows"),
    ("empty-csv", text("in.csv", ""), [], "in.csv: it holds no rows"),
    ("header-only-csv", text("in.csv", "question,answer\n"), [], "in.csv: it holds no rows"),
    ("empty-json-array", text("in.json", "[]"), [], "in.json: it holds no rows"),
    ("empty-parquet", parquet(pl.DataFrame(schema={"question": pl.String})), [], "in.parquet: it holds no rows"),
    ("all-rows-quarantined", jsonl("{oops", {"question": " "}), ["--on-bad-rows", "quarantine"],
     "in.jsonl: all 2 row(s) are bad: invalid JSON"),
]


@pytest.mark.parametrize("write, args, expected", [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_input_is_one_line(tmp_path, monkeypatch, write, args, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    result = invoke("score", write(tmp_path / "data"), "--out", tmp_path / "run", *args)
    assert_one_line_error(result, expected)
    assert "__row" not in result.output.replace(expected, "")  # only where the input itself has one
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_missing_template_dir_is_one_line(tmp_path):
    assert_one_line_error(invoke("templates", "--template-dir", tmp_path / "absent"),
                          "template folder")
    result = invoke("score", "bundled:math-sample", "--out", tmp_path / "run", "--template-dir", tmp_path / "absent")
    assert_one_line_error(result, "does not exist or is not a folder (--template-dir)")
