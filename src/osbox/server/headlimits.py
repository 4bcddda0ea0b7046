"""Caps on the request head (request line + headers), enforced in the HTTP protocol, before the app.

uvicorn's httptools protocol has no limit of its own, and httptools joins the pieces of a header
value with `+=` as they arrive: one 64 MiB header cost seconds of CPU, 100+ MiB of memory and
stalled every other client, with no authentication needed (`/health`). `LimitedHttpToolsProtocol`
counts the head's bytes as they arrive, before the parser sees them, and refuses, before anything
reaches the app (authentication included):

- a head larger than `max_header_bytes`, or with more than `max_headers` headers → 431;
- a request target (URL) longer than `max_url_bytes` → 414.

The refusal is `{code, message}` JSON with `Connection: close`; the connection then discards what
the client is still sending for up to `_LINGER_SECONDS` (so the client reads the answer rather than
a reset) and is closed. (uvicorn's other protocol, h11, caps only the head's size, with
`h11_max_incomplete_event_size`; osbox always runs the httptools one.)
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import ServerConfig

__all__ = ["HeadLimits", "LimitedHttpToolsProtocol", "http_protocol"]

_LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class HeadLimits:
    """The largest request head accepted (see `ServerConfig` for the defaults)."""

    max_header_bytes: int
    max_headers: int
    max_url_bytes: int


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a request whose head is refused."""


def _answer(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"code": code, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the request head capped (see the module docstring)."""

    def __init__(self, *args: Any, limits: HeadLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._in_head = True  # from the end of one request to the end of the next one's head
        self._received_head_bytes = 0  # of the current head, as they arrive
        self._header_count = self._parsed_head_bytes = 0  # of the current head, as the parser hands it over
        self._refusal: bytes | None = None  # the answer a parser callback decided on
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: what the client still sends is dropped unread
        if self._in_head:
            room = self.limits.max_header_bytes - self._received_head_bytes
            if len(data) <= room:
                self._received_head_bytes += len(data)
            else:
                # Parse only what fits: a head that is still not complete after it is too large.
                if room > 0:
                    super().data_received(data[:room])
                    if self._refused or self.transport.get_protocol() is not self:  # refused, upgraded
                        return
                if self._in_head:
                    self._refuse(self._too_large())
                    return
                data = data[room:]
        super().data_received(data)

    # Parser callbacks.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = self._parsed_head_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._parsed_head_bytes += len(url)
        if len(self.url) > self.limits.max_url_bytes:
            message = f"the request URL is longer than {self.limits.max_url_bytes} bytes"
            self._stop(_answer(414, "URI Too Long", "URI_TOO_LONG", message))

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted here too (not only in data_received): a head that arrives in the same read as the
        # end of the previous request's body is parsed in one go, before data_received can count it.
        self._header_count += 1
        self._parsed_head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > self.limits.max_headers:
            message = f"the request has more than {self.limits.max_headers} headers"
            self._stop(_answer(431, "Request Header Fields Too Large", "REQUEST_HEADERS_TOO_LARGE", message))
        if self._parsed_head_bytes > self.limits.max_header_bytes:
            self._stop(self._too_large())
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._received_head_bytes = True, 0

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parser error with a 400, the one our callbacks raise included.
        if self._refusal is not None:
            self._refuse(self._refusal)
        else:
            super().send_400_response(msg)

    def _too_large(self) -> bytes:
        message = f"the request line and headers are larger than {self.limits.max_header_bytes} bytes"
        return _answer(431, "Request Header Fields Too Large", "REQUEST_HEADERS_TOO_LARGE", message)

    def _stop(self, answer: bytes) -> None:
        """Stop the parser from one of its callbacks; `answer` is sent instead of uvicorn's 400."""
        self._refusal = answer
        raise _HeadRefused

    def _refuse(self, answer: bytes) -> None:
        self._refused = True
        if self.transport.is_closing():
            return
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(_LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


def http_protocol(config: ServerConfig) -> Any:
    """The `http` protocol factory for `uvicorn.Config`, enforcing `config`'s request-head limits."""
    limits = HeadLimits(config.max_header_bytes, config.max_headers, config.max_url_bytes)
    return functools.partial(LimitedHttpToolsProtocol, limits=limits)
