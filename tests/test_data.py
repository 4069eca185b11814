"""Unit tests for curate/data/items.py (and curate/config.py's DataConfig): input rows → validated items."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import polars as pl
import pytest

import curate.data.readers as readers_module
from curate.config import DataConfig
from curate.data.choices import CHOICE
from curate.data.items import LoadedItems, content_id, fingerprint, load_items
from curate.data.readers import BUNDLED_DIR, resolve_source
from curate.errors import ConfigError, DataError, DereasonError

CANONICAL_COLUMNS = ["id", "question", "reference", "choices", "domain"]
ITEM_COLUMNS = CANONICAL_COLUMNS + ["extra"]  # `extra` exists only when the input has other fields
QUARANTINE_SCHEMA = {"row": pl.Int64, "reason": pl.String, "record": pl.String}
HASH_ID = re.compile(r"h-[0-9a-f]{16}")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def write_jsonl(path: Path, rows: list) -> Path:
    """Each entry is a dict (dumped as JSON) or a str (written verbatim as the line)."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def load(path: Path | str, **kwargs) -> LoadedItems:
    return load_items(DataConfig(source=str(path), **kwargs))


def quarantine(path: Path | str, **kwargs) -> LoadedItems:
    return load(path, on_bad_rows="quarantine", **kwargs)


def bad_rows_error(path: Path | str, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load(path, **kwargs)
    return str(info.value)


def options(*texts: str) -> list[dict[str, str]]:
    """Canonical choices labelled A, B, C, … in order."""
    return [{"label": chr(ord("A") + i), "text": text} for i, text in enumerate(texts)]


def rows_for(message: str, reason: str) -> str:
    """The 'at rows ...' list that the message gives for a reason (a regex fragment)."""
    match = re.search(rf"{reason}[^;]*? at rows ([0-9, ]+(?: and \d+ more)?)(?=[;.])", message)
    assert match, f"no '{reason} ... at rows N' in: {message}"
    return match.group(1)


ROWS = [
    {"id": "a1", "question": "What is 2+2?", "answer": "4", "domain": "math", "source": "gsm"},
    {"id": "a2", "question": "Name a noble gas.", "answer": "neon", "domain": "chemistry", "source": "sci"},
    {"id": "a3", "question": "Who wrote Hamlet?", "answer": "Shakespeare", "domain": "literature", "source": "trivia"},
]
EXPECTED = [
    {"id": r["id"], "question": r["question"], "reference": r["answer"], "choices": None,
     "domain": r["domain"], "extra": {"source": r["source"]}}
    for r in ROWS
]


def _jsonl(tmp_path: Path, rows: list[dict]) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", rows)


def _ndjson(tmp_path: Path, rows: list[dict]) -> Path:
    return write_jsonl(tmp_path / "in.ndjson", rows)


def _parquet(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "in.parquet"
    pl.DataFrame(rows).write_parquet(path)
    return path


def _csv(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "in.csv"
    pl.DataFrame(rows).write_csv(path)
    return path


def _dataset_dir(tmp_path: Path, rows: list[dict]) -> Path:
    import datasets

    path = tmp_path / "ds"
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def _dataset_dict_dir(tmp_path: Path, rows: list[dict]) -> Path:
    import datasets

    path = tmp_path / "dsdict"
    decoy = [{**r, "question": "DECOY " + r["question"]} for r in rows]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                          "test": datasets.Dataset.from_list(decoy)}).save_to_disk(str(path))
    return path


WRITERS = [_jsonl, _ndjson, _parquet, _csv, _dataset_dir, _dataset_dict_dir]


# --------------------------------------------------------------------------------------------
# DataConfig
# --------------------------------------------------------------------------------------------

def test_dataconfig_defaults():
    config = DataConfig(source="x.jsonl")
    assert config.split == "train"
    assert config.question_field == "question"
    assert (config.id_field, config.reference_field, config.choices_field, config.domain_field) == (None,) * 4
    assert config.on_bad_rows == "error"
    assert config.limit is None


@pytest.mark.parametrize("kwargs, fragment", [
    ({"source": ""}, "empty"),
    ({"source": "x.jsonl", "on_bad_rows": "drop"}, "on_bad_rows"),
    ({"source": "x.jsonl", "on_bad_rows": "skip"}, "'skip'"),
    ({"source": "x.jsonl", "limit": 0}, "limit"),
    ({"source": "x.jsonl", "limit": -5}, "-5"),
])
def test_dataconfig_rejects_invalid(kwargs, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        DataConfig(**kwargs)


def test_dataconfig_accepts_valid_limit_and_is_frozen():
    config = DataConfig(source="x.jsonl", limit=1, on_bad_rows="quarantine")
    assert config.limit == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.limit = 2  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Input formats
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__.strip("_"))
def test_every_format_loads_the_same_items(tmp_path, writer):
    path = writer(tmp_path, ROWS)
    loaded = load(path)
    assert isinstance(loaded, LoadedItems)
    assert loaded.items.columns == ITEM_COLUMNS
    assert loaded.items.schema["id"] == pl.String
    assert loaded.items.schema["question"] == pl.String
    assert loaded.items.to_dicts() == EXPECTED
    assert loaded.quarantined.height == 0
    assert dict(loaded.quarantined.schema) == QUARANTINE_SCHEMA
    assert loaded.source == str(path)


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__.strip("_"))
def test_every_format_gives_same_content_ids_and_fingerprint(tmp_path, writer):
    rows = [{k: v for k, v in r.items() if k != "id"} for r in ROWS]
    reference = load(write_jsonl(tmp_path / "reference.jsonl", rows)).items
    items = load(writer(tmp_path, rows)).items
    assert items["id"].to_list() == [content_id(r["question"], r["answer"]) for r in rows]
    assert fingerprint(items) == fingerprint(reference)


@pytest.mark.parametrize("writer", [_jsonl, _parquet, _dataset_dir], ids=["jsonl", "parquet", "dataset"])
def test_choices_list_of_strings_get_letters(tmp_path, writer):
    rows = [{"question": "Pick the prime.", "choices": ["4", "7", "9"]},
            {"question": "Pick the even.", "choices": ["3", "8"]}]
    items = load(writer(tmp_path, rows)).items
    assert items.schema["choices"] == pl.List(CHOICE)
    assert items["choices"].to_list() == [options("4", "7", "9"), options("3", "8")]


