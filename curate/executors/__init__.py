"""Executors by name: where a run's backend runs (`--executor`). The choice is explicit, like a backend's.

'local' makes the backend in this process (curate.backends.LazyBackend). 'ray' hands the requests to a Ray actor pool
(curate.executors.ray_pool), each actor holding one backend made from the same BackendConfig. Either way the engine
sees one Backend and stays the only writer of the run's store: exactly-once and resume do not depend on where the
answers were computed.
"""

from __future__ import annotations

from collections.abc import Callable

from curate.backends import Backend, LazyBackend
from curate.config import BackendConfig, ExecutionConfig, RunConfig


def _ray(settings: BackendConfig, execution: ExecutionConfig) -> Backend:
    from curate.executors.ray_pool import (
        RayPoolBackend,  # imports ray only when it is asked for
    )

    return RayPoolBackend(settings, execution)


EXECUTORS: dict[str, Callable[[BackendConfig, ExecutionConfig], Backend]] = {
    "local": lambda settings, execution: LazyBackend(settings),
    "ray": _ray,
}


def run_backend(config: RunConfig) -> Backend:
    """The backend a run's settings name (checked now), where its executor runs it; nothing starts before the first
    request."""
    return EXECUTORS[config.execution.executor](config.backend_config, config.execution)


__all__ = ["EXECUTORS", "run_backend"]
