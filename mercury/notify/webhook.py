"""Webhook delivery: one HTTP POST of the rendered JSON payload, as mercure sends it."""

from __future__ import annotations

import functools
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from mercury.notify.errors import DeliveryFailed

TIMEOUT = 10.0
"""Seconds for connecting, and for each read or write of the request."""

# Statuses worth another try: the server is busy, restarting or overloaded. Any other
# 4xx answer refuses the request itself, and would refuse it again.
_TRANSIENT_STATUSES = frozenset({408, 425, 429})


def describe_url(url: str) -> str:
    """The URL without its path, query and credentials, which often hold the webhook's
    secret (Slack, Teams): what the journal may show."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


@functools.lru_cache(maxsize=8)
def _verify(ca_bundle: str | None) -> ssl.SSLContext | bool:
    if ca_bundle is None:
        return True
    return ssl.create_default_context(cafile=ca_bundle)


def post(url: str, payload: Any, *, ca_bundle: Path | None = None, timeout: float = TIMEOUT) -> str:
    """POST ``payload`` as JSON; returns how the server answered (``HTTP 200``). Raises
    :class:`DeliveryFailed` for a refusal, a non-2xx answer or a network failure."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DeliveryFailed(
            f"notification_webhook must be an http:// or https:// URL, not {url[:40]!r}",
            permanent=True,
        )
    try:
        verify = _verify(str(ca_bundle) if ca_bundle is not None else None)
    except (OSError, ssl.SSLError) as error:
        raise DeliveryFailed(
            f"cannot load notifications.webhook_ca_bundle {ca_bundle}: {error}", permanent=True
        ) from error
    where = describe_url(url)
    try:
        with httpx.Client(verify=verify, timeout=timeout, follow_redirects=False) as client:
            response = client.post(url, json=payload)
    except httpx.TimeoutException as error:
        raise DeliveryFailed(f"{where} did not answer within {timeout:g} s ({error})") from error
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
        raise DeliveryFailed(f"invalid webhook URL: {error}", permanent=True) from error
    except httpx.TransportError as error:
        reason = str(error) or type(error).__name__
        if _untrusted(error):
            raise DeliveryFailed(
                f"{where}: the server's certificate is not trusted ({reason}); add its CA to "
                "notifications.webhook_ca_bundle",
                permanent=True,
            ) from error
        raise DeliveryFailed(f"{where} unreachable: {reason}") from error
    status = response.status_code
    if 200 <= status < 300:
        return f"HTTP {status}"
    answer = response.text.strip().replace("\n", " ")[:200]
    message = f"{where} answered HTTP {status}" + (f": {answer}" if answer else "")
    permanent = status < 500 and status not in _TRANSIENT_STATUSES
    raise DeliveryFailed(message, permanent=permanent)


def _untrusted(error: BaseException) -> bool:
    """Whether a certificate verification failure is among the error's causes."""
    seen: BaseException | None = error
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
