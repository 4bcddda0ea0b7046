"""When to retry, and how long to wait: pure decisions, shared by the sync and async clients."""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx2

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy"]

#: Statuses worth another try: the request may well succeed a moment later.
RETRYABLE_STATUSES = frozenset({408, 429, 502, 503, 504})

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

# Errors raised before a single byte of the request left this machine: safe to retry any method.
_NOT_SENT_ERRORS: tuple[type[Exception], ...] = (
    httpx2.ConnectError,
    httpx2.ConnectTimeout,
    httpx2.PoolTimeout,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter; `Retry-After` wins when it asks for longer.

    A request that is not idempotent (POST, PATCH) is retried only when it cannot have reached the
    server (the connection was never made), so a command never runs twice. Streams are retried only
    before their first byte: the retry loop ends once response headers have arrived.
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.25
    #: The longest `Retry-After` honoured; a server asking for more gets an error instead.
    max_retry_after: float = 60.0

    def should_retry_status(self, attempt: int, method: str, status: int, retry_after: float | None) -> bool:
        """Whether a response with `status` on try number `attempt` (0-based) deserves another try."""
        if attempt >= self.max_retries or status not in RETRYABLE_STATUSES:
            return False
        if retry_after is not None and retry_after > self.max_retry_after:
            return False
        # 429/503 mean "not processed"; a 502/504/408 after a POST may have run it.
        return method.upper() in _IDEMPOTENT_METHODS or status in (429, 503)

    def should_retry_error(self, attempt: int, method: str, error: Exception) -> bool:
        """Whether a transport error on try number `attempt` deserves another try."""
        if attempt >= self.max_retries:
            return False
        if isinstance(error, _NOT_SENT_ERRORS):
            return True
        return method.upper() in _IDEMPOTENT_METHODS and isinstance(error, httpx2.TransportError)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before try number `attempt + 1`."""
        base = min(self.initial_delay * 2.0**attempt, self.max_delay)
        computed = base * (1 + random.uniform(-self.jitter, self.jitter))  # noqa: S311 - not crypto
        if retry_after is not None and retry_after > computed:
            return min(retry_after, self.max_retry_after)
        return max(0.0, computed)
