"""The Ray executor: a run's requests answered on a Ray Data actor pool, the answers streamed back to the engine.

The requests still wanted become a Ray Dataset of blocks of `ray_batch_size` requests; `map_batches` runs the blocks on
`ray_actors` actors, each of which makes one backend from the run's BackendConfig when it starts (a vLLM engine or a
transformers model per actor, on a GPU of its own with --ray-actor-gpus 1, or an endpoint client) and answers a block
at a time. The driver reads answered blocks as they finish, in any order, and hands them to the engine, which commits
them to the store as it does a local backend's: the store keeps one writer, so exactly-once holds however many
machines answer. An actor that dies is restarted and its block asked again (Ray's actor fault tolerance,
`ray_actor_restarts` times); past that, or when the driver dies, only the answers not yet committed are lost, and the
next run asks for what is missing.

Answers do not depend on which actor gives them or with what: every backend seeds each (item, sample) on its own
(curate.backends.sample_seed) and batches without changing results. Ray's `ray.data.llm` is not used: it pins a CUDA
vLLM, and these actors hold dereason's own backends, which run on CPUs too.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from curate import errors
from curate.backends import Completion, Request, TokenLogprobs, checked_kind, create_backend
from curate.config import BackendConfig, ExecutionConfig, SamplingConfig
from curate.errors import BackendError, DereasonError

log = logging.getLogger(__name__)

INSTALL_HINT = "--executor ray needs Ray Data, which is not installed: pip install 'dereason[ray]'"
REQUESTS = pa.schema([("item_id", pa.string()), ("sample_indices", pa.list_(pa.int64())),
                      ("messages", pa.string()), ("first_tokens", pa.list_(pa.string()))])
# An actor's creation error reaches the driver as text only (ray.exceptions.ActorDiedError.error_msg), its last line
# the exception as Python printed it.
OWN_ERROR = re.compile(r"^curate\.errors\.(?P<kind>\w+): (?P<message>.*)\Z", re.MULTILINE)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
COMPLETIONS = pa.schema([("item_id", pa.string()), ("sample_idx", pa.int64()), ("text", pa.string()),
                         ("finish_reason", pa.string()), ("prompt_tokens", pa.int64()),
                         ("completion_tokens", pa.int64()), ("error", pa.string()), ("logprobs", pa.string())])


def requests_table(requests: Iterable[Request]) -> pa.Table:
    """Requests as Arrow rows (messages as JSON text): what travels to the actors."""
    listed = list(requests)
    return pa.table({"item_id": [r.item_id for r in listed], "sample_indices": [list(r.sample_indices) for r in listed],
                     "messages": [json.dumps(r.messages) for r in listed],
                     "first_tokens": [list(r.first_tokens) for r in listed]}, schema=REQUESTS)


def table_requests(table: pa.Table) -> list[Request]:
    return [Request(row["item_id"], tuple(row["sample_indices"]), tuple(json.loads(row["messages"])),
                    tuple(row["first_tokens"])) for row in table.to_pylist()]


def completions_table(completions: Iterable[Completion]) -> pa.Table:
    """Completions as Arrow rows (each token's top logprobs as JSON text): what travels back to the driver."""
    columns: dict[str, list[Any]] = {name: [] for name in COMPLETIONS.names}
    for completion in completions:
        for name in COMPLETIONS.names:
            value = getattr(completion, name)
            columns[name].append(json.dumps(value) if name == "logprobs" else value)
    return pa.table(columns, schema=COMPLETIONS)


def table_completions(table: pa.Table) -> Iterator[Completion]:
    for row in table.to_pylist():
        logprobs = tuple(TokenLogprobs(token, tuple((text, logprob) for text, logprob in alternatives))
                         for token, alternatives in json.loads(row["logprobs"]))
        yield Completion(**{**row, "logprobs": logprobs})


class BackendActor:
    """One actor of the pool: one backend, made when the actor starts, answering a block of requests per call."""

    def __init__(self, settings: BackendConfig, sampling: SamplingConfig):
        self.backend, self.sampling = create_backend(settings), sampling

    def __call__(self, block: pa.Table) -> pa.Table:
        return completions_table(self.backend.generate(table_requests(block), self.sampling))


class RayPoolBackend:
    """A Backend whose answers come from a Ray actor pool (module docstring); Ray starts at the first request."""

    name = "ray"

    def __init__(self, settings: BackendConfig, execution: ExecutionConfig):
        checked_kind(settings)  # refused here, as a LazyBackend refuses, not by an actor on the cluster
        self.settings, self.execution, self.model_id = settings, execution, settings.model
        self._started_ray = False

    def generate(self, requests: Iterable[Request], sampling: SamplingConfig) -> Iterator[Completion]:
        table = requests_table(requests)
        if not table.num_rows:
            return
        ray = self._ray()
        size = self.execution.ray_batch_size
        dataset = ray.data.from_arrow([table.slice(start, size) for start in range(0, table.num_rows, size)])
        with warnings.catch_warnings():
            # Ray 2.60 deprecates remote arguments passed as keywords, yet names no other way to bound an actor's
            # restarts (its actor pool's own comment says to pass max_restarts to map_batches).
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", category=DeprecationWarning)
            answered = dataset.map_batches(
                BackendActor, batch_size=None, batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=self.execution.ray_actors),
                fn_constructor_kwargs={"settings": self.settings, "sampling": sampling},
                num_cpus=self.execution.ray_actor_cpus, num_gpus=self.execution.ray_actor_gpus,
                max_restarts=self.execution.ray_actor_restarts, max_task_retries=self.execution.ray_actor_restarts)
        log.info("Ray: %d requests in %d blocks on %d actor(s) of %s", table.num_rows, dataset.num_blocks(),
                 self.execution.ray_actors, self.settings.backend)
        try:
            for block in answered.iter_batches(batch_size=None, batch_format="pyarrow"):
                yield from table_completions(block)
        except ray.exceptions.RayError as exc:
            raise _failure(exc) from exc

    def _ray(self) -> Any:
        try:
            import ray
            import ray.data
        except ImportError:
            raise BackendError(INSTALL_HINT) from None
        if not ray.is_initialized():
            ray.init(address=self.execution.ray_address, include_dashboard=False, logging_level=logging.WARNING)
            self._started_ray = True
        # The CLI draws its own progress bar; Ray Data's would write over it.
        ray.data.DataContext.get_current().enable_progress_bars = False
        return ray

    def close(self) -> None:
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False


def _failure(exc: Exception) -> DereasonError:
    """A pool that failed, as dereason's own error: a backend's own error (a model that does not load) is raised as it
    was, whether Ray kept the exception (a batch's) or only its text (an actor's creation); anything else says what
    Ray reported and that every answer received before it is stored."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, DereasonError):
        return cause
    text = ANSI.sub("", getattr(exc, "error_msg", None) or str(exc)).strip()
    raised = OWN_ERROR.search(text)
    if raised and isinstance(kind := getattr(errors, raised["kind"], None), type) \
            and issubclass(kind, DereasonError) and kind is not errors.FailureThresholdError:
        return kind(raised["message"])
    first_line = text.splitlines()[0] if text else type(exc).__name__
    return BackendError(f"the Ray actor pool stopped ({type(exc).__name__}: {first_line}); every answer received "
                        "before it is stored: run the same command again to ask for the rest")