def test_dataset_dict_split_is_selected(tmp_path):
    path = _dataset_dict_dir(tmp_path, ROWS)
    test = load(path, split="test").items
    assert test["question"].to_list() == ["DECOY " + r["question"] for r in ROWS]
    assert load(path, split="train").items["question"].to_list() == [r["question"] for r in ROWS]


def test_dataset_dict_unknown_split(tmp_path):
    path = _dataset_dict_dir(tmp_path, ROWS)
    message = bad_rows_error(path, split="validation")
    assert "'validation'" in message
    assert "'train'" in message and "'test'" in message


def test_dataset_dir_row_numbers_for_bad_rows(tmp_path):
    rows = [{"question": "ok"}, {"question": ""}, {"question": "fine"}, {"question": "  "}]
    message = bad_rows_error(_dataset_dir(tmp_path, rows))
    assert rows_for(message, "missing or empty 'question'") == "2, 4"


def test_csv_keeps_cells_as_written(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,question,answer,score\n007,Q one,0.50,3\n,Q two,,\n", encoding="utf-8")
    items = load(path).items
    assert items["id"].to_list() == ["007", content_id("Q two", None)]
    assert items["reference"].to_list() == ["0.50", None]
    assert items["extra"].to_list() == [{"score": "3"}, {"score": None}]


def test_csv_with_header_only_is_refused(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("question,answer\n", encoding="utf-8")
    assert bad_rows_error(path).startswith(f"no items in {path}: it holds no rows")


# --------------------------------------------------------------------------------------------
# Sources: paths, bundled samples, Hub ids
# --------------------------------------------------------------------------------------------

def test_nonexistent_local_path_without_slash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="'missing.jsonl' does not exist"):
        load("missing.jsonl")


def test_nonexistent_absolute_path(tmp_path):
    path = tmp_path / "sub" / "missing.jsonl"
    with pytest.raises(DataError, match="does not exist"):
        load(path)


@pytest.mark.parametrize("source", ["./org/name", "a/b/c", "/abs/name"])
def test_nonexistent_paths_that_are_not_hub_ids(tmp_path, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        resolve_source(source)


def test_hub_id_is_passed_through(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_source("org/name") == "org/name"


def test_hub_id_is_loaded_with_datasets_load_dataset(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, split=None, **kwargs):
        calls.append((name, split))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load("some-org/some-set", split="validation")
    assert calls == [("some-org/some-set", "validation")]
    assert loaded.items.to_dicts() == EXPECTED
    assert loaded.source == "some-org/some-set"


def test_existing_local_path_with_one_slash_is_read_locally(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "x.jsonl", ROWS)
    monkeypatch.chdir(tmp_path)
    assert resolve_source("data/x.jsonl") == Path("data/x.jsonl")
    assert load("data/x.jsonl").items.to_dicts() == EXPECTED


@pytest.mark.parametrize("suffix", [".txt", ".tsv", ""])
def test_unsupported_file_type(tmp_path, suffix):
    path = tmp_path / f"input{suffix}"
    path.write_text('{"question": "q"}\n', encoding="utf-8")
    message = bad_rows_error(path)
    assert "unsupported input type" in message
    assert repr(suffix) in message


def test_unknown_bundled_name(monkeypatch, tmp_path):
    write_jsonl(tmp_path / "demo.jsonl", ROWS)
    monkeypatch.setattr(readers_module, "BUNDLED_DIR", tmp_path)
    with pytest.raises(DataError) as info:
        load("bundled:no-such-sample")
    assert "'no-such-sample'" in str(info.value)
    assert "'demo'" in str(info.value)  # lists what is bundled


def test_unknown_bundled_name_with_real_dir():
    with pytest.raises(DataError, match="no bundled dataset 'definitely-not-bundled'"):
        load("bundled:definitely-not-bundled")


def test_bundled_sample_loads_from_bundled_dir(monkeypatch, tmp_path):
    path = write_jsonl(tmp_path / "demo.jsonl", ROWS)
    monkeypatch.setattr(readers_module, "BUNDLED_DIR", tmp_path)
    assert readers_module.bundled_datasets() == {"demo": path}
    loaded = load("bundled:demo")
    assert loaded.items.to_dicts() == EXPECTED
    assert loaded.source == str(path)


@pytest.mark.skipif(not (BUNDLED_DIR / "math-sample.jsonl").exists(),
                    reason="curate/bundled/math-sample.jsonl does not exist yet")
def test_bundled_math_sample():
    loaded = load("bundled:math-sample")
    assert loaded.items.height > 0
    assert loaded.quarantined.height == 0
    assert loaded.items.columns[:5] == CANONICAL_COLUMNS
    assert loaded.items["question"].str.strip_chars().str.len_chars().min() > 0
    assert loaded.items["id"].n_unique() == loaded.items.height


# --------------------------------------------------------------------------------------------
# Field mapping
# --------------------------------------------------------------------------------------------

def test_explicit_field_mapping(tmp_path):
    rows = [{"uid": "u1", "problem": "Integrate x.", "solution": "x^2/2", "options": ["a", "b"],
             "subject": "calculus", "answer": "not the reference", "id": "not the id",
             "domain": "not the domain", "choices": ["not", "these"]}]
    items = load(_jsonl(tmp_path, rows), id_field="uid", question_field="problem", reference_field="solution",
                 choices_field="options", domain_field="subject").items
    assert items.to_dicts() == [{
        "id": "u1", "question": "Integrate x.", "reference": "x^2/2", "choices": options("a", "b"),
        "domain": "calculus",
        "extra": {"answer": "not the reference", "id": "not the id", "domain": "not the domain",
                  "choices": ["not", "these"]},
    }]


def test_conventional_fields_are_used_when_present(tmp_path):
    rows = [{"id": "c1", "question": "Q", "answer": "A", "choices": ["x", "y"], "domain": "D"}]
    items = load(_jsonl(tmp_path, rows)).items
    row = items.row(0, named=True)
    assert (row["id"], row["reference"], row["choices"], row["domain"]) == ("c1", "A", options("x", "y"), "D")
    assert items.columns == CANONICAL_COLUMNS  # nothing left over, so no `extra` column


def test_conventional_fields_absent_are_null(tmp_path):
    items = load(_jsonl(tmp_path, [{"question": "Q", "solution": "S"}])).items
    row = items.row(0, named=True)
    assert row["reference"] is None and row["choices"] is None and row["domain"] is None
    assert row["extra"] == {"solution": "S"}
    assert HASH_ID.fullmatch(row["id"])


@pytest.mark.parametrize("option, name", [
    ("question_field", "problem"),
    ("id_field", "uid"),
    ("reference_field", "solution"),
    ("choices_field", "options"),
    ("domain_field", "subject"),
])
@pytest.mark.parametrize("writer", [_jsonl, _csv, _parquet], ids=["jsonl", "csv", "parquet"])
def test_explicit_field_that_does_not_exist(tmp_path, option, name, writer):
    path = writer(tmp_path, ROWS)
    message = bad_rows_error(path, **{option: name})
    assert f"no column {name!r}" in message
    assert "['id', 'question', 'answer', 'domain', 'source']" in message  # lists the columns
    assert f"--{option.replace('_', '-')}" in message


def test_default_question_field_missing(tmp_path):
    message = bad_rows_error(_jsonl(tmp_path, [{"problem": "P", "answer": "A"}]))
    assert "no column 'question'" in message
    assert "'problem'" in message and "'answer'" in message


def test_extra_fields_carried_through_untouched(tmp_path):
    rows = [
        {"question": "Q1", "level": 3, "ratio": 0.25, "flag": True, "tags": ["x", "y"],
         "meta": {"src": "web", "n": 1}, "note": None},
        {"question": "Q2", "level": 5, "ratio": 1.5, "flag": False, "tags": [],
         "meta": {"src": "book", "n": 2}, "note": "see p. 4"},
    ]
    items = load(_jsonl(tmp_path, rows)).items
    assert items["extra"].to_list() == [{k: v for k, v in r.items() if k != "question"} for r in rows]
    assert items.schema["extra"].to_schema()["level"] == pl.Int64  # a JSON number stays a number


def test_extra_from_parquet_keeps_types(tmp_path):
    rows = [{"question": "Q1", "level": 3, "meta": {"k": "v"}}, {"question": "Q2", "level": 4, "meta": {"k": "w"}}]
    items = load(_parquet(tmp_path, rows)).items
    assert items["extra"].to_list() == [{"level": 3, "meta": {"k": "v"}}, {"level": 4, "meta": {"k": "w"}}]


def test_non_string_id_and_reference_become_strings(tmp_path):
    rows = [{"id": 17, "question": "Q1", "answer": 42}, {"id": 18, "question": "Q2", "answer": 7}]
    items = load(_jsonl(tmp_path, rows)).items
    assert items["id"].to_list() == ["17", "18"]
    assert items["reference"].to_list() == ["42", "7"]


def test_numeric_reference_and_hashed_id_do_not_depend_on_other_rows(tmp_path):
    alone = load(write_jsonl(tmp_path / "a.jsonl", [{"question": "Q1", "answer": 42}])).items
    mixed = load(write_jsonl(tmp_path / "b.jsonl", [{"question": "Q1", "answer": 42},
                                                    {"question": "Q2", "answer": 3.5}])).items
    assert alone["reference"].to_list() == ["42"]
    assert mixed["reference"][0] == "42"
    assert mixed["id"][0] == alone["id"][0]


def test_choices_not_a_list(tmp_path):
    message = bad_rows_error(_jsonl(tmp_path, [{"question": "Q", "choices": "A or B"}]))
    assert "'choices'" in message
    assert "list" in message


# --------------------------------------------------------------------------------------------
# Choices: every common shape → labelled options
# --------------------------------------------------------------------------------------------

ARC_CHOICES = [{"text": " dry palms ", "label": "A"}, {"text": "wet palms", "label": "B"}]
TAL_CHOICES = [[{"aoVal": "A", "content": "$$0$$ "}], [{"aoVal": "B", "content": "odd\u3000 "}]]

CHOICE_SHAPES = [
    pytest.param(["x", " y "], options("x", "y"), id="strings"),
    pytest.param([4, 7.5, True], options("4", "7.5", "true"), id="numbers"),
    pytest.param(ARC_CHOICES, options("dry palms", "wet palms"), id="arc"),
    pytest.param([{"text": "x", "label": "1"}, {"text": "y", "label": "2"}],
                 [{"label": "1", "text": "x"}, {"label": "2", "text": "y"}], id="arc-digit-labels"),
    pytest.param(TAL_CHOICES, options("$$0$$", "odd"), id="tal"),
    pytest.param([{"key": "A", "value": "x"}, {"letter": "B", "option": "y"}, {"id": "C", "content": "z"},
                  {"Label": "D", "Text": "w"}], options("x", "y", "z", "w"), id="key-spellings"),
    pytest.param([{"text": "x"}, {"content": "y"}], options("x", "y"), id="objects-without-labels"),
    pytest.param({"A": "x", "C": "y", "B": "z"}, [{"label": "A", "text": "x"}, {"label": "C", "text": "y"},
                                                  {"label": "B", "text": "z"}], id="label-to-text-object"),
    pytest.param({"text": ["x", "y"], "label": ["A", "B"]}, options("x", "y"), id="parallel-lists"),
    pytest.param({"text": ["x", "y"]}, options("x", "y"), id="parallel-text-only"),
    pytest.param('[{"label": "A", "text": "x"}]', options("x"), id="json-text"),
    pytest.param([], [], id="empty-list"),
    pytest.param(None, None, id="null"),
]


@pytest.mark.parametrize("value, expected", CHOICE_SHAPES)
def test_choice_shapes_become_labelled_options(tmp_path, value, expected):
    items = load(_jsonl(tmp_path, [{"question": "Q", "choices": value}, {"question": "plain"}])).items
    assert items.schema["choices"] == pl.List(CHOICE)
    assert items["choices"].to_list() == [expected, None]


@pytest.mark.parametrize("value", [ARC_CHOICES, TAL_CHOICES, {"text": ["x", "y"], "label": ["A", "B"]}],
                         ids=["arc", "tal", "parallel-lists"])
@pytest.mark.parametrize("writer", [_parquet, _dataset_dir], ids=["parquet", "dataset"])
def test_choice_shapes_from_typed_columns(tmp_path, writer, value):
    from_json = load(_jsonl(tmp_path, [{"question": "Q", "choices": value}])).items
    items = load(writer(tmp_path, [{"question": "Q", "choices": value}])).items
    assert items["choices"].to_list() == from_json["choices"].to_list()
    assert items["id"].to_list() == from_json["id"].to_list()


def test_tal_choices_field_and_real_shaped_rows_keep_their_types(tmp_path, caplog):
    rows = [{"problem": "P1", "answer_option_list": TAL_CHOICES, "answer_value": "A", "tags": ["a"]},
            {"problem": "P2", "answer_option_list": TAL_CHOICES[:1], "answer_value": "B", "tags": []}]
    items = load(_jsonl(tmp_path, rows), question_field="problem", choices_field="answer_option_list",
                 reference_field="answer_value").items
    assert items["choices"].to_list() == [options("$$0$$", "odd"), options("$$0$$")]
    assert items["extra"].to_list() == [{"tags": ["a"]}, {"tags": []}]
    assert "mix JSON types" not in caplog.text


def test_choices_from_csv_cells_holding_json(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text('question,choices\nQ1,"[""x"", ""y""]"\nQ2,"{""A"": ""z""}"\nQ3,\n', encoding="utf-8")
    assert load(path).items["choices"].to_list() == [options("x", "y"), options("z"), None]


@pytest.mark.parametrize("header, field, labels", [
    ("opa,opb,opc", "opa,opb,opc", "ABC"),
    ("A,B,C", "A, B, C", "ABC"),
    ("1,2,3", "1,2,3", "123"),
    ("A,B,C", "C,A,B", "CAB"),
])
def test_choices_from_one_column_per_option(tmp_path, header, field, labels):
    path = tmp_path / "in.csv"
    path.write_text(f"question,{header},answer\nQ1, x ,y,z,A\nQ2,u,,w,B\nQ3,,,,C\n", encoding="utf-8")
    items = load(path, choices_field=field).items
    columns = [name.strip() for name in field.split(",")]
    cells = {"Q1": dict(zip(header.split(","), ["x", "y", "z"])), "Q2": dict(zip(header.split(","), ["u", "", "w"]))}
    expected = [[{"label": label, "text": cells[q][name]} for label, name in zip(labels, columns) if cells[q][name]]
                for q in ("Q1", "Q2")]
    assert items["choices"].to_list() == [*expected, None]  # no option in any column: no choices
    assert items.columns == CANONICAL_COLUMNS  # the option columns are used, not extra


def test_choices_from_numeric_option_columns(tmp_path):
    items = load(_parquet(tmp_path, [{"question": "Q", "opa": 4, "opb": 7}]), choices_field="opa,opb").items
    assert items["choices"].to_list() == [options("4", "7")]


UNREADABLE_CHOICES = [
    pytest.param("A or B", "text that is not a list of options", id="text"),
    pytest.param(5, "a number, not a list of options", id="number"),
    pytest.param([{"label": "A"}], "option 1 has no text", id="no-text"),
    pytest.param(["x", "  "], "option 2 has no text", id="blank-text"),
    pytest.param(["x", None], "option 2 has no text", id="null-option"),
    pytest.param([["x", "y"]], "option 1 is not a label and a text", id="nested-list"),
    pytest.param([{"label": "A", "text": "x"}, {"label": "A", "text": "y"}], "label 'A' names two options",
                 id="repeated-label"),
    pytest.param({"label": "A", "text": "x"}, "one option, not a list of options", id="one-option"),
    pytest.param({"label": ["A"], "text": ["x", "y"]}, "'label' and 'text' are not lists of the same length",
                 id="parallel-lengths"),
    pytest.param([str(i) for i in range(27)], "more than 26 options without labels", id="27-unlabelled"),
    pytest.param([{"label": " ", "text": "x"}], "option 1 has an empty label", id="blank-label"),
]


@pytest.mark.parametrize("value, reason", UNREADABLE_CHOICES)
def test_unreadable_choices_are_bad_rows(tmp_path, value, reason):
    path = _jsonl(tmp_path, [{"id": "g", "question": "Q"}, {"id": "b", "question": "Q", "choices": value}])
    assert rows_for(bad_rows_error(path), re.escape(f"unreadable choices in 'choices': {reason}")) == "2"
    loaded = quarantine(path)
    assert loaded.items["id"].to_list() == ["g"]
    assert loaded.quarantined["reason"].to_list() == [f"unreadable choices in 'choices': {reason}"]


def test_unreadable_choices_in_parquet_are_bad_rows(tmp_path):
    path = _parquet(tmp_path, [{"question": "Q1", "choices": ["x"]}, {"question": "Q2", "choices": ["x", ""]}])
    loaded = quarantine(path)
    assert loaded.items["question"].to_list() == ["Q1"]
    assert loaded.quarantined.select("row", "reason").rows() == [
        (2, "unreadable choices in 'choices': option 2 has no text")]
    assert json.loads(loaded.quarantined["record"][0]) == {"question": "Q2", "choices": ["x", ""]}


def test_content_id_hashes_labels_and_texts_of_choices():
    assert content_id("What is 2+2?", "4") == "h-56dd4514f52bbe28"  # as at 8cddf10: plain ids never change
    assert content_id("Q", None, None) == content_id("Q", None, []) == "h-64129bb2d8542819"
    ab = content_id("Q", "A", options("x", "y"))
    assert ab != content_id("Q", "A")
    assert ab != content_id("Q", "A", [{"label": "B", "text": "x"}, {"label": "A", "text": "y"}])
    assert ab != content_id("Q", "A", options("x", "z"))
    assert ab == content_id("Q", "A", options("x", "y"))


def test_same_texts_under_other_labels_are_different_items(tmp_path):
    rows = [{"question": "Q", "choices": {"A": "x", "B": "y"}}, {"question": "Q", "choices": {"B": "x", "A": "y"}}]
    loaded = load(_jsonl(tmp_path, rows))
    assert loaded.items["id"].n_unique() == 2


def test_fingerprint_follows_choices_in_files(tmp_path):
    rows = [{"id": "a", "question": "Q", "choices": ["x", "y"]}]
    relabelled = [{"id": "a", "question": "Q", "choices": [{"label": "1", "text": "x"}, {"label": "2", "text": "y"}]}]
    same = [{"id": "a", "question": "Q", "choices": [{"label": "A", "text": " x"}, {"label": "B", "text": "y "}]}]
    a = fingerprint(load(write_jsonl(tmp_path / "a.jsonl", rows)).items)
    assert a != fingerprint(load(write_jsonl(tmp_path / "b.jsonl", relabelled)).items)
    assert a == fingerprint(load(write_jsonl(tmp_path / "c.jsonl", same)).items)


# --------------------------------------------------------------------------------------------
# Encodings, JSON arrays, CSV structure, shapes Polars cannot reconcile
# --------------------------------------------------------------------------------------------

def test_jsonl_with_bom_reads_row_one(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"question": "Q1"}\n{"question": "Q2"}\n')
    assert load(path).items["question"].to_list() == ["Q1", "Q2"]


def test_csv_with_bom_reads_its_header(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"\xef\xbb\xbfquestion,answer\r\nQ1,1\r\n")
    items = load(path).items
    assert items.select("question", "reference").rows() == [("Q1", "1")]


def test_csv_quoted_cells_with_commas_and_line_breaks(tmp_path):
    path = tmp_path / "in.csv"
    long_proof = "step " * 40_000  # longer than the csv module's default field limit
    path.write_text(f'question,answer\n"Add 1, 2\nand 3","6"\n"Say ""hi""",hi\n{long_proof},x\n', encoding="utf-8")
    assert load(path).items["question"].to_list() == ["Add 1, 2\nand 3", 'Say "hi"', long_proof]


def test_ragged_csv_rows_are_quarantined_with_their_line(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text('question,answer\n"two\nlines",1\nq2\nq3,3\n', encoding="utf-8")
    loaded = quarantine(path)
    assert loaded.items["question"].to_list() == ["two\nlines", "q3"]
    assert loaded.quarantined.rows() == [(2, "1 fields where the header has 2 (line 4)", '["q2"]')]


def test_invalid_utf8_line_in_jsonl_is_a_bad_row(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"question": "ok"}\n{"question": "caf\xe9"}\n')
    loaded = quarantine(path)
    assert loaded.items["question"].to_list() == ["ok"]
    assert loaded.quarantined.rows() == [(2, "invalid UTF-8", '{"question": "caf\ufffd"}')]


@pytest.mark.parametrize("field", ["question", "answer", "note"])
def test_lone_surrogate_is_a_bad_row(tmp_path, field):
    path = tmp_path / "in.jsonl"
    path.write_text('{"question": "ok"}\n' + json.dumps({"question": "Q", field: "x\ud800"}) + "\n",
                    encoding="utf-8")
    loaded = quarantine(path)
    assert loaded.items["question"].to_list() == ["ok"]
    assert loaded.quarantined.select("row", "reason").rows() == [(2, "invalid Unicode (lone surrogate)")]
    assert load(write_jsonl(tmp_path / "pair.jsonl", [{"question": "\ud83d\ude00"}])).items.height == 1  # a pair is fine


def test_json_array_file(tmp_path):
    path = tmp_path / "in.json"
    path.write_text(json.dumps([{"question": "Q1", "answer": 1}, "junk", {"question": "Q3"}], indent=2))
    loaded = quarantine(path)
    assert loaded.items.select("question", "reference").rows() == [("Q1", "1"), ("Q3", None)]
    assert loaded.quarantined.select("row", "reason").rows() == [(2, "element is not a JSON object")]


def test_json_file_holding_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "in.json", ROWS)
    assert load(path).items.to_dicts() == EXPECTED


def test_nested_values_of_different_shapes_are_carried_as_text(tmp_path, caplog):
    rows = [{"question": "Q1", "meta": [[{"a": 1}]]}, {"question": "Q2", "meta": [{"a": 1}]}]
    items = load(_jsonl(tmp_path, rows)).items
    assert items["extra"].to_list() == [{"meta": '[[{"a": 1}]]'}, {"meta": '[{"a": 1}]'}]
    assert "['meta'] mix JSON types" in caplog.text


def test_hub_dataset_with_unknown_split(monkeypatch):
    import datasets

    def unknown_split(name, split=None, **kwargs):
        raise ValueError(f'Unknown split "{split}". Should be one of [\'train\'].')

    monkeypatch.setattr(datasets, "load_dataset", unknown_split)
    with pytest.raises(DataError, match=r"Hub dataset 'org/set': Unknown split \"dev\""):
        load("org/set", split="dev")


def test_question_column_not_strings_in_parquet(tmp_path):
    path = _parquet(tmp_path, [{"question": 1}, {"question": 2}])
    message = bad_rows_error(path)
    assert "'question'" in message
    assert "Int64" in message


@pytest.mark.parametrize(("values", "as_text"), [
    (("text", {"k": 1}), ["text", '{"k": 1}']),
    ((1, [1, 2]), ["1", "[1, 2]"]),
    ((7, "seven"), ["7", "seven"]),
    ((42, 3.5), ["42", "3.5"]),
], ids=["str-object", "number-array", "number-string", "int-float"])
def test_extra_field_with_mixed_json_types_is_carried_as_text(tmp_path, caplog, values, as_text):
    """A Polars column has one type: a field whose JSON type varies by row is kept as text, each
    value as written (never widened by its neighbours), with a warning naming the field."""
    rows = [{"question": f"Q{i}", "meta": v} for i, v in enumerate(values)]
    items = load(_jsonl(tmp_path, rows)).items
    assert items["extra"].to_list() == [{"meta": v} for v in as_text]
    assert "['meta'] mix JSON types" in caplog.text


# --------------------------------------------------------------------------------------------
# Content-hash ids
# --------------------------------------------------------------------------------------------

def test_content_id_format_and_stability():
    a = content_id("What is 2+2?", "4")
    assert HASH_ID.fullmatch(a)
    assert content_id("What is 2+2?", "4") == a
    assert content_id("What is 2+2?", "5") != a
    assert content_id("What is 2+3?", "4") != a
    assert content_id("What is 2+2?", None) != a


def test_ids_are_hashed_when_no_id_column(tmp_path):
    rows = [{"question": "Q1", "answer": "A1"}, {"question": "Q2"}]
    items = load(_jsonl(tmp_path, rows)).items
    assert items["id"].to_list() == [content_id("Q1", "A1"), content_id("Q2", None)]
    assert all(HASH_ID.fullmatch(i) for i in items["id"].to_list())


def test_hashed_ids_stable_across_calls_and_files(tmp_path):
    rows = [{"question": "Q1", "answer": "A1"}, {"question": "Q2", "answer": "A2"}]
    first = load(write_jsonl(tmp_path / "one.jsonl", rows)).items["id"].to_list()
    second = load(write_jsonl(tmp_path / "one.jsonl", rows)).items["id"].to_list()
    extra_rows = [{**r, "unrelated": i} for i, r in enumerate(rows)]
    third = load(write_jsonl(tmp_path / "two.jsonl", list(reversed(extra_rows)))).items["id"].to_list()
    assert first == second
    assert third == list(reversed(first))  # the id follows the content, not the position


@pytest.mark.parametrize("missing", [None, "", "   ", "\t"], ids=["null", "empty", "spaces", "tab"])
def test_null_or_blank_id_is_hashed(tmp_path, missing):
    rows = [{"id": "keep-me", "question": "Q1"}, {"id": missing, "question": "Q2", "answer": "A2"}]
    items = load(_jsonl(tmp_path, rows)).items
    assert items["id"].to_list() == ["keep-me", content_id("Q2", "A2")]


def test_rows_without_id_column_key_are_hashed(tmp_path):
    rows = [{"id": "x1", "question": "Q1"}, {"question": "Q2"}]
    items = load(_jsonl(tmp_path, rows)).items
    assert items["id"].to_list() == ["x1", content_id("Q2", None)]


def test_different_content_gives_different_hashed_ids(tmp_path):
    rows = [{"question": "Q"}, {"question": "Q "}, {"question": "q"}, {"question": "Q", "answer": "A"},
            {"question": "Q", "answer": "B"}]
    ids = load(_jsonl(tmp_path, rows)).items["id"].to_list()
    assert len(set(ids)) == 5


def test_same_question_different_choices_get_different_ids(tmp_path):
    rows = [{"question": "Which of the following is true?", "choices": ["2>1", "1>2"]},
            {"question": "Which of the following is true?", "choices": ["a=a", "a!=a"]}]
    loaded = quarantine(_jsonl(tmp_path, rows))
    assert loaded.quarantined.height == 0
    assert loaded.items["id"].n_unique() == 2


# --------------------------------------------------------------------------------------------
# Bad rows
# --------------------------------------------------------------------------------------------

GOOD_1 = {"id": "g1", "question": "Good one?"}
GOOD_2 = {"id": "g2", "question": "Good two?"}

BAD_CASES = [
    # (bad line written at line 3 of 5, reason regex, kept ids)
    pytest.param({"id": "b", "text": "no question key"}, r"missing or empty 'question'", id="missing-key"),
    pytest.param({"id": "b", "question": None}, r"missing or empty 'question'", id="null"),
    pytest.param({"id": "b", "question": ""}, r"missing or empty 'question'", id="empty"),
    pytest.param({"id": "b", "question": "  \t \n"}, r"missing or empty 'question'", id="whitespace"),
    pytest.param({"id": "b", "question": 12}, r"'question' is a JSON number, not a string", id="int"),
    pytest.param({"id": "b", "question": 1.5}, r"'question' is a JSON number, not a string", id="float"),
    pytest.param({"id": "b", "question": True}, r"'question' is a JSON boolean, not a string", id="bool"),
    pytest.param({"id": "b", "question": ["a"]}, r"'question' is a JSON array, not a string", id="array"),
    pytest.param({"id": "b", "question": {"t": "a"}}, r"'question' is a JSON object, not a string", id="object"),
    pytest.param('{"id": "b", "question": "unterminated', r"invalid JSON", id="invalid-json"),
    pytest.param("not json at all", r"invalid JSON", id="garbage"),
    pytest.param('["a", "list"]', r"line is not a JSON object", id="array-line"),
    pytest.param('"just a string"', r"line is not a JSON object", id="string-line"),
    pytest.param({"id": "g1", "question": "Same id as line 1"}, r"duplicate id", id="duplicate"),
]


def _bad_file(tmp_path: Path, bad) -> Path:
    # line 2 is blank (skipped but counted), so the bad row sits on line 4
    return write_jsonl(tmp_path / "in.jsonl", [GOOD_1, "", {"id": "g3", "question": "Good three?"}, bad, GOOD_2])


@pytest.mark.parametrize("bad, reason", BAD_CASES)
def test_bad_row_raises_naming_line_and_reason(tmp_path, bad, reason):
    message = bad_rows_error(_bad_file(tmp_path, bad))
    assert "1 bad row(s)" in message
    assert rows_for(message, reason) == "4"
    assert str(tmp_path / "in.jsonl") in message
    assert "quarantine" in message  # says how to set them aside


@pytest.mark.parametrize("bad, reason", BAD_CASES)
def test_bad_row_quarantined_and_good_rows_kept(tmp_path, bad, reason):
    loaded = quarantine(_bad_file(tmp_path, bad))
    assert loaded.items["id"].to_list() == ["g1", "g3", "g2"]
    assert dict(loaded.quarantined.schema) == QUARANTINE_SCHEMA
    assert loaded.quarantined["row"].to_list() == [4]
    assert re.search(reason, loaded.quarantined["reason"][0])
    assert loaded.items.height + loaded.quarantined.height == 4  # 4 non-blank input rows, none lost


def test_quarantine_records_hold_the_row(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "k", "question": "kept", "topic": "t0"},
        '{"broken": ',
        {"id": "e", "question": "   ", "topic": "t2"},
        {"id": "k", "question": "dup", "answer": "A", "topic": "t3"},
        {"id": "n", "question": 5},
    ])
    loaded = quarantine(path)
    q = loaded.quarantined
    assert q["row"].to_list() == [2, 3, 4, 5]
    assert q["record"][0] == '{"broken": '  # the unreadable line as written
    empty = json.loads(q["record"][1])  # the row as read, under its input field names
    assert (empty["question"], empty["id"], empty["topic"]) == ("   ", "e", "t2")
    dup = json.loads(q["record"][2])
    assert (dup["question"], dup["answer"], dup["id"], dup["topic"]) == ("dup", "A", "k", "t3")
    assert q["reason"][2] == "duplicate id k (first at row 1)"
    assert json.loads(q["record"][3]) == {"id": "n", "question": 5}
    assert loaded.items["question"].to_list() == ["kept"]


def test_error_message_groups_reasons_with_row_lists(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "1", "question": "ok"},          # 1
        {"id": "2", "question": ""},            # 2
        "{oops",                                # 3
        {"id": "1", "question": "again"},       # 4
        {"id": "5", "question": None},          # 5
        {"id": "6", "question": 6},             # 6
        {"id": "1", "question": "third"},       # 7
        "[]",                                   # 8
    ])
    message = bad_rows_error(path)
    assert "7 bad row(s)" in message
    assert rows_for(message, "missing or empty 'question'") == "2, 5"
    assert rows_for(message, "invalid JSON") == "3"
    assert rows_for(message, "duplicate id") == "4, 7"
    assert rows_for(message, "JSON number") == "6"
    assert rows_for(message, "not a JSON object") == "8"

    loaded = quarantine(path)
    assert loaded.quarantined["row"].to_list() == [2, 3, 4, 5, 6, 7, 8]
    assert loaded.items["question"].to_list() == ["ok"]
    assert loaded.items.height + loaded.quarantined.height == 8


