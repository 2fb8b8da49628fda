"""RFC 9457 problem documents: every error the API returns, in one shape.

A problem carries `type`, `title`, `status`, `detail` and an `errors` list naming each
bad field path and what is allowed. The middleware turns every failure (ours,
aiohttp's, msgspec's, or an unexpected one) into one, and the connection protocol
(driftline.http.server) does the same for what the HTTP parser refuses, so a client
never sees text, HTML or a bare 500 page.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus

import msgspec
from aiohttp import web

from driftline.engine.commit import CommitterClosedError
from driftline.stores.protocol import StoreUnavailableError

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://driftline.io/problems/"


class FieldError(msgspec.Struct, frozen=True, omit_defaults=True):
    """One bad field: its path in the request and what is wrong with it.

    `reason` and `index` are left out when they do not apply (never sent as null).
    """

    field: str
    message: str
    reason: str | None = None
    index: int | None = None


class ProblemDocument(msgspec.Struct, frozen=True):
    """application/problem+json body; `errors` always names at least one field."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError]


class ProblemError(Exception):
    """Raise from a handler to answer with a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        errors: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
        *,
        counted: bool = False,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}
        # True when the engine already counted the refused events (invalid events metric).
        self.counted = counted

    def document(self) -> ProblemDocument:
        """The body to send (a problem raised without errors names the whole request)."""
        return ProblemDocument(
            type=PROBLEM_BASE + self.slug,
            title=HTTPStatus(self.status).phrase,
            status=self.status,
            detail=self.detail,
            errors=self.errors or [FieldError("request", self.detail)],
        )


def problem_response(problem: ProblemError) -> web.Response:
    """Encode a problem as an aiohttp response."""
    return web.Response(
        body=msgspec.json.encode(problem.document()),
        status=problem.status,
        content_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers,
    )


_AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def field_error(exc: msgspec.ValidationError, prefix: str = "") -> FieldError:
    """Turn msgspec's `Expected int, got str - at $.a.b` into a FieldError for `a.b`."""
    message = str(exc)
    path = ""
    match = _AT_PATH.search(message)
    if match:
        message = message[: match.start()]
        # msgspec writes `[...]` for "some key of this object": name the object instead.
        path = match.group("path").replace("[...]", "").lstrip(".")
    missing = re.match(r"Object missing required field `(?P<name>[^`]+)`", message)
    if missing:
        path = f"{path}.{missing.group('name')}" if path else missing.group("name")
        message = "required"
    field = f"{prefix}.{path}" if prefix and path and not path.startswith("[") else prefix + path
    return FieldError(field=field or "body", message=message[:1].lower() + message[1:])


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> ProblemError:
    status = exc.status
    if status == 413:
        message = exc.text or "too large"
        return ProblemError(
            413, "body-too-large", f"body: {message}", [FieldError("body", message)]
        )
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return ProblemError(
            405,
            "method-not-allowed",
            f"method {request.method} is not allowed on {request.path}; allowed: {allowed}",
            [FieldError("method", f"expected one of {allowed}")],
            headers={"Allow": allowed},
        )
    if status == 404:
        return ProblemError(
            404,
            "not-found",
            f"no route {request.path}; GET /openapi.json lists them",
            [FieldError("path", "no such route")],
        )
    return ProblemError(status, "http-error", exc.reason)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def as_problem(request: web.Request, exc: Exception) -> ProblemError:
    """The problem answering a handler's failure (ours, aiohttp's, or an unexpected one).

    HTTP exceptions below 400 (redirects) are not failures: they are raised again.
    """
    if isinstance(exc, ProblemError):
        return exc
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return _from_http_exception(request, exc)
    if isinstance(exc, StoreUnavailableError | CommitterClosedError):
        # Nothing of the request took effect (a failed flush drops its counts): retry it.
        return ProblemError(
            503,
            "store-unavailable",
            f"the store failed, nothing was changed; retry the request ({exc})",
            headers={"Retry-After": "1"},
        )
    log.exception("unhandled error", extra={"path": request.path}, exc_info=exc)
    return ProblemError(500, "internal", "internal error; it has been logged")
