"""dereason's curation engine: LLM-judged reasoning intensity, stored crash-safe, aggregated in Polars."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dereason")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# Imported after __version__, which the engine records in every manifest.
from curate.config import DataConfig, PairwiseConfig, RunConfig, SamplingConfig  # noqa: E402
from curate.engine import pairs, reparse, score  # noqa: E402
from curate.store import read_judgments as load_judgments  # noqa: E402

__all__ = ["DataConfig", "PairwiseConfig", "SamplingConfig", "RunConfig", "__version__", "load_judgments", "pairs",
           "reparse", "score"]