def test_error_message_truncates_long_row_lists(tmp_path):
    rows = [{"question": f"good {i}"} if i % 2 else {"question": ""} for i in range(30)]  # lines 1,3,..,29 bad
    message = bad_rows_error(write_jsonl(tmp_path / "in.jsonl", rows))
    assert "15 bad row(s)" in message
    assert rows_for(message, "missing or empty") == "1, 3, 5, 7, 9, 11, 13, 15, 17, 19 and 5 more"
    loaded = quarantine(tmp_path / "in.jsonl")
    assert loaded.quarantined["row"].to_list() == list(range(1, 30, 2))
    assert loaded.items.height == 15


def test_duplicates_keep_first_occurrence(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "x", "question": "first x"},
        {"id": "y", "question": "first y"},
        {"id": "x", "question": "second x"},
        {"id": "x", "question": "third x"},
        {"id": "y", "question": "second y"},
    ])
    assert rows_for(bad_rows_error(path), "duplicate id") == "3, 4, 5"
    loaded = quarantine(path)
    assert loaded.items["question"].to_list() == ["first x", "first y"]
    assert loaded.quarantined["row"].to_list() == [3, 4, 5]
    assert loaded.quarantined["reason"].to_list() == [
        "duplicate id x (first at row 1)", "duplicate id x (first at row 1)", "duplicate id y (first at row 2)"]


