"""Offline, CPU-only test setup: a private HF_HOME, tiny models built here, a scripted backend."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

# Before anything imports transformers or huggingface_hub: nothing may reach (or cache from) a hub.
_HF_HOME = Path(tempfile.mkdtemp(prefix="dereason-hf-"))
(_HF_HOME / "hub").mkdir()
os.environ.update({"HF_HUB_OFFLINE": "1", "HF_HOME": str(_HF_HOME), "HF_HUB_CACHE": str(_HF_HOME / "hub"),
                   "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                   "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"})

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "curate" / "bundled" / "math-sample.jsonl"


@pytest.fixture(scope="session")
def sample_rows() -> list[dict]:
    """The bundled held-out MATH sample (see curate/bundled/README.md for its source)."""
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_random_qwen2

    corpus = [p.read_text() for p in (REPO / "prompts").rglob("*.jinja")]
    corpus += [f"Problem {i}: what is {i} + {2 * i}? Find the value of x if x^{i} = {i * i}." for i in range(200)]
    return build_random_qwen2(tmp_path_factory.mktemp("random-qwen2"), corpus)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
