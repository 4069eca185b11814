"""The dataset card of an `hf` export: YAML front matter for the Hub, then how the split was made, and a
PNG of the item scores per side that the card links."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import polars as pl
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from curate.report import png_bytes

CARD = "README.md"
HISTOGRAM = "score_histogram.png"


def histogram_png(splits: dict[str, pl.DataFrame], tau: float | dict | None, score: str) -> bytes:
    """A PNG of the sft and rl item scores, stacked per split, with a single τ as a dashed line."""
    scored = {n: splits[n]["score"].drop_nulls().cast(pl.Float64).to_numpy() for n in ("sft", "rl")
              if n in splits and "score" in splits[n].columns}
    scored = {n: v for n, v in scored.items() if v.size}
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    if not scored:
        ax.text(0.5, 0.5, "no scored items", ha="center", va="center", transform=ax.transAxes)
    else:
        values = np.concatenate(list(scored.values()))
        low, high = float(values.min()), float(values.max())
        integer = np.allclose(values, np.round(values)) and high - low <= 40
        bins = np.arange(low - 0.5, high + 1.5) if integer else np.linspace(low, high + (high == low), 21)
        colours = {"sft": "#4878a8", "rl": "#c0392b"}
        ax.hist(list(scored.values()), bins=bins, stacked=True, label=[f"{n} ({len(v)})" for n, v in scored.items()],
                color=[colours[n] for n in scored], edgecolor="white")
        if isinstance(tau, int | float):
            ax.axvline(float(tau), ls="--", color="black", label=f"τ = {tau:g}")
        ax.legend(fontsize=8, frameon=False)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel=f"{score} score", ylabel="items", title="item scores per split")
    return png_bytes(fig)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(header: tuple[str, str], pairs: list[tuple[Any, Any]]) -> list[str]:
    """A two-column Markdown table; pairs whose value is None are left out."""
    body = [f"| {_cell(k)} | {_cell(v)} |" for k, v in pairs if v is not None]
    return [f"| {header[0]} | {header[1]} |", "|---|---|", *body, ""]


def _responses(responses: dict[str, Any]) -> list[str]:
    """Where the SFT responses came from (`curate.export`'s responses.json) and which items have none."""
    checked = (f"each one a response the verifier `{responses['verifier']}` judged correct" if responses["verified"]
               else ("**not verified**: the respond run had no verifier, so each is the model's first finished "
                     "response, unchecked"))
    lines = ["## SFT responses", "",
             (f"The `response` of the SFT-side splits is the kept response of the respond run "
              f"`{responses['respond_run']}` (model `{responses['model']}`, template `{responses['template']}`): "
              f"{checked}."), ""]
    if responses["unanswered"]:
        lines += [(f"{responses['unanswered']} of the {responses['sft_items']} SFT-side items have no kept response "
                   "and are left out (never filled in); they are listed in unanswered.jsonl."), "",
                  *_rows(("reason", "items"), list(responses["unanswered_reasons"].items())),
                  *_rows(("split", "rows left out"), list(responses["unanswered_rows"].items()))]
    return lines


def dataset_card(manifest: dict[str, Any], counts: dict[str, int], histogram_png_name: str = HISTOGRAM,
                 responses: dict[str, Any] | None = None) -> str:
    """The dataset card: YAML front matter (license, task, tags, configs in push_to_hub's layout), then
    the split rule, counts, where the SFT responses came from (when a respond run gave them), judge identity
    and sampling, calibration, the score histogram and provenance."""
    front = {"license": manifest.get("license") or "unknown", "task_categories": ["text-generation"],
             "tags": ["dereason", "difficulty", "reasoning"],
             "configs": [{"config_name": "default",
                          "data_files": [{"split": name, "path": f"data/{name}-*"} for name in counts]}]}
    run, tau, score = manifest.get("run") or {}, manifest.get("tau"), manifest.get("score") or "item"
    per_domain = isinstance(tau, dict)
    detail = {"method": manifest.get("tau_method") or "not recorded", **(manifest.get("tau_detail") or {})}
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             "# Difficulty-split reasoning data (dereason)", "",
             f"An LLM judge rated each problem's reasoning intensity from 1 to 5. Items whose {score} score is at "
             f"most **{'τ of its domain' if per_domain else f'τ = {tau}'}** form the `sft` split (easier: "
             "supervised fine-tuning), items above τ the `rl` split (harder: reinforcement learning); items the "
             f"judge could not score {'are in `unscored`' if 'unscored' in counts else 'are left out'}.", "",
             *([f"The {score} score is the {manifest['score_meaning']}.", ""] if manifest.get("score_meaning") else []),
             "How τ was chosen:", "",
             *_rows(("field", "value"), list(detail.items())),
             *(_rows(("domain", "τ"), list(tau.items())) if per_domain else []), "## Splits", "",
             *_rows(("split", "rows"), list(counts.items()))]
    if arms := manifest.get("arms"):
        lines += [f"Ablation arms (splits `<arm>_sft`, `<arm>_rl`): {', '.join(map(str, arms))}.", ""]
    if stages := manifest.get("stages"):  # a count, or {stage: rows}
        solve = manifest.get("stage_run")
        by = f" by the pass rate of the solve run `{solve['run_dir']}` (model `{solve['model']}`)" if solve else ""
        count = len(stages) if isinstance(stages, dict) else stages
        lines += [f"RL curriculum: {count} stages{by}, stage_1 easiest.", ""]
    lines += _responses(responses) if responses else []
    sampling = [(f"sampling.{k}", v) for k, v in (run.get("sampling") or {}).items()]
    lines += ["## Judge", "", *_rows(("field", "value"), [("model", run.get("model")),
                                                         ("template", run.get("template")), *sampling])]
    calibration = manifest.get("calibration")
    lines += ["## Calibration", ""] + (_rows(("field", "value"), list(calibration.items())) if calibration else
                                       ["No calibration was applied: τ is on the judge's own scale.", ""])
    lines += ["## Score histogram", "", f"![score histogram]({histogram_png_name})", "",
              f"{score} item scores of the sft and rl splits, stacked" + ("." if per_domain else "; dashed line: τ."),
              "",
              "## How it was made", "",
              *_rows(("field", "value"), [("dereason version", manifest.get("dereason_version")),
                                          ("input fingerprint", run.get("input_fingerprint")),
                                          ("seed", manifest.get("seed")), ("hygiene", manifest.get("hygiene"))]),
              "Load it with `datasets.load_dataset(<repo id>)` from the Hub, or `datasets.load_from_disk(<dir>)` "
              "from the exported directory.", ""]
    return "\n".join(lines)