def test_duplicate_of_a_bad_row_is_not_a_duplicate(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": "x", "question": ""}, {"id": "x", "question": "real"}])
    loaded = quarantine(path)
    assert loaded.items["question"].to_list() == ["real"]
    assert loaded.quarantined["row"].to_list() == [1]
    assert loaded.quarantined["reason"].to_list() == ["missing or empty 'question'"]


def test_duplicate_hashed_ids(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"question": "Q", "answer": "A"}, {"question": "Q", "answer": "A"},
                                               {"question": "Q", "answer": "B"}])
    loaded = quarantine(path)
    assert loaded.items["reference"].to_list() == ["A", "B"]
    assert loaded.quarantined["row"].to_list() == [2]
    assert loaded.quarantined["reason"][0] == "duplicate content (same question, reference and choices as row 1)"
    message = bad_rows_error(path)
    assert "duplicate content (same question, reference and choices as an earlier row) at rows 2" in message
    assert "duplicate id" not in message


def test_int_and_string_ids_that_collide_are_duplicates(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "question": "a"}, {"id": "1", "question": "b"}])
    assert rows_for(bad_rows_error(path), "duplicate id") == "2"


def test_custom_question_field_named_in_reasons(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"problem": "ok"}, {"problem": " "}, {"problem": 3}])
    message = bad_rows_error(path, question_field="problem")
    assert rows_for(message, "missing or empty 'problem'") == "2"
    assert rows_for(message, "'problem' is a JSON number") == "3"


