"""The dependency floors in pyproject.toml: high enough for what the code calls, declared for every import, and
met by the environment the tests run in.

Fast and offline, so it can only compare version numbers: it catches a floor lowered below an API recorded in
NEEDED, a package imported but not declared, and an environment older than the floors. It cannot find a new call
that needs a newer release than the floor: scripts/check_floors.sh installs every floor and runs the suite for that.
"""

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
SCANNED = ("curate", "train", "tests", "scripts", "benchmarks")

# Each floor that is above a package's long-standing API: the release that introduced what this project calls, or
# the floor of another dependency that the floors must install together with (found by scripts/check_floors.sh).
NEEDED = {
    "transformers": ("5.6.0", "AutoTokenizer.from_pretrained raising ValueError, not ImportError, on a folder "
                              "without a model (curate.backends.transformers catches it); `transformers serve "
                              "MODEL` with the model positional (tests' served_judge) is 5.5.0, "
                              "from_pretrained(dtype=) 4.56.0"),
    "math-verify": ("0.8.0", "parse(parsing_timeout=None) and verify(timeout_seconds=None) switch its SIGALRM "
                             "timeouts off (curate.verify.math_check); 0.7 calls signal.alarm(None)"),
    "tokenizers": ("0.22.1", "transformers 5.6 needs 0.22; 0.22.1 is the first that allows huggingface-hub 1.x"),
    "safetensors": ("0.4.3", "transformers 5.6's floor"),
    "huggingface-hub": ("1.5.0", "transformers 5.6's floor"),
    "datasets": ("4.7.0", "trl 1.0's floor (the TRL export tests)"),
    "pyarrow": ("21.0.0", "datasets 4.7's floor; pyarrow.types.is_string_view and is_list_view are 16.0.0"),
    "numpy": ("1.24.1", "scikit-learn 1.9's floor"),
    "polars": ("1.38.1", "DataFrame.to_numpy() of a frame with no columns (stats.self_consistency when no item has "
                         "two samples); Expr.is_in(Series.implode()) as set membership is 1.28.1"),
    "scipy": ("1.15.0", "scipy.stats.bootstrap(rng=)"),
    "scikit-learn": ("1.9.0", "sklearn.metrics.cohen_kappa_score(replace_undefined_by=)"),
    "matplotlib": ("3.10.0", "Axes.boxplot(orientation=)"),
    "openai": ("1.98.0", "transformers[serving] 5.6's floor"),
    "trl": ("1.16.0", "reward functions are handed `log_metric` (curate.rewards logs the verdict counts with it); "
                      "SFTTrainer swaps in TRL's training chat templates for assistant-only loss (train.sft)"),
    "peft": ("0.21.2", "the only release train's LoRA path (--lora) was tested with"),
    "click": ("8.2.0", "typer.testing.CliRunner results with a separate .stderr (tests' invoke)"),
}


def requirements(*groups: str) -> list[Requirement]:
    """The requirements of `dependencies` and the named extras, without the project's own self-references."""
    extras = PROJECT["optional-dependencies"]
    listed = [*PROJECT["dependencies"], *(r for group in groups for r in extras[group])]
    return [r for r in map(Requirement, listed) if canonicalize_name(r.name) != PROJECT["name"]]


def floor(requirement: Requirement) -> Version:
    (specifier,) = requirement.specifier
    return Version(specifier.version)


def test_every_dependency_has_exactly_one_floor():
    """scripts/check_floors.sh installs each `NAME>=X` as `NAME==X`: anything else cannot be checked."""
    for requirement in requirements(*PROJECT["optional-dependencies"]):
        operators = [s.operator for s in requirement.specifier]
        assert operators == [">="] and requirement.marker is None, f"{requirement}: give it one floor, NAME>=X"


@pytest.mark.parametrize("name", sorted(NEEDED))
def test_floor_covers_the_api_that_forced_it(name):
    needed, why = NEEDED[name]
    declared = [r for r in requirements(*PROJECT["optional-dependencies"]) if canonicalize_name(r.name) == name]
    assert declared, f"{name} is not declared in pyproject.toml, but {why}"
    for requirement in declared:
        assert floor(requirement) >= Version(needed), f"{requirement}: needs >= {needed}: {why}"


def test_this_environment_meets_the_floors():
    """Everything scripts/install.sh installs (the dependencies and the dev extra with the extras it names)."""
    dev_extras = next(r.extras for r in map(Requirement, PROJECT["optional-dependencies"]["dev"])
                      if canonicalize_name(r.name) == PROJECT["name"])
    for requirement in requirements("dev", *dev_extras):
        installed = metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), f"{requirement.name} {installed}: " \
            f"pyproject.toml asks for {requirement}; reinstall with bash scripts/install.sh"


def imported_modules() -> set[str]:
    """Top-level names of the absolute imports in the project's Python files."""
    names = set()
    for folder in SCANNED:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names.add(node.module.split(".")[0])
    return names


def test_every_imported_package_is_declared():
    """A package the code imports only through another dependency has no floor of its own."""
    first_party = {*SCANNED, *(path.stem for folder in SCANNED for path in (REPO / folder).rglob("*")
                               if path.is_dir() or path.suffix == ".py")}
    declared = {canonicalize_name(r.name) for r in requirements(*PROJECT["optional-dependencies"])}
    providers = metadata.packages_distributions()
    undeclared = {}
    for module in sorted(imported_modules() - set(sys.stdlib_module_names) - first_party):
        # A module that is not installed here (vllm) can only be checked by its own name.
        distributions = {canonicalize_name(d) for d in providers.get(module, [module])}
        if not distributions & declared:
            undeclared[module] = sorted(distributions)
    assert not undeclared, f"imported but not declared in pyproject.toml (module: distributions): {undeclared}"
