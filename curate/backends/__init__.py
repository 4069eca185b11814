"""Backends by name. The choice is explicit (`--backend`), never sniffed from a model name."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from curate.backends.base import (
    Alternatives,
    Backend,
    Completion,
    Request,
    TokenLogprobs,
    sample_seed,
)
from curate.backends.models import model_fingerprint, resolve_model
from curate.config import RunConfig, SamplingConfig
from curate.errors import BackendError, ConfigError


def _transformers(config: RunConfig) -> Backend:
    from curate.backends.transformers import (
        TransformersBackend,  # imports torch: only when chosen
    )

    return TransformersBackend(config)


def _openai(config: RunConfig) -> Backend:
    try:
        from curate.backends.openai import OpenAIBackend
    except ImportError as exc:
        raise BackendError(f"--backend openai needs aiohttp, tenacity and aiolimiter ({exc}); "
                           "install them with: pip install 'dereason[openai]'") from exc
    return OpenAIBackend(config)


def _vllm(config: RunConfig) -> Backend:
    from curate.backends.vllm import (
        VLLMBackend,  # imports vllm itself only when constructed
    )

    return VLLMBackend(config)


BACKENDS: dict[str, Callable[[RunConfig], Backend]] = {"transformers": _transformers, "openai": _openai,
                                                         "vllm": _vllm}


# How a backend of ours draws sampled tokens, recorded in a sampled run's identity: a resumed run must draw as
# it began. (vLLM and servers sample with their own seeded generators.) See curate/backends/sampling.py.
SAMPLERS = {"transformers": "inverse-cdf in vocabulary order, splitmix64 uniforms per (item, sample, step), v2"}


def check_backend_name(name: str) -> None:
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")


def create_backend(config: RunConfig) -> Backend:
    check_backend_name(config.backend)
    return BACKENDS[config.backend](config)


class LazyBackend:
    """The backend `config` names, created at its first request: a run with nothing left to ask loads no model."""

    def __init__(self, config: RunConfig):
        check_backend_name(config.backend)
        self.config, self.name, self.model_id = config, config.backend, config.model
        self._backend: Backend | None = None

    def generate(self, requests: Iterable[Request], sampling: SamplingConfig) -> Iterator[Completion]:
        if self._backend is None:
            self._backend = create_backend(self.config)
        return self._backend.generate(requests, sampling)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


__all__ = ["BACKENDS", "SAMPLERS", "Alternatives", "Backend", "Completion", "LazyBackend", "Request", "TokenLogprobs",
           "check_backend_name", "create_backend", "model_fingerprint", "resolve_model", "sample_seed"]