def test_csv_bad_rows_use_data_row_numbers(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text('id,question\n1,q1\n2,\n3,"  "\n1,q4\n5,q5\n', encoding="utf-8")
    message = bad_rows_error(path)
    assert rows_for(message, "missing or empty 'question'") == "2, 3"
    assert rows_for(message, "duplicate id") == "4"
    loaded = quarantine(path)
    assert loaded.items["id"].to_list() == ["1", "5"]
    assert loaded.quarantined["row"].to_list() == [2, 3, 4]
    assert loaded.items.height + loaded.quarantined.height == 5


def test_parquet_null_question_row(tmp_path):
    path = _parquet(tmp_path, [{"id": "a", "question": "ok"}, {"id": "b", "question": None}])
    assert rows_for(bad_rows_error(path), "missing or empty 'question'") == "2"
    loaded = quarantine(path)
    assert loaded.items["id"].to_list() == ["a"]
    assert loaded.quarantined["row"].to_list() == [2]


def test_quarantine_logs_a_warning_and_error_mode_has_none(tmp_path, caplog):
    path = write_jsonl(tmp_path / "in.jsonl", [{"question": "ok"}, {"question": ""}])
    with caplog.at_level(logging.WARNING, logger="curate.data.items"):
        quarantine(path)
    assert any("quarantined 1 bad row(s)" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="curate.data.items"):
        load(write_jsonl(tmp_path / "clean.jsonl", [{"question": "ok"}]))
    assert not caplog.records


def test_data_error_is_a_dereason_error(tmp_path):
    with pytest.raises(DereasonError):
        load(write_jsonl(tmp_path / "in.jsonl", [{"question": ""}]))


def test_all_lines_unusable_are_named_and_nothing_is_left(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", ["{bad", {"question": 7}])
    assert rows_for(bad_rows_error(path), "invalid JSON") == "1"
    message = bad_rows_error(path, on_bad_rows="quarantine")
    assert message.startswith(f"no items in {path}: all 2 row(s) are bad: invalid JSON")
    assert rows_for(message, "'question' is a JSON number") == "2"


def test_all_questions_null_leave_no_items(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "question": None}, {"id": "b", "question": None}])
    message = bad_rows_error(path, on_bad_rows="quarantine")
    assert rows_for(message, "missing or empty 'question'") == "1, 2"
    assert "no items in" in message


# --------------------------------------------------------------------------------------------
# fingerprint
# --------------------------------------------------------------------------------------------

FP_ROWS = [
    {"id": "a", "question": "Q1", "answer": "R1", "choices": ["x", "y"], "domain": "d1", "source": "s1"},
    {"id": "b", "question": "Q2", "answer": "R2", "choices": ["z"], "domain": "d2", "source": "s2"},
]


@pytest.fixture
def fp_items(tmp_path) -> pl.DataFrame:
    return load(write_jsonl(tmp_path / "fp.jsonl", FP_ROWS)).items


def test_fingerprint_is_deterministic(tmp_path, fp_items):
    value = fingerprint(fp_items)
    assert re.fullmatch(r"[0-9a-f]{64}", value)
    assert fingerprint(fp_items) == value
    assert fingerprint(fp_items.clone()) == value
    again = load(write_jsonl(tmp_path / "fp2.jsonl", FP_ROWS)).items
    assert fingerprint(again) == value


@pytest.mark.parametrize("column, value", [
    ("id", "a2"),
    ("question", "Q1 "),
    ("question", "Q1?"),
    ("reference", "R1x"),
    ("reference", None),
    ("domain", "d9"),
    ("domain", None),
])
def test_fingerprint_changes_with_canonical_field(fp_items, column, value):
    before = fingerprint(fp_items)
    changed = fp_items.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(value, pl.String)).otherwise(pl.col(column)).alias(column))
    assert changed[column].to_list() != fp_items[column].to_list()
    assert fingerprint(changed) != before


