"""Pairwise difficulty end to end: `curate pairs` on the engine and store, and its run read by stats, compare and split
like any score run."""

import json
import math
import random
import re
import subprocess
import sys

import polars as pl
import pytest
from conftest import assert_one_line_error, invoke, kill_when_stored, write_jsonl
from fakes import ScriptedBackend
from scipy.stats import spearmanr

import curate
from curate.backends import Completion, TokenLogprobs
from curate.command_config import CompareConfig, SplitConfig, StatsConfig
from curate.config import RunConfig
from curate.engine import pairs, reparse, score
from curate.errors import ConfigError, RunDirError
from curate.split.directory import make_split
from curate.split.rules import TauRule
from curate.stats.analysis import analyze_comparison, analyze_run
from curate.store import read_judgments
from curate.tasks.schedule import schedule_size

N = 40
TRUTH = {f"p{i:02d}": (i * 7 % N) / 8 for i in range(N)}  # a known order (0 to 4.9 logits), not the ids' order
ROWS = [{"id": item_id, "question": f"Problem {item_id}: find x.", "answer": "1", "level": 1 + int(t)}
        for item_id, t in TRUTH.items()]


def config(tmp_path, **overrides) -> RunConfig:
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    settings = {"source": str(data), "out": str(tmp_path / "run"), "template": "pairwise/harder", "model": "scripted",
                "comparisons": 6, "chunk_size": 16, "max_tokens": 4, "top_logprobs": 0, "max_failure_fraction": 1.0,
                **overrides}
    return RunConfig.from_flat(settings)


def p_first(key: str, bias: float) -> float:
    a, b = json.loads(key)
    return 1 / (1 + math.exp(-(TRUTH[a] - TRUTH[b] + bias)))


def noisy_judge(bias: float = 0.8):
    """Answers A with P(A harder) = σ(t_a − t_b + bias): noise, and a lean towards the first item shown."""
    def answer(key: str, idx: int):
        return ("A" if random.Random(f"{key}/{idx}").random() < p_first(key, bias) else "B", "stop")
    return answer


def rho(per_item: pl.DataFrame) -> float:
    scored = per_item.filter(pl.col("item_status") == "scored")
    return spearmanr(scored["strength"], scored["item_id"].replace_strict(TRUTH)).statistic


@pytest.mark.parametrize("position_bias", [0.0, 0.8])
def test_a_noisy_judge_with_or_without_a_position_bias_gives_back_the_known_order(tmp_path, position_bias):
    backend = ScriptedBackend(noisy_judge(position_bias))
    result = pairs(config(tmp_path, comparisons=12), backend=backend)
    assert result.requested == len(backend.requested) == schedule_size(N, 12) == 480
    assert rho(result.per_item) > 0.9  # 0.95; from 0/1 answers, 6 comparisons per item give about 0.88
    summary = result.summary
    assert summary["items_scored"] == N and summary["comparisons"] == 480 and summary["status_counts"]["ok"] == 480
    bias = summary["bradley_terry"]["position_bias"]
    assert bias["low"] < position_bias < bias["high"]
    assert (summary["bradley_terry"]["mean_p_first"] > 0.55) == (position_bias > 0)
    assert summary["hard_outcomes"] == 480 and summary["soft_outcomes"] == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["comparisons_per_item"] == 12
    stored = read_judgments(tmp_path / "run")
    assert stored.select("item_id", "sample_idx").is_unique().all()
    assert (stored["item_id"] == pl.Series([json.dumps([a, b]) for a, b in stored.select("a_id", "b_id").rows()])).all()


class LogprobJudge:
    """Always answers A (a judge that only ever names the first item), but its logprobs hold the truth."""

    name = model_id = "logprob-judge"

    def __init__(self):
        self.requested = []

    def generate(self, requests, sampling):
        for request in requests:
            p = p_first(request.item_id, bias=5.0)  # the bias keeps A the likelier letter
            alternatives = ((" A", math.log(0.6 * p)), ("A", math.log(0.3 * p)), (" B", math.log(0.9 * (1 - p))))
            for idx in request.sample_indices:
                self.requested.append(request)
                yield Completion(request.item_id, idx, " A", "length", 10, 1,
                                 logprobs=(TokenLogprobs(" A", alternatives),))

    def close(self):
        pass


