import json
from pathlib import Path
from collections import Counter

import polars as pl
import pytest
from conftest import write_jsonl
from fakes import ScriptedBackend

import curate
from curate.config import DataConfig, SamplingConfig, RunConfig
from curate.engine import score
from curate.errors import FailureThresholdError, RunDirError, TemplateError
from curate.store import read_judgments, read_manifest

ROWS = [{"id": f"q{i}", "question": f"Problem {i}: what is {i} + {i}?", "answer": str(2 * i), "level": i % 5 + 1}
        for i in range(40)]


def config(tmp_path, **overrides) -> RunConfig:
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    settings = {"source": str(data), "out": str(tmp_path / "run"), "template": "difficulty/intensity",
                "samples": 3, "temperature": 1.0, "chunk_size": 7, "max_failure_fraction": 1.0, **overrides}
    return RunConfig.from_flat(settings)


def mixed(item_id: str, idx: int):
    """Deterministic mix of every outcome kind."""
    n = int(item_id[1:])
    kind = (n + idx) % 6
    if kind == 0:
        return ("Long rationale that never ends", "length")
    if kind == 1:
        return RuntimeError("HTTP 500")
    if kind == 2:
        return ("The rubric says <score>N</score> but I forgot", "stop")
    return (f"Several steps. <score>{kind}</score>", "stop")


def expected_counts() -> dict[str, int]:
    kinds = Counter((int(row["id"][1:]) + idx) % 6 for row in ROWS for idx in range(3))
    return {"ok": kinds[3] + kinds[4] + kinds[5], "unparseable": kinds[2], "truncated": kinds[0], "error": kinds[1]}


def test_counts_add_up_exactly_and_failures_are_data(tmp_path):
    backend = ScriptedBackend(mixed)
    result = score(config(tmp_path), backend=backend)
    assert len(backend.requested) == len(set(backend.requested)) == 120 == result.requested
    frame = curate.load_judgments(tmp_path / "run")
    assert frame.height == 120 and frame.select("item_id", "sample_idx").is_unique().all()
    counts = result.summary["status_counts"]
    assert counts == expected_counts() == {"ok": 60, "unparseable": 21, "truncated": 19, "error": 20}
    assert sum(counts.values()) == result.summary["judgments"] == 120
    failed = frame.filter(pl.col("status") != "ok")
    assert failed["score"].null_count() == failed.height  # never a default score
    assert set(frame.filter(pl.col("status") == "error")["detail"]) == {"HTTP 500"}
    truncated = frame.filter(pl.col("status") == "truncated")
    assert set(truncated["raw_text"]) == {"Long rationale that never ends"}  # raw text kept
    assert set(frame["template"]) == {curate.engine.load_template("difficulty/intensity").identity}
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["status_counts"] == counts
    assert pl.read_parquet(tmp_path / "run" / "per_item.parquet").height == 40


def test_rerun_requests_nothing_and_retry_failed_only_failures(tmp_path):
    score(config(tmp_path), backend=ScriptedBackend(mixed))
    again = ScriptedBackend(mixed)
    assert score(config(tmp_path), backend=again).requested == 0 and again.calls == 0
    retry = ScriptedBackend(lambda item_id, idx: ("<score>3</score>", "stop"))
    result = score(config(tmp_path, retry_failed=True), backend=retry)
    assert len(retry.requested) == 39 == result.requested  # 20 errors + 19 truncated
    assert result.summary["status_counts"] == {"ok": 99, "unparseable": 21, "truncated": 0, "error": 0}
    assert read_judgments(tmp_path / "run", table="retired").height == 39


def test_a_request_the_backend_drops_becomes_an_error(tmp_path):
    class Dropping(ScriptedBackend):
        def generate(self, requests, sampling):
            for completion in super().generate(requests, sampling):
                if completion.item_id != "q5":
                    yield completion

    result = score(config(tmp_path), backend=Dropping(lambda i, s: ("<score>2</score>", "stop")))
    frame = curate.load_judgments(tmp_path / "run").filter(pl.col("item_id") == "q5")
    assert frame["status"].to_list() == ["error"] * 3
    assert result.summary["judgments"] == 120


def test_undefined_template_variable_fails_before_any_model_call(tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "bad.jinja").write_text("{#-\nparser: score_only\n-#}\n{% block user -%}\n{{ question }}\n"
                                         "Hint: {{ difficulty_hint }}\n{%- endblock %}\n")
    backend = ScriptedBackend(mixed)
    with pytest.raises(TemplateError, match=r"template 'bad', line 6: 'difficulty_hint' is undefined"):
        score(config(tmp_path, template="bad", template_dir=str(templates)), backend=backend)
    assert backend.calls == 0 and not (tmp_path / "run").exists()


def test_failure_threshold_raises_with_the_summary_after_storing(tmp_path):
    with pytest.raises(FailureThresholdError, match="60 of 120 judgments failed") as caught:
        score(config(tmp_path, max_failure_fraction=0.4), backend=ScriptedBackend(mixed))
    assert caught.value.summary["failed"] == 60
    assert curate.load_judgments(tmp_path / "run").height == 120


def test_limit_and_quarantine(tmp_path):
    rows = ROWS + [{"id": "q1", "question": "dup"}, {"id": "empty", "question": "  "}]
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    cfg = config(tmp_path, source=str(data), on_bad_rows="quarantine", limit=10, samples=1, temperature=0.0)
    result = score(cfg, backend=ScriptedBackend(lambda i, s: ("<score>4</score>", "stop")))
    assert result.summary["items"] == 10
    quarantined = [json.loads(line) for line in (tmp_path / "run" / "quarantine.jsonl").read_text().splitlines()]
    assert [(q["row"], q["reason"][:12]) for q in quarantined] == [(41, "duplicate id"), (42, "missing or e")]


