"""Secrets kept out of everything dereason stores or prints.

An API key lives only in the environment variable `--api-key-env` names, and in the headers of the requests
sent with it. A server may echo it back (`401 Incorrect API key provided: sk-…`, or a proxy's "your key was
Bearer sk-…"), and that text would otherwise reach a judgment's `detail` and the terminal: `redact` replaces
the key itself, any `Authorization`/`Bearer` value and anything shaped like an `sk-` key with `[redacted]`.
Credentials inside a URL (`http://user:password@host/v1`) are refused before anything is written, since a URL
is recorded in the run's config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from curate.errors import ConfigError

REDACTED = "[redacted]"
# An Authorization header's value (`Authorization: Bearer x`, `"authorization": "x"`), a bare `Bearer x`, and keys
# in the `sk-` shape many providers use, also as servers echo them half masked (`sk-abc***xyz`).
_CREDENTIALS = re.compile(
    r"(?i)(?P<lead>\bauthorization\b[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic)\s+)?|\bbearer\s+)[^\s\"',;}]+"
    r"|\bsk-[A-Za-z0-9_*\-]{6,}")
_SHORTEST_SECRET = 4  # a shorter value would blank out ordinary words


def secrets_in(environment_variables: Iterable[str]) -> tuple[str, ...]:
    """The values of these environment variables (API keys), to be kept out of what is stored or printed."""
    values = (os.environ.get(name, "").strip() for name in environment_variables)
    return tuple(value for value in values if len(value) >= _SHORTEST_SECRET)


def redact(text: str, secrets: Iterable[str] = (), shaped: bool = True) -> str:
    """`text` without the `secrets` themselves and, with `shaped` (what a server or the machinery said, not a
    model's answer, where "Bearer" may be a word), without anything shaped like a credential."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return _CREDENTIALS.sub(lambda match: f"{match['lead'] or ''}{REDACTED}", text) if shaped and text else text


def refuse_url_credentials(option: str, url: str | None) -> None:
    """ConfigError when `url` carries a user or password: the URL is recorded with the run, a secret must not be."""
    if url is None:
        return
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        shown = parts._replace(netloc=f"{REDACTED}@{parts.netloc.rpartition('@')[2]}").geturl()
        raise ConfigError(f"{option} {shown} carries credentials, which would be written to the run's manifest: give "
                          "the URL without them and the key in the environment variable --api-key-env names")