def test_the_logprobs_outcome_is_used_where_the_letter_says_nothing(tmp_path):
    result = pairs(config(tmp_path, template="pairwise/harder_prefilled", max_tokens=1, top_logprobs=20),
                   backend=LogprobJudge())
    stored = read_judgments(tmp_path / "run")
    assert set(stored["choice"]) == {"A"} and set(stored["choice_method"]) == {"logprobs"}
    expected = [p_first(key, 5.0) for key in stored["item_id"]]
    assert stored["p_a"].to_list() == pytest.approx(expected)  # " A" and "A" summed
    assert result.summary["soft_outcomes"] == 240 and result.summary["order_agreement"]["agree"] == 0
    assert rho(result.per_item) > 0.95  # every letter was A: only the logprobs tell the items apart


def flaky(key: str, idx: int):
    a, b = json.loads(key)
    if "p00" in (a, b):
        return RuntimeError("HTTP 500")  # every comparison of p00 fails
    kind = random.Random(key).randrange(10)
    return {0: ("Problem A is harder", "stop"), 1: ("Let me think", "length")}.get(kind, noisy_judge()(key, idx))


def test_failures_are_data_and_an_item_no_comparison_reached_has_no_strength(tmp_path):
    result = pairs(config(tmp_path), backend=ScriptedBackend(flaky))
    counts = result.summary["status_counts"]
    assert counts["error"] == 12 and counts["unparseable"] > 0 and counts["truncated"] > 0
    assert sum(counts.values()) == 240
    stored = read_judgments(tmp_path / "run")
    failed = stored.filter(pl.col("status") != "ok")
    assert failed["choice"].null_count() == failed.height and set(failed["choice_method"]) == {""}
    p00 = result.per_item.filter(pl.col("item_id") == "p00").row(0, named=True)
    assert (p00["bt_status"], p00["item_status"], p00["strength"], p00["n_ok"], p00["n_failed"]) == \
        ("not_compared", "unscored", None, 0, 12)
    manifest = make_split(tmp_path / "run", tmp_path / "split", SplitConfig(tau_rule=TauRule(quantile=0.25)))
    assert manifest["unscored_reasons"] == {"judgments_failed": 1}
    assert any("`curate pairs` with the same settings and --retry-failed" in note for note in manifest["notes"])
    retried = pairs(config(tmp_path, retry_failed=True), backend=ScriptedBackend(noisy_judge()))
    assert retried.requested == counts["error"] + counts["truncated"]  # an unparseable answer stays as it was
    assert retried.summary["status_counts"] == {"ok": 240 - counts["unparseable"], "unparseable": counts["unparseable"],
                                                "truncated": 0, "error": 0}


class Interrupted(Exception):
    pass


def test_a_stopped_run_resumes_asking_only_the_missing_comparisons(tmp_path):
    answered = []

    def stops_after_100(key, idx):
        if len(answered) == 100:
            raise Interrupted  # the process stops mid-run: the chunk being collected is lost
        answered.append(key)
        return noisy_judge()(key, idx)

    with pytest.raises(Interrupted):
        pairs(config(tmp_path), backend=ScriptedBackend(stops_after_100))
    stored = read_judgments(tmp_path / "run")["item_id"].to_list()
    assert 0 < len(stored) <= 100 and len(stored) % 16 == 0  # whole chunks only
    backend = ScriptedBackend(noisy_judge())
    result = pairs(config(tmp_path), backend=backend)
    asked = [key for key, _ in backend.requested]
    assert result.requested == len(asked) == 240 - len(stored) and not set(asked) & set(stored)
    (tmp_path / "clean").mkdir()
    clean = pairs(config(tmp_path / "clean"), backend=ScriptedBackend(noisy_judge()))
    assert result.per_item.equals(clean.per_item)