@pytest.mark.parametrize("choices", [
    options("x"), options("x", "y", "w"), options("y", "x"), None, [],
    [{"label": "B", "text": "x"}, {"label": "A", "text": "y"}],  # same texts, other labels
    [{"label": "A", "text": "xB. y"}],  # the same `LABEL. text` characters, split otherwise
])
def test_fingerprint_changes_with_choices(fp_items, choices):
    before = fingerprint(fp_items)
    new = pl.Series("choices", [choices, options("z")], dtype=pl.List(CHOICE))
    changed = fp_items.with_columns(new)
    assert fingerprint(changed) != before


def test_fingerprint_tells_no_choices_from_empty_choices(fp_items):
    none = fp_items.with_columns(pl.Series("choices", [None, None], dtype=pl.List(CHOICE)))
    empty = fp_items.with_columns(pl.Series("choices", [[], []], dtype=pl.List(CHOICE)))
    assert fingerprint(none) != fingerprint(empty)


def test_fingerprint_changes_when_a_row_is_dropped_or_reordered(fp_items):
    before = fingerprint(fp_items)
    assert fingerprint(fp_items.head(1)) != before
    assert fingerprint(fp_items.reverse()) != before


def test_fingerprint_ignores_extra(fp_items):
    before = fingerprint(fp_items)
    changed = fp_items.with_columns(pl.struct(source=pl.Series(["other", "values"])).alias("extra"))
    assert fingerprint(changed) == before


