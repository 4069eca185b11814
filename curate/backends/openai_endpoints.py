"""Several servers behind one openai backend (`--base-url` repeated): which one takes the next attempt, and
which are backed off.

Each attempt goes to the endpoint with the fewest requests in flight among those not backed off (ties: the one
given first). An endpoint whose attempt failed in a way worth retrying (429, 5xx, a timeout, a dropped or refused
connection, an unusable answer) is backed off: for the Retry-After it named, else for tenacity's jittered
exponential wait over its run of failures. A failure while it is already backed off belongs to the same outage
and does not lengthen the wait (a server that stops fails all its open requests at once); an answer ends the run.
While another endpoint is not backed off, a failed request's next attempt goes there at once; when every endpoint
is backed off, the request waits its own backoff, as with one endpoint, and then goes to the least loaded of those
ready (of all, if none is yet). With one endpoint nothing changes: its requests go to it and wait as they always did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from tenacity import RetryCallState, wait_random_exponential

from curate.backends.openai_answer import RetryableError

log = logging.getLogger(__name__)

BACKOFF = wait_random_exponential(multiplier=0.5, max=30)


def backoff(failures: int) -> float:
    """Tenacity's jittered exponential wait after `failures` failures in a row."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]  # BACKOFF reads the attempt number only
    state.attempt_number = failures
    return BACKOFF(state)


@dataclass
class Endpoint:
    url: str  # the base URL, as given
    in_flight: int = 0
    failures: int = 0  # in a row: the length of its backoff
    backed_off_until: float = 0.0  # time.monotonic()
    answers: int = 0
    failed_attempts: int = 0

    def ready(self, now: float) -> bool:
        return now >= self.backed_off_until


class Endpoints:
    def __init__(self, base_urls: Sequence[str]):
        self.all = [Endpoint(url.rstrip("/")) for url in base_urls]

    @property
    def several(self) -> bool:
        return len(self.all) > 1

    def ready(self) -> bool:
        """Whether an endpoint can take an attempt now."""
        now = time.monotonic()
        return any(endpoint.ready(now) for endpoint in self.all)

    @contextmanager
    def attempt(self) -> Iterator[Endpoint]:
        """The endpoint the next attempt goes to, counted in flight while the attempt lasts; a retryable failure
        backs it off, an answer ends its run of failures."""
        now = time.monotonic()
        candidates = [endpoint for endpoint in self.all if endpoint.ready(now)] or self.all
        endpoint = min(candidates, key=lambda each: each.in_flight)  # min keeps the first of equals
        endpoint.in_flight += 1
        try:
            yield endpoint
        except RetryableError as exc:
            self._back_off(endpoint, exc.retry_after)
            raise
        else:
            endpoint.failures = 0
            endpoint.answers += 1
        finally:
            endpoint.in_flight -= 1

    @staticmethod
    def _back_off(endpoint: Endpoint, retry_after: float | None) -> None:
        now = time.monotonic()
        endpoint.failed_attempts += 1
        if endpoint.ready(now):
            endpoint.failures += 1
            endpoint.backed_off_until = now + (retry_after if retry_after is not None else backoff(endpoint.failures))
        elif retry_after is not None:
            endpoint.backed_off_until = max(endpoint.backed_off_until, now + retry_after)

    def log_counts(self) -> None:
        for endpoint in self.all if self.several else ():
            log.info("%s: %d answers, %d failed attempts", endpoint.url, endpoint.answers, endpoint.failed_attempts)