def test_more_comparisons_later_ask_only_the_new_ones_and_other_schedules_are_refused(tmp_path):
    pairs(config(tmp_path, comparisons=3), backend=ScriptedBackend(noisy_judge()))
    backend = ScriptedBackend(noisy_judge())
    result = pairs(config(tmp_path, comparisons=6), backend=backend)
    assert result.requested == len(backend.requested) == 240 - 120 and result.summary["comparisons"] == 240
    for change, name in (({"comparisons": 4}, "comparisons"), ({"schedule_seed": 1}, "schedule_seed"),
                         ({"template": "pairwise/harder_prefilled"}, "template")):
        with pytest.raises(RunDirError, match=f"{name}: stored"):
            pairs(config(tmp_path, **change), backend=ScriptedBackend(noisy_judge()))


def test_templates_and_tasks_do_not_cross(tmp_path):
    with pytest.raises(ConfigError, match="`curate pairs` needs a pairwise template such as pairwise/harder_prefilled"):
        pairs(config(tmp_path, template="difficulty/intensity"), backend=ScriptedBackend(noisy_judge()))
    with pytest.raises(ConfigError, match="is a pairwise template; `curate score` needs a judge template"):
        score(config(tmp_path), backend=ScriptedBackend(noisy_judge()))
    with pytest.raises(ConfigError, match="--comparisons 40: each item is compared with that many others"):
        pairs(config(tmp_path, comparisons=40), backend=ScriptedBackend(noisy_judge()))


def test_a_pairwise_template_renders_both_items_and_declares_a_choice_parser(tmp_path):
    template = curate.engine.load_template("pairwise/harder")
    item = {"id": "x", "question": "Q1", "reference": None, "choices": [{"label": "A", "text": "yes"}],
            "domain": None, "extra": {}}
    user = template.render({"id": "k", "a": item, "b": {**item, "question": "Q2", "choices": None}})[-1]["content"]
    assert user.index("Problem A:\nQ1\n\nA. yes") < user.index("Problem B:\nQ2") and user.endswith("A or B?")
    refused = "declares parser 'score_only'; declare one of ['choice_ab']"
    for header, message in (("kind: pairwise\nparser: score_only", refused), ("kind: pairwise", "declares parser None")):
        path = tmp_path / "mine.jinja"
        path.write_text(f"{{#-\n{header}\n-#}}\n{{% block user %}}{{{{ a.question }}}}{{% endblock %}}\n")
        with pytest.raises(curate.errors.TemplateError, match=re.escape(message)):
            curate.engine.load_template(str(path))
    path.write_text("{#-\nkind: pairwise\nparser: choice_ab\n-#}\n{% block user %}{{ question }}{% endblock %}\n")
    with pytest.raises(curate.errors.TemplateError, match="line 5: 'question' is undefined .*available variables: "
                                                          "a and b, each with id, question, reference"):
        pairs(config(tmp_path, template=str(path)), backend=ScriptedBackend(noisy_judge()))


def test_stats_compare_and_split_take_a_pairs_run_like_a_score_run(tmp_path):
    run = pairs(config(tmp_path, comparisons=12), backend=ScriptedBackend(noisy_judge())).run_dir
    stats = analyze_run(run, StatsConfig(reference="level", resamples=200)).stats
    assert stats["score"] == "strength" and stats["run"]["task"] == "pairs"
    assert stats["reference"]["spearman"]["value"] > 0.85 and stats["reference"]["qwk"] is None
    assert stats["distribution"]["histogram"] is None and stats["pairs"]["comparisons_per_item"] == 12
    assert stats["self_consistency"]["order_agreement"]["pairs"] == 240
    with pytest.raises(ConfigError, match="--score mean is a judge run's, and this is a pairs run"):
        analyze_run(run, StatsConfig(score="mean"))

    def scores_level(key, idx):
        return (f"<score>{next(r['level'] for r in ROWS if r['id'] == key)}</score>", "stop")

    judge = score(config(tmp_path, out=str(tmp_path / "judge"), template="difficulty/intensity"),
                  backend=ScriptedBackend(scores_level)).run_dir
    compared = analyze_comparison(judge, run, CompareConfig(resamples=200))
    assert (compared["score"], compared["score_b"], compared["n_common"]) == ("mean", "strength", N)
    assert compared["spearman"]["value"] > 0.85 and compared["alpha"] is None and compared["churn"] == []
    split = make_split(run, tmp_path / "split", SplitConfig(tau_rule=TauRule(rl_budget=12)))
    rl = pl.read_parquet(tmp_path / "split" / "rl.parquet")
    assert split["score"] == "strength" and split["counts"]["rl"] == rl.height <= 12
    assert rl["item_id"].replace_strict(TRUTH).min() >= 2  # the hardest tenths
    for rule in (TauRule(), TauRule(tau=0.5)):
        with pytest.raises(ConfigError, match="is a fixed value, and the Bradley-Terry strength .* has no fixed "
                                              "scale .*: choose τ from the scores with --quantile or --rl-budget"):
            make_split(run, tmp_path / "refused", SplitConfig(tau_rule=rule))