def test_fingerprint_from_files_differs_when_question_edited(tmp_path):
    edited = [dict(r) for r in FP_ROWS]
    edited[1]["question"] = "Q2 (edited)"
    a = fingerprint(load(write_jsonl(tmp_path / "a.jsonl", FP_ROWS)).items)
    b = fingerprint(load(write_jsonl(tmp_path / "b.jsonl", edited)).items)
    assert a != b


def test_fingerprint_of_hashed_ids_changes_with_reference(tmp_path):
    rows = [{"question": "Q", "answer": "A"}]
    a = fingerprint(load(write_jsonl(tmp_path / "a.jsonl", rows)).items)
    b = fingerprint(load(write_jsonl(tmp_path / "b.jsonl", [{"question": "Q", "answer": "B"}])).items)
    assert a != b


def test_missing_local_file_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load("data/missing.jsonl")


# --------------------------------------------------------------------------------------------
# MMLU-style references: a 0-based option index becomes the option's label
# --------------------------------------------------------------------------------------------

MMLU_ROWS = [{"question": "2 + 2?", "choices": ["3", "4", "5", "6"], "answer": 1},
             {"question": "Capital of France?", "choices": ["Lyon", "Nice", "Paris", "Lille"], "answer": 2},
             {"question": "A question without options", "answer": 7}]


