"""The cards of exports. `hf`: the dataset card, YAML front matter for the Hub, then how the split was made, and
a PNG of the item scores per side that the card links. `trl` and `verl`: what each file holds, the prompt template
with the first prompt as an example, how answers are rewarded, and the commands that train on the files.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import numpy as np
import polars as pl
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from curate.stats.report import png_bytes

CARD = "README.md"
HISTOGRAM = "score_histogram.png"
HF_DATA = "data"  # the folder of an hf export's parquet files, where push_to_hub puts them on the Hub
# How verl loads curate's reward (curate.rewards.compute_score); verl 0.9 reads `reward.custom_reward_function`, and
# ignores the top-level `custom_reward_function` of older releases in main_ppo.
VERL_CUSTOM_REWARD = ("reward.custom_reward_function.path=pkg://curate.rewards",
                      "reward.custom_reward_function.name=compute_score")
# The DeReason recipe's GRPO settings (lr 1e-6, batch 128, mini-batch 64, responses up to 8,192 tokens).
VERL_RECIPE = ("algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=8", "data.train_batch_size=128",
               "actor_rollout_ref.actor.ppo_mini_batch_size=64", "actor_rollout_ref.actor.optim.lr=1e-6",
               "data.max_prompt_length=1024", "data.max_response_length=8192", "data.filter_overlong_prompts=True")


def tau_text(tau: float | dict[str, float] | None) -> str:
    """τ as people read it, to three significant digits (the manifest keeps it exact): `3.72`, or per domain
    `Algebra 3.72, Geometry 3.1`."""
    if isinstance(tau, dict):
        return ", ".join(f"{domain} {_readable(value)}" for domain, value in tau.items())
    return "not recorded" if tau is None else _readable(tau)


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
            ax.axvline(float(tau), ls="--", color="black", label=f"τ = {tau_text(tau)}")
        ax.legend(fontsize=8, frameon=False)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel=f"{score} score", ylabel="items", title="item scores per split")
    return png_bytes(fig)


def _readable(value: Any) -> str:
    """A manifest value as a line of text: numbers to three significant digits, a mapping as `key: value; …`, a
    list as `a, b`, an empty one as `none`."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_readable(item)}" for key, item in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(map(_readable, value)) or "none"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _cell(value: Any) -> str:
    return _readable(value).replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    """A Markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(_cell, row)) + " |" for row in rows), ""]


def _rows(header: tuple[str, str], pairs: list[tuple[Any, Any]]) -> list[str]:
    """A two-column Markdown table; pairs whose value is None are left out."""
    return _table(header, [(k, v) for k, v in pairs if v is not None])


def _domain_rows(tau: dict[str, float], detail: dict[str, Any]) -> list[str]:
    """τ per domain, with how each domain's τ was chosen (its counts) when the manifest records it."""
    per_domain = detail.get("domains") or {}
    columns = list(next(iter(per_domain.values()), {}))
    return _table(("domain", "τ", *columns),
                  [(domain, value, *((per_domain.get(domain) or {}).get(c) for c in columns))
                   for domain, value in tau.items()])


def _responses(responses: dict[str, Any]) -> list[str]:
    """Where the SFT responses came from (`curate.export.exporters`'s responses.json) and which items have none."""
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
                          "data_files": [{"split": name, "path": f"{HF_DATA}/{name}-*"}
                                         for name, rows in counts.items() if rows]}]}
    run, tau, score = manifest.get("run") or {}, manifest.get("tau"), manifest.get("score") or "item"
    per_domain = isinstance(tau, dict)
    detail = {"method": manifest.get("tau_method") or "not recorded", **(manifest.get("tau_detail") or {})}
    chosen = {key: value for key, value in detail.items() if not (per_domain and key == "domains")}
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             "# Difficulty-split reasoning data (dereason)", "",
             f"An LLM judge rated each problem's reasoning intensity from 1 to 5. Items whose {score} score is at "
             f"most **{'τ of its domain' if per_domain else f'τ = {tau_text(tau)}'}** form the `sft` split (easier: "
             "supervised fine-tuning), items above τ the `rl` split (harder: reinforcement learning); items the "
             f"judge could not score {'are in `unscored`' if 'unscored' in counts else 'are left out'}.", "",
             *([f"The {score} score is the {manifest['score_meaning']}.", ""] if manifest.get("score_meaning") else []),
             "How τ was chosen:", "",
             *_rows(("field", "value"), list(chosen.items())),
             *(_domain_rows(tau, detail) if per_domain else []), "## Splits", "",
             *_rows(("split", "rows"), list(counts.items()))]
    if empty := [name for name, rows in counts.items() if not rows]:
        lines += [f"Without rows, so left out of the configs (`datasets.load_dataset` cannot load an empty split): "
                  f"{', '.join(empty)}.", ""]
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
              "Load it with `datasets.load_dataset(<repo id>)` from the Hub; from the exported directory, with "
              "`datasets.load_dataset(<dir>)` (its parquet files) or `datasets.load_from_disk(<dir>)` (every split, "
              "empty ones included).", ""]
    return "\n".join(lines)