def test_a_reparse_decides_the_stored_answers_again(tmp_path):
    first = pairs(config(tmp_path), backend=ScriptedBackend(noisy_judge()))
    again = reparse(tmp_path / "run")
    assert again["status_counts"] == first.summary["status_counts"]
    assert again["bradley_terry"]["position_bias"] == first.summary["bradley_terry"]["position_bias"]
    with pytest.raises(ConfigError, match="unknown pairwise parser 'score_only'"):
        reparse(tmp_path / "run", parser_name="score_only")


def test_the_command_needs_a_model_and_shows_its_own_defaults(tmp_path):
    assert_one_line_error(invoke("pairs", write_jsonl(tmp_path / "d.jsonl", ROWS)), "`curate pairs` needs --model")
    flat = " ".join(invoke("pairs", "--help").output.split())
    assert "[default: pairwise/harder_prefilled]" in flat and "--comparisons <int>" in flat
    assert "--max-tokens <int> Most tokens a judgment may generate; longer ones are stored as truncated. " \
           "[default: 1]" in flat and "--constrain-score / --no-constrain-score" in flat
    assert "--verify" not in flat


SETTINGS = {"limit": 30, "comparisons": 4, "constrain_score": True, "chunk_size": 8, "batch_size": 8}


def command(data, run_dir, model):
    flags = [f"--{key.replace('_', '-')}" + ("" if value is True else f"={value}") for key, value in SETTINGS.items()]
    return [sys.executable, "-m", "curate.cli", "pairs", str(data), "--model", str(model), *flags, "--out",
            str(run_dir), "--json"]


def test_killed_and_resumed_with_a_real_model_equals_uninterrupted(tmp_path, random_model):
    """The tiny random model through the transformers backend: its answers are noise, constrained to A or B. (Short
    problems: two long ones side by side overflow its 1,024-position context, and such a comparison is an error.)
    The uninterrupted run goes through the Python API with the command's defaults (--max-tokens 1, --top-logprobs
    20, pairwise/harder_prefilled) given, the killed and resumed one through the command."""
    clean = pairs(config(tmp_path, model=str(random_model), out=str(tmp_path / "clean"),
                         template="pairwise/harder_prefilled", max_tokens=1, top_logprobs=20,
                         max_failure_fraction=0.1, **SETTINGS)).run_dir
    resumed, data = tmp_path / "resumed", tmp_path / "data.jsonl"
    after_kill = kill_when_stored(command(data, resumed, random_model), resumed, 40)
    assert 40 <= after_kill < 120, "the kill must land mid-run"
    finished = json.loads(subprocess.run(command(data, resumed, random_model), check=True, capture_output=True,
                                         text=True).stdout)
    assert finished["requested"] == 120 - after_kill
    assert finished["comparisons"] == finished["status_counts"]["ok"] == 120 == finished["soft_outcomes"]
    assert finished["items_scored"] == 30 and finished["choice_methods"]["constrained"] == 120
    columns = ["item_id", "sample_idx", "status", "choice", "p_a", "a_id", "b_id"]
    assert read_judgments(resumed).select(columns).equals(read_judgments(clean).select(columns))
    assert pl.read_parquet(resumed / "per_item.parquet").equals(pl.read_parquet(clean / "per_item.parquet"))
    invocations = (resumed / "invocations.jsonl").read_text().splitlines()
    assert len(invocations) == 2