@pytest.mark.parametrize("writer", [_jsonl, _parquet, _dataset_dir], ids=["jsonl", "parquet", "dataset"])
def test_an_option_index_reference_becomes_the_options_label(tmp_path, writer):
    items = load(writer(tmp_path, MMLU_ROWS)).items
    assert items["reference"].to_list() == ["B", "C", "7"]  # 0-based; an item without options keeps its number


def test_a_text_reference_that_looks_like_an_index_is_kept(tmp_path):
    rows = [{"question": "Which is two?", "choices": ["1", "2", "3"], "answer": "2"}]
    assert load(_jsonl(tmp_path, rows)).items["reference"].to_list() == ["2"]


def test_an_option_index_outside_the_options_is_a_bad_row(tmp_path):
    rows = [*MMLU_ROWS, {"question": "Too far", "choices": ["x", "y"], "answer": 2},
            {"question": "Negative", "choices": ["x", "y"], "answer": -1}]
    message = bad_rows_error(_jsonl(tmp_path, rows))
    assert "reference 2 is an option index (0-based) but the item has 2 option(s) (A, B) at rows 4" in message
    assert "reference -1 is an option index (0-based) but the item has 2 option(s) (A, B) at rows 5" in message
    loaded = quarantine(_jsonl(tmp_path, rows))
    assert loaded.items["reference"].to_list() == ["B", "C", "7"]
    assert loaded.quarantined["row"].to_list() == [4, 5]


def test_an_integer_reference_to_numbered_options_is_ambiguous(tmp_path):
    rows = [{"question": "Q", "choices": [{"label": "1", "text": "x"}, {"label": "2", "text": "y"}], "answer": 1}]
    message = bad_rows_error(_jsonl(tmp_path, rows))
    assert "reference 1 is a number and the options are labelled with numbers (1, 2)" in message
    assert "at rows 1" in message
