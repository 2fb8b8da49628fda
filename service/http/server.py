"""The HTTP/1.1 connections under the app: how long clients may take, and how many.

aiohttp parses requests before the app sees them. Here its connection protocol gets
what the service needs at that level: a request's headers must arrive within
`header_timeout` of its first byte (a slow-loris client is cut off), at most
`max_connections` are open at once (more are answered 503 and closed), idle
connections close after `keepalive_timeout`, and what the parser refuses (a bad header,
an over-long line) is answered with a problem document like every other error.
Bodies have their own timeout where they are read (driftline.http.codec).

aiohttp has no hooks for these: EdgeProtocol extends its RequestHandler and reads two
of its internals (`_messages`, `_request_count`), EdgeRunner its gathered options.
tests/test_http_server.py drives each behaviour through a real process, so an aiohttp
release that changes them fails there first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.web_request import BaseRequest

from driftline.http.problems import PROBLEM_CONTENT_TYPE, FieldError, ProblemError
from driftline.settings import ServerSettings

log = logging.getLogger(__name__)

# How long a connection answered outside a request (408, 503) stays open for the client
# to read the answer; also how long a refused body is drained before closing.
LINGER_SECONDS = 1.0


def _raw_problem(status: int, reason: str, problem: ProblemError) -> bytes:
    """A whole HTTP response carrying a problem, for answers given outside a request."""
    body = msgspec.json.encode(problem.document())
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {PROBLEM_CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    head += "".join(f"{k}: {v}\r\n" for k, v in problem.headers.items())
    return head.encode() + b"\r\n" + body


class EdgeProtocol(web.RequestHandler):
    """aiohttp's connection protocol with a header timeout, a connection limit and problems."""

    def __init__(self, manager: EdgeServer, *, edge: ServerSettings, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._server = manager
        self._edge = edge
        self._header_deadline: asyncio.TimerHandle | None = None
        self._body: Any = None  # the payload of the latest request, while it is being read
        self._rejected = False  # answered outside a request: what comes now is discarded
        self._counted = False  # one of the server's open connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection; past the limit, answer 503 and close it."""
        super().connection_made(transport)
        limit = self._edge.max_connections
        if self._server.open_connections < limit:
            self._server.open_connections += 1
            self._counted = True
            return
        problem = ProblemError(
            503,
            "too-many-connections",
            f"the service has {limit} connections open, its limit; retry",
            [FieldError("connection", f"at most {limit} open at once")],
            headers={"Retry-After": "1"},
        )
        self._reject(_raw_problem(503, "Service Unavailable", problem))

    def data_received(self, data: bytes) -> None:
        """Parse as aiohttp does; start the header clock at a request's first byte."""
        if self._rejected:
            return
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            # Headers complete: this request's clock stops; its body has its own.
            self._disarm()
            self._body = self._messages[-1][1] if self._messages else None
        elif (
            data
            and self._header_deadline is None
            and (self._body is None or self._body.is_eof())
            and self.transport is not None
        ):
            self._header_deadline = self._loop.call_later(
                self._edge.header_timeout, self._headers_too_slow
            )

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        seconds = self._edge.header_timeout
        log.debug("request headers too slow: connection closed", extra={"seconds": seconds})
        problem = ProblemError(
            408,
            "header-timeout",
            f"the request headers did not arrive within {seconds:g} s",
            [FieldError("headers", f"expected within {seconds:g} s of the first byte")],
        )
        self._reject(_raw_problem(408, "Request Timeout", problem))

    def _reject(self, response: bytes) -> None:
        """Answer outside a request and close, after a moment for the client to read it.

        Closing at once with unread input makes the kernel send a reset, which can
        destroy the answer before the client reads it: half-close, discard what still
        comes, close after LINGER_SECONDS (or when the client closes first).
        """
        transport = self.transport
        if transport is None or transport.is_closing() or self._rejected:
            return
        self._rejected = True
        self._disarm()
        transport.write(response)
        if transport.can_write_eof():
            transport.write_eof()
        self._loop.call_later(LINGER_SECONDS, self.force_close)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stop the header clock with the connection; it no longer counts."""
        self._disarm()
        if self._counted:
            self._counted = False
            self._server.open_connections -= 1
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """What aiohttp's parser refuses (or a failure outside the app), as a problem."""
        if status >= 500:
            log.error("request failed outside the app", exc_info=exc)
            problem = ProblemError(status, "internal", "internal error; it has been logged")
        else:
            log.debug("request refused by the HTTP parser", extra={"error": message})
            text = (message or "malformed request").splitlines()[0]
            problem = ProblemError(
                status,
                "bad-request",
                f"the request is not valid HTTP/1.1: {text}",
                [FieldError("request", text)],
            )
        response = web.Response(
            body=msgspec.json.encode(problem.document()),
            status=status,
            content_type=PROBLEM_CONTENT_TYPE,
        )
        response.force_close()
        return response


class EdgeServer(web.Server):
    """aiohttp's low-level server, making EdgeProtocol connections."""

    def __init__(
        self,
        handler: Any,
        *,
        edge: ServerSettings,
        request_factory: Any,
        handler_cancellation: bool,
        **protocol_options: Any,
    ) -> None:
        super().__init__(
            handler,
            request_factory=request_factory,
            handler_cancellation=handler_cancellation,
            **protocol_options,
        )
        self._edge = edge
        self._protocol_options = protocol_options
        self.open_connections = 0  # connections admitted under the limit, still open

    def __call__(self) -> EdgeProtocol:
        """A protocol for a new connection."""
        return EdgeProtocol(self, loop=self._loop, edge=self._edge, **self._protocol_options)


class EdgeRunner(web.AppRunner):
    """AppRunner serving the app through EdgeServer."""

    def __init__(self, app: web.Application, *, edge: ServerSettings, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._edge_settings = edge

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        # The protocol options aiohttp gathered (the runner's, and the app's handler_args).
        options = {
            **plain._kwargs,
            "keepalive_timeout": self._edge_settings.keepalive_timeout,
            # aiohttp drains an unread body for 10 s by default: a slow client would hold
            # its connection that long after its refusal.
            "lingering_time": LINGER_SECONDS,
        }
        return EdgeServer(
            plain.request_handler,
            edge=self._edge_settings,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            **options,
        )
