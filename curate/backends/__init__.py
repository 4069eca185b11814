"""Backends by name. The choice is explicit (`--backend`), never sniffed from a model name.

A backend receives a BackendConfig (curate.config) and nothing else of a run: the engine hands it requests
(curate.backends.base.Request) and sampling settings, and it hands back completions. Each entry of BACKENDS says
how to make its backend and which of its settings the answers depend on (its identity, recorded in a run's
manifest, so that a resumed run answers as it began). An entry imports its backend's module only when the
backend is made: a run with nothing left to ask loads no torch, vLLM or aiohttp.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from curate.backends.base import (
    Alternatives,
    Backend,
    Completion,
    Request,
    TokenLogprobs,
    sample_seed,
)
from curate.backends.models import model_fingerprint, resolve_model
from curate.config import BackendConfig, SamplingConfig
from curate.errors import BackendError, ConfigError
from curate.identity import engine_args_identity

# How the transformers backend draws sampled tokens: a resumed run must draw as it began. (vLLM and servers sample
# with their own seeded generators.) See curate/backends/sampling.py.
TRANSFORMERS_SAMPLER = "inverse-cdf in vocabulary order, splitmix64 uniforms per (item, sample, step), v2"


@dataclass(frozen=True)
class BackendKind:
    """How a backend is made from its settings, what of them (and of sampling) its answers depend on, and which of
    them it refuses (raising ConfigError) before a run folder is written or a model loaded."""

    make: Callable[[BackendConfig], Backend]
    identity: Callable[[BackendConfig, SamplingConfig], dict[str, Any]]
    refuse: Callable[[BackendConfig], None] = lambda settings: None


def _transformers(settings: BackendConfig) -> Backend:
    from curate.backends.transformers import TransformersBackend  # imports torch: only when chosen

    return TransformersBackend(settings)


def _transformers_identity(settings: BackendConfig, sampling: SamplingConfig) -> dict[str, Any]:
    return {"dtype": settings.dtype, **({"sampler": TRANSFORMERS_SAMPLER} if sampling.temperature > 0 else {})}


def _openai(settings: BackendConfig) -> Backend:
    try:
        from curate.backends.openai import OpenAIBackend
    except ImportError as exc:
        raise BackendError(f"--backend openai needs aiohttp, tenacity and aiolimiter ({exc}); "
                           "install them with: pip install 'dereason[openai]'") from exc
    return OpenAIBackend(settings)


def _openai_identity(settings: BackendConfig, sampling: SamplingConfig) -> dict[str, Any]:
    endpoint = settings.endpoint
    return {"endpoint": endpoint.endpoint, "use_n": endpoint.use_n, "tokenizer": endpoint.tokenizer,
            "tokenizer_fingerprint": model_fingerprint(endpoint.tokenizer) if endpoint.tokenizer else ""}


def _vllm(settings: BackendConfig) -> Backend:
    from curate.backends.vllm import VLLMBackend  # imports vllm itself only when constructed

    return VLLMBackend(settings)


def _vllm_identity(settings: BackendConfig, sampling: SamplingConfig) -> dict[str, Any]:
    return {"dtype": settings.dtype, "engine_args": engine_args_identity(settings.engine_args)}


def _vllm_refuse(settings: BackendConfig) -> None:
    # vLLM 0.32's in-process LLM raises for data_parallel_size > 1 ("not supported for single-process usage and may
    # hang"): its data parallelism is one process per rank.
    if settings.engine_args.get("data_parallel_size", 1) != 1:
        raise ConfigError("--engine-arg data_parallel_size: vLLM's in-process engine runs one data-parallel rank; for "
                          "one engine per GPU use --executor ray, or serve the model with vLLM's --data-parallel-size "
                          "and score through --backend openai (README: vLLM at scale)")


BACKENDS: dict[str, BackendKind] = {"transformers": BackendKind(_transformers, _transformers_identity),
                                    "openai": BackendKind(_openai, _openai_identity),
                                    "vllm": BackendKind(_vllm, _vllm_identity, _vllm_refuse)}


def backend_kind(name: str) -> BackendKind:
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name]


def checked_kind(settings: BackendConfig) -> BackendKind:
    """The kind of backend `settings` names, once it has checked them: before a run's identity is taken, a backend
    made, or a lazy one promised (here, or by an executor's: curate.executors)."""
    kind = backend_kind(settings.backend)
    kind.refuse(settings)
    return kind


def backend_identity(settings: BackendConfig, sampling: SamplingConfig) -> dict[str, Any]:
    """What a backend's answers depend on, for a run's identity: the model (and its files' fingerprint), the backend,
    and the settings that backend reads."""
    return {"model": settings.model, "model_fingerprint": model_fingerprint(settings.model),
            "backend": settings.backend, **checked_kind(settings).identity(settings, sampling)}


def create_backend(settings: BackendConfig) -> Backend:
    return checked_kind(settings).make(settings)


class LazyBackend:
    """The backend `settings` names, made at its first request: a run with nothing left to ask loads no model."""

    def __init__(self, settings: BackendConfig):
        checked_kind(settings)
        self.settings, self.name, self.model_id = settings, settings.backend, settings.model
        self._backend: Backend | None = None

    def generate(self, requests: Iterable[Request], sampling: SamplingConfig) -> Iterator[Completion]:
        if self._backend is None:
            self._backend = create_backend(self.settings)
        return self._backend.generate(requests, sampling)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


__all__ = ["BACKENDS", "Alternatives", "Backend", "BackendKind", "Completion", "LazyBackend", "Request",
           "TokenLogprobs", "backend_identity", "backend_kind", "checked_kind", "create_backend", "model_fingerprint",
           "resolve_model", "sample_seed"]