def verl_command(out_dir: str, files: list[str], custom_reward: bool) -> str:
    """`verl.trainer.main_ppo` over `files` of the export in `out_dir`, in order (several: a curriculum, unshuffled);
    `$MODEL` and `$VAL_FILES` are the user's."""
    paths = [f"{out_dir}/{name}" for name in files]
    train = paths[0] if len(paths) == 1 else f"[{','.join(paths)}]"
    overrides = [shlex.quote(f"data.train_files={train}"), "data.val_files=$VAL_FILES"]
    if len(paths) > 1:
        overrides.append("data.shuffle=False")  # verl then reads the files in the order given
    overrides += ["actor_rollout_ref.model.path=$MODEL", *VERL_RECIPE, *(VERL_CUSTOM_REWARD if custom_reward else ())]
    return " \\\n    ".join(["python -m verl.trainer.main_ppo", *overrides])


def _prompt_lines(prompt: dict[str, Any]) -> list[str]:
    lines = ["## Prompt", "", f"Each prompt is rendered by the template `{prompt['template']}`"
             + (" after the system prompt given to the export" if prompt["system_prompt"] is not None else "")
             + f": {prompt['description'].strip()}", ""]
    if prompt["example"]:
        lines += ["The first one:", ""]
        for message in prompt["example"]:
            lines += [f"{message['role']}:", "", "````text", message["content"], "````", ""]
    return lines


def trainer_card(fmt: str, out_dir: str, counts: dict[str, int], prompt: dict[str, Any], data_source: str,
                 default_data_source: str) -> str:
    """README.md of a trl or verl export (see the module docstring): `counts` has every split's rows (those without
    any were not written), `prompt` the template identity and description, the system prompt and the first prompt."""
    empty = [name for name, rows in counts.items() if not rows]
    lines = [f"# dereason export for {'TRL' if fmt == 'trl' else 'verl'}", "",
             *_rows(("file", "rows"), [(f"{name}.parquet", rows) for name, rows in counts.items() if rows]),
             *([f"Not written, as they hold no rows: {', '.join(empty)}.", ""] if empty else []),
             *_prompt_lines(prompt)]
    if fmt == "trl":
        return "\n".join([*lines, "## Train", "", "`grpo.parquet` keeps `reference` and `choices`, which TRL passes to "
                          "reward functions by name; `curate.rewards.trl_reward` checks each completion with curate's "
                          "verifiers. `MODEL` is the model to train (a Hub id or a folder).", "",
                          "```python", *trl_snippet(out_dir), "```", ""])
    custom = data_source != default_data_source
    reward = (f"verl's default reward has no scorer for `data_source` `{data_source}`, so the commands load curate's "
              "reward (`curate.rewards.compute_score`: curate's verifiers; dereason must be installed where verl "
              "runs)." if custom else
              f"verl's default reward scores `data_source` `{data_source}` with its MATH scorer: 1.0 when the last "
              "`\\boxed{}` of a response equals `reward_model.ground_truth` after normalisation (for multiple "
              "choice, the boxed option label), else 0.0. To score with curate's verifiers instead (math-verify "
              f"equivalence; an option by its label or its text), add `{' '.join(VERL_CUSTOM_REWARD)}`.")
    lines += ["## Reward", "", "`reward_model.ground_truth` is the reference's final answer; `extra_info` holds "
              "`item_id`, `difficulty` (the judge's score), `index` (one per item, the same in every file) and "
              f"`choices`. {reward}", "", "## Train", "",
              "`$MODEL` is the model to train (a Hub id or a folder), `$VAL_FILES` a verl parquet file (or a list) of "
              "held-out problems; the rest is the DeReason recipe's GRPO settings. Add your hardware's settings "
              "(`trainer.n_gpus_per_node`, `actor_rollout_ref.rollout.tensor_model_parallel_size`, ...).", "",
              "```bash", verl_command(out_dir, ["rl.parquet"], custom), "```", ""]
    if stages := [f"{name}.parquet" for name, rows in counts.items() if name.startswith("stage_") and rows]:
        lines += ["The RL curriculum, easiest stage first:", "", "```bash", verl_command(out_dir, stages, custom),
                  "```", ""]
    return "\n".join(lines)


def trl_snippet(out_dir: str) -> list[str]:
    """SFT on sft.parquet, then GRPO on grpo.parquet rewarded by curate's verifiers; `MODEL` is the user's."""
    return ["from datasets import load_dataset",
            "from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer",
            "from curate.rewards import trl_reward", "",
            f"sft = load_dataset(\"parquet\", data_files={json.dumps(f'{out_dir}/sft.parquet')}, split=\"train\")",
            "SFTTrainer(model=MODEL, train_dataset=sft, args=SFTConfig(output_dir=\"sft\")).train()",
            f"grpo = load_dataset(\"parquet\", data_files={json.dumps(f'{out_dir}/grpo.parquet')}, split=\"train\")",
            "GRPOTrainer(model=MODEL, reward_funcs=trl_reward(\"math\"), train_dataset=grpo,",
            "            args=GRPOConfig(output_dir=\"grpo\")).train()"]
