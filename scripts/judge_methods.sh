#!/usr/bin/env bash
# Score one file with the real SmolLM2-135M-Instruct judge by each way of reading a score, then print, per
# method, the share of judgments `ok`, the probability the score tokens held, and Spearman against a reference
# field (item score = expected score where a distribution exists, else the mean score).
#   bash scripts/judge_methods.sh DATA REFERENCE_FIELD [LIMIT] [RATIONALE_LIMIT]
# e.g. bash scripts/judge_methods.sh ../shared/data/eval/math500_test.jsonl level 500 100
# Runs go to runs/judge_methods/<method>; rerunning resumes them.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1 field=$2 limit=${3:-500} rationale_limit=${4:-100}
export HF_HUB_OFFLINE=1
common=(--model bundled:smollm2-135m --question-field problem --max-failure-fraction 1 --top-logprobs 20)
declare -A methods=(
  [first_token]="--template difficulty/intensity_score_only --max-tokens 1 --limit $limit"
  [constrained]="--template difficulty/intensity_score_only --max-tokens 1 --constrain-score --limit $limit"
  [prefill]="--template difficulty/intensity_prefilled --max-tokens 1 --limit $limit"
  [prefill_constrained]="--template difficulty/intensity_prefilled --max-tokens 1 --constrain-score --limit $limit"
  [rationale_tag]="--template difficulty/intensity --max-tokens 512 --limit $rationale_limit"
)
mkdir -p runs/judge_methods
for method in first_token constrained prefill prefill_constrained rationale_tag; do
  out=runs/judge_methods/$method
  start=$(date +%s)
  # shellcheck disable=SC2086  # the method's flags are meant to split
  .venv/bin/curate score "$data" "${common[@]}" ${methods[$method]} --out "$out" --json > "$out.summary.json" || true
  echo "$method: scored in $(( $(date +%s) - start )) s" >&2
  .venv/bin/curate stats "$out" --reference "$field" --score expected --json > "$out.stats.json" 2>/dev/null \
    || .venv/bin/curate stats "$out" --reference "$field" --json > "$out.stats.json"
done
.venv/bin/python - <<'PY'
import json
from pathlib import Path

import polars as pl

import curate

print(f"{'method':<20} {'judged':>6} {'ok':>6} {'methods':<28} {'mass median':>11} {'Spearman (95% CI)':>24}")
for method in ["first_token", "constrained", "prefill", "prefill_constrained", "rationale_tag"]:
    run = Path("runs/judge_methods") / method
    judgments = curate.load_judgments(run)
    stats = json.loads(Path(f"{run}.stats.json").read_text())
    ok = (judgments["status"] == "ok").mean()
    counts = judgments.filter(pl.col("status") == "ok")["score_method"].value_counts(sort=True).rows()
    mass = judgments["score_mass"].drop_nulls()
    rho = (stats.get("reference") or {}).get("spearman") or {}
    value = "n/a" if rho.get("value") is None else f"{rho['value']:.3f} [{rho['low']:.3f}, {rho['high']:.3f}]"
    print(f"{method:<20} {judgments.height:>6} {ok:>6.1%} {', '.join(f'{m} {n}' for m, n in counts):<28} "
          f"{(f'{mass.median():.3f}' if mass.len() else 'n/a'):>11} {value:>24}")
PY