def test_reparse_changes_statuses_without_calling_a_model(tmp_path):
    score(config(tmp_path, template="difficulty/intensity_score_only"),
          backend=ScriptedBackend(lambda i, s: (f"<score>{s + 1}</score>", "stop")))
    before = curate.load_judgments(tmp_path / "run")
    assert set(before["status"]) == {"unparseable"}  # the score-only parser wants a bare digit
    after = curate.reparse(tmp_path / "run", parser_name="tagged_score")
    assert after["status_counts"]["ok"] == 120
    frame = curate.load_judgments(tmp_path / "run")
    assert frame["score"].to_list() == [s + 1 for s in frame["sample_idx"].to_list()]
    assert set(frame["parser"]) == {"tagged_score@2"}
    assert frame["raw_text"].to_list() == before["raw_text"].to_list()


def test_every_config_is_logged_as_it_ran(tmp_path):
    cfg = config(tmp_path)
    score(cfg, backend=ScriptedBackend(mixed))
    score(config(tmp_path, chunk_size=5), backend=ScriptedBackend(mixed))
    logged = [json.loads(line)["config"] for line in (tmp_path / "run" / "invocations.jsonl").read_text().splitlines()]
    assert logged[0] == cfg.to_flat() and logged[1]["chunk_size"] == 5
    assert RunConfig.from_flat(logged[0]) == cfg
    assert isinstance(cfg.sampling, SamplingConfig) and isinstance(cfg.data, DataConfig)


def test_input_with_only_a_question_column(tmp_path):
    data = write_jsonl(tmp_path / "plain.jsonl", [{"question": f"What is {i} squared?"} for i in range(3)])
    result = score(config(tmp_path, source=str(data)), backend=ScriptedBackend(lambda i, s: ("<score>1</score>", "stop")))
    assert result.summary["status_counts"]["ok"] == 9
    items = pl.read_parquet(tmp_path / "run" / "items.parquet")
    assert items.columns == ["id", "question", "reference", "choices", "domain"]
    assert all(i.startswith("h-") for i in items["id"])


@pytest.mark.parametrize("changed", [{"max_tokens": 7}, {"max_tokens": 1024}, {"top_p": 0.9}, {"seed": 1},
                                     {"top_logprobs": 5}])
def test_a_rerun_with_an_answer_changing_setting_is_refused_naming_it(tmp_path, changed):
    score(config(tmp_path), backend=ScriptedBackend(mixed))
    (key, value), = changed.items()
    with pytest.raises(RunDirError, match=f"{key}: stored .*, now {value}"):
        score(config(tmp_path, **changed), backend=ScriptedBackend(mixed))


def test_retry_failed_may_raise_max_tokens_and_the_manifest_records_it(tmp_path):
    score(config(tmp_path), backend=ScriptedBackend(mixed))
    with pytest.raises(RunDirError, match="add --retry-failed"):
        score(config(tmp_path, max_tokens=1024), backend=ScriptedBackend(mixed))
    with pytest.raises(RunDirError, match="max_tokens: stored 512, now 256"):  # a lower cap would cut stored answers
        score(config(tmp_path, max_tokens=256, retry_failed=True), backend=ScriptedBackend(mixed))
    retry = ScriptedBackend(lambda item_id, idx: ("<score>3</score>", "stop"))
    result = score(config(tmp_path, max_tokens=1024, retry_failed=True), backend=retry)
    assert result.requested == 39 and result.summary["status_counts"]["truncated"] == 0
    assert read_manifest(tmp_path / "run")["identity"]["max_tokens"] == 1024
    assert score(config(tmp_path, max_tokens=1024), backend=ScriptedBackend(mixed)).requested == 0
    with pytest.raises(RunDirError, match="max_tokens: stored 1024, now 512"):
        score(config(tmp_path), backend=ScriptedBackend(mixed))


def test_a_run_made_before_max_tokens_was_in_its_identity_resumes_with_its_recorded_cap(tmp_path):
    score(config(tmp_path, max_tokens=300), backend=ScriptedBackend(mixed))
    manifest_path = tmp_path / "run" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["identity"]["max_tokens"]
    manifest_path.write_text(json.dumps(manifest))
    assert score(config(tmp_path, max_tokens=300), backend=ScriptedBackend(mixed)).requested == 0
    with pytest.raises(RunDirError, match="max_tokens: stored 300, now 512"):
        score(config(tmp_path), backend=ScriptedBackend(mixed))


def test_the_same_template_by_another_path_is_the_same_template(tmp_path, monkeypatch):
    source = (Path(curate.__file__).parent.parent / "prompts" / "difficulty" / "intensity.jinja").read_text()
    monkeypatch.chdir(tmp_path)
    Path("ok.jinja").write_text(source)
    score(config(tmp_path, template="ok.jinja"), backend=ScriptedBackend(mixed))
    again = ScriptedBackend(mixed)
    assert score(config(tmp_path, template=str(tmp_path / "ok.jinja")), backend=again).requested == 0
    assert score(config(tmp_path, template="difficulty/intensity"), backend=again).requested == 0  # the bundled one
    Path("edited.jinja").write_text(source.replace("reasoning", "thinking"))
    with pytest.raises(RunDirError, match=r"template: stored 'ok.jinja@\w+', now 'edited.jinja@\w+'"):
        score(config(tmp_path, template="edited.jinja"), backend=ScriptedBackend(mixed))
