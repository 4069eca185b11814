"""The seams hold: backends know neither runs nor judges, and no code outside the backends' dict branches on a
backend's name."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BACKEND_NAMES = {"transformers", "openai", "vllm"}


def modules(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (REPO / folder).rglob("*.py"))


def imported_names(path: Path) -> set[str]:
    """Every module and `module.name` a file imports, at any depth of it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("path", modules("curate/backends"), ids=lambda p: p.name)
def test_a_backend_receives_no_run_and_knows_no_judge(path):
    names = imported_names(path)
    assert "curate.config.RunConfig" not in names, "a backend receives a BackendConfig, not a run's settings"
    assert not {name for name in names if name.startswith(("curate.parse", "curate.tasks", "curate.engine"))}, \
        "a backend knows no parser, task or engine: a Request says what it may answer (first_tokens)"


def test_no_code_outside_the_backends_dict_branches_on_a_backend_name():
    branching = []
    for path in modules("curate", "train"):
        if path == REPO / "curate" / "backends" / "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and any(
                    isinstance(part, ast.Constant) and part.value in BACKEND_NAMES
                    for part in (node.left, *node.comparators)):
                branching.append(f"{path.relative_to(REPO)}:{node.lineno}")
            if isinstance(node, ast.Compare) and any(
                    isinstance(part, (ast.Tuple, ast.List, ast.Set)) and any(
                        isinstance(e, ast.Constant) and e.value in BACKEND_NAMES for e in part.elts)
                    for part in node.comparators):
                branching.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert branching == []


def test_rewards_and_verifiers_build_no_run():
    for path in modules("curate/verify") + [REPO / "curate" / "rewards.py"]:
        assert '"unused"' not in path.read_text(encoding="utf-8"), path


def test_every_export_format_the_command_takes_has_its_exporter():
    from curate.command_config import FORMATS
    from curate.export.exporters import EXPORTERS

    assert tuple(EXPORTERS) == FORMATS
