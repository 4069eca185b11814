import base64
import io
import json
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest
from matplotlib.image import imread

import curate.store
from curate.stats.aggregate import per_item
from curate.stats.calibrate import fit_isotonic, reliability_table
from curate.stats.compare import compare_runs
from curate.stats.consistency import self_consistency
from curate.stats.irt import fit_rasch
from curate.stats.measured import irt_agreement
from curate.stats.metrics import (
    failure_rates,
    format_interval,
    item_scores,
    pass_rate_agreement,
    reference_agreement,
    score_distribution,
)
from curate.stats.report import (
    MAX_DOMAINS,
    histogram_figure,
    render_report,
    write_report,
)

JUDGMENT_COLUMNS = ["item_id", "sample_idx", "status", "score", "score_method", "expected_score", "score_entropy",
                    "prompt_tokens", "completion_tokens", "raw_text", "score_probs", "score_mass"]
N_RESAMPLES = 30


class Page(HTMLParser):
    """The <img> sources and the text of <script id="stats"> of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.json, self._in_stats = [], None, False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        self._in_stats = tag == "script" and attrs.get("id") == "stats" and attrs.get("type") == "application/json"

    def handle_endtag(self, tag):
        self._in_stats = False

    def handle_data(self, data):
        if self._in_stats:
            self.json = (self.json or "") + data


def judgments(n_items: int, seed: int, shift: float = 0.0) -> tuple[pl.DataFrame, np.ndarray]:
    """Three samples per item around a latent level 1..5, with a few failed judgments."""
    level = np.random.default_rng(0).integers(1, 6, n_items)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_items):
        for s in range(3):
            failed = rng.random() < 0.08
            score = int(np.clip(np.rint(level[i] + shift + rng.normal(0, 0.7)), 1, 5))
            rows.append((f"i{i:03d}", s, "error" if failed else "ok", None if failed else score,
                         "" if failed else "decoded", None, None, 10, 2, f"sample {s}: <score>{score}</score>", None,
                         None))
    return pl.DataFrame(rows, schema=JUDGMENT_COLUMNS, orient="row",
                        schema_overrides={"expected_score": pl.Float64, "score_entropy": pl.Float64,
                                          "score_probs": pl.String, "score_mass": pl.Float64}), level


def crowd(level: np.ndarray):
    """A Rasch fit over four models answering each item three times, harder as its level rises; the easiest
    items end up solved every time."""
    rng = np.random.default_rng(4)
    rows = [(f"i{i:03d}", f"model {m}", int(rng.random() < 1 / (1 + np.exp(level[i] - 2 - m))))
            for i in range(len(level)) for m in range(4) for _ in range(3)]
    return fit_rasch(pl.DataFrame(rows, schema=["item_id", "model", "correct"], orient="row"))


@pytest.fixture(scope="module")
def full():
    """stats, items, reliability and comparison, each computed by the curate functions they document."""
    frame, level = judgments(60, seed=1)
    table = per_item(frame)
    domains = np.array(["algebra", "geometry", "number theory"])[np.arange(60) % 3]
    pass_rate = np.clip(1.2 - level / 4 + np.random.default_rng(2).normal(0, 0.1, 60), 0, 1).round(1)
    source = pl.DataFrame({"id": [f"i{i:03d}" for i in range(60)], "domain": domains,
                           "extra": [{"level": int(v), "acc": float(p)} for v, p in zip(level, pass_rate)]})
    items = item_scores(table).join(source.select(
        pl.col("id").alias("item_id"), "domain", pl.col("extra").struct.field("level").alias("reference"),
        pl.col("extra").struct.field("acc").alias("pass_rate")), on="item_id")
    calibration = fit_isotonic(items["score"], items["reference"], "level", "mean", increasing=True)
    items = items.with_columns(calibrated=pl.Series(calibration.apply(items["score"])))
    stats = {"run": {"run_dir": "runs/demo", "template": "score-only", "model": "tiny", "n_items": 60},
             "score": "mean", "distribution": score_distribution(table, source), "failures": failure_rates(frame),
             "self_consistency": self_consistency(frame, n_resamples=N_RESAMPLES),
             "reference": {**reference_agreement(items["score"], items["reference"], n_resamples=N_RESAMPLES),
                           "field": "level"},
             "pass_rate": {**pass_rate_agreement(items["score"], items["pass_rate"], n_resamples=N_RESAMPLES),
                           "field": "acc"},
             "calibration": {"target": calibration.target, "score": calibration.score, "n_fit": calibration.n_fit,
                             "increasing": calibration.increasing},
             "notes": ["synthetic"]}
    reliability = reliability_table(items["calibrated"], items["reference"], n_bins=5)
    difficulties, stats["irt"] = irt_agreement(items.select("item_id", "score"), crowd(level), n_resamples=N_RESAMPLES)
    items = items.join(difficulties, on="item_id")
    comparison = compare_runs(table, per_item(judgments(60, seed=3, shift=0.3)[0]), n_resamples=N_RESAMPLES)
    return stats, items, reliability, comparison


def check_png(uri: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    data = base64.b64decode(uri[len(prefix):], validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(io.BytesIO(data), format="png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert np.ptp(image) > 0  # not a blank canvas
    return image


def test_full_report_has_seven_valid_figures_the_stats_and_no_network_reference(full):
    stats, items, reliability, comparison = full
    page = render_report(stats, items, reliability, comparison)
    parsed = Page(page)
    assert len(parsed.images) == 7
    for uri in parsed.images:
        check_png(uri)
    assert "not available" not in page
    assert json.loads(parsed.json) == {**stats, "comparison": comparison}
    assert "http://" not in page and "https://" not in page
    for heading in ("Figure 1. Item score histogram", "Figure 2. Item scores by domain",
                    "Figure 3. Confusion matrix", "Figure 4. Score vs pass rate", "Figure 5. Reliability diagram",
                    "Figure 6. Run A vs run B", "Figure 7. Score vs IRT difficulty", "Failures by kind",
                    "SFT/RL churn"):
        assert heading in page
    assert format_interval(stats["reference"]["spearman"]) in page
    irt_rows = [f"<td>IRT difficulty</td><td>Spearman ρ</td><td>{format_interval(stats['irt']['spearman'])}</td>"
                f"<td class=\"n\">{stats['irt']['n_measured']}</td>",
                f"<td>{format_interval(stats['irt']['spearman_with_extremes'])}</td><td class=\"n\">60</td>"]
    assert all(row in page for row in irt_rows) and stats["irt"]["n_all_correct"] > 0
    assert "runs/demo" in page and "synthetic" in page


def test_missing_inputs_skip_their_figures_with_a_reason(full):
    stats, items, _, _ = full
    partial = {k: stats[k] for k in ("score", "distribution", "failures")}
    page = render_report(partial, items.select("item_id", "score"))
    parsed = Page(page)
    assert len(parsed.images) == 1  # the histogram
    check_png(parsed.images[0])
    assert page.count("not available:") == 7  # six figures and the headline table
    assert "absent from these stats: run, self_consistency, reference, pass_rate, irt, calibration" in page
    assert json.loads(parsed.json) == partial


def test_compare_only_report_and_undefined_statistics(full):
    _, _, _, comparison = full
    empty = pl.DataFrame(schema={"item_id": pl.String, "score": pl.Float64})
    reference = {**reference_agreement([1.0, 2.0], [1, 2], n_resamples=0), "field": "level"}  # too few pairs
    page = render_report({"reference": reference}, empty, comparison=comparison, title="A <vs> B")
    parsed = Page(page)
    assert len(parsed.images) == 2  # confusion matrix (2 pairs still count) and the shift matrix
    assert "<h1>A &lt;vs&gt; B</h1>" in page
    assert "undefined" in page and "spearman is undefined: 2 pairs" in page
    assert "not available: no item scores" in page


def test_histogram_axis_and_caption_say_the_same_about_rounding():
    integers = pl.DataFrame({"item_id": list("abcdef"), "score": [1.0, 2.0, 2.0, 3.0, 5.0, 5.0]})
    fig, caption = histogram_figure(integers, "median")
    assert [ax.get_xlabel() for ax in fig.axes] == ["median score"]
    assert caption == "6 items, median score; every score is an integer, counted as it is (no rounding)."
    means = integers.with_columns(score=pl.Series([1.0, 2.5, 2.4, 3.0, 4.6, 5.0]))
    fig, caption = histogram_figure(means, "mean")
    assert [(ax.get_title(), ax.get_xlabel()) for ax in fig.axes] == [("rounded", "mean score rounded half up"),
                                                                       ("continuous", "mean score")]
    assert "left: rounded half up to 1..5; right: continuous, 32 bins" in caption


def test_compare_report_names_both_runs_and_embeds_the_comparison(full):
    _, _, _, comparison = full
    runs = {"run_a": {"run_dir": "runs/a", "model": "judge-1", "n_scored": 60},
            "run_b": {"run_dir": "runs/b", "model": "judge-2", "n_scored": 58}}
    compared = {**comparison, **runs, "notes": ["3 of the 60 ids both hold name different items"]}
    page = render_report({"score": "mean"}, pl.DataFrame(schema={"item_id": pl.String, "score": pl.Float64}),
                         comparison=compared)
    assert "<h2>Runs compared</h2>" in page and "<h2>Run</h2>" not in page
    for cell in ("run A", "run B", "runs/a", "runs/b", "judge-1", "judge-2", "58"):
        assert f">{cell}</" in page
    assert "comparison: 3 of the 60 ids" in page
    assert json.loads(Page(page).json)["comparison"]["run_b"]["run_dir"] == "runs/b"


def test_integer_and_out_of_range_scores_still_render():
    integers = pl.DataFrame({"item_id": list("abcdef"), "score": [1.0, 2.0, 2.0, 3.0, 5.0, 5.0]})
    assert len(Page(render_report({}, integers)).images) == 1
    pass_rates = pl.DataFrame({"item_id": list("abcd"), "score": [0.1, 0.5, 0.5, 0.9]})  # calibrated onto 0..1
    page = render_report({"score": "calibrated"}, pass_rates)
    check_png(Page(page).images[0])
    assert "so no rounded bars" in page


def test_domain_box_plots_show_the_largest_domains():
    rng = np.random.default_rng(0)
    domains = [f"domain {d:02d}" for d in range(20) for _ in range(d + 2)]
    items = pl.DataFrame({"item_id": [str(i) for i in range(len(domains))], "domain": domains,
                          "score": rng.uniform(1, 5, len(domains))})
    page = render_report({}, items)
    assert len(Page(page).images) == 2
    assert f"the largest {MAX_DOMAINS} of 20 domains" in page
    assert "domain 19 (n=21)" not in page  # labels live in the image, not the text
    one_domain = items.with_columns(domain=pl.lit("only"))
    assert "1 domain(s) among the scored items, need 2" in render_report({}, one_domain)


def test_stats_json_cannot_break_out_of_its_script_block():
    stats = {"notes": ["</script><script>alert(1)</script> & <!--"], "run": {"model": "a<b>"}}
    page = render_report(stats, pl.DataFrame(schema={"item_id": pl.String, "score": pl.Float64}))
    assert page.count("</script>") == 1
    assert json.loads(Page(page).json) == stats
    assert "&lt;/script&gt;" in page  # the note itself, escaped in the Notes list
    with pytest.raises(ValueError):
        render_report({"notes": [float("nan")]}, pl.DataFrame({"score": [1.0]}))


def test_format_interval():
    assert format_interval({"value": 0.5234, "low": 0.449, "high": 0.581}) == "0.52 [0.45, 0.58]"
    assert format_interval({"value": -0.5, "low": None, "high": None}) == "-0.50 (no interval)"
    assert format_interval(None) == "undefined"


def test_write_report_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    write_report(path, "<p>first</p>")
    write_report(str(path), "<p>second</p>")
    assert path.read_text(encoding="utf-8") == "<p>second</p>"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(curate.store.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_report(path, "<p>third</p>")
    assert path.read_text(encoding="utf-8") == "<p>second</p>"  # the old page is intact
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp file left
