"""Monitoring a prediction endpoint in one line: a decorator, or ASGI middleware.

`@monitor_endpoint(client)` logs the features a FastAPI (or any) endpoint was called
with, once it returned; `DriftMiddleware` reads the JSON body of the requests it
watches as the app reads it and logs it after a 2xx answer. Either works with both
clients and never fails a request: what cannot be logged is counted as dropped.
Neither imports FastAPI or Starlette: the middleware is plain ASGI.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, MutableMapping
from typing import Any, ParamSpec, TypeVar

import msgspec

from driftline.client.clients import AsyncDriftClient, DriftClient

P = ParamSpec("P")
R = TypeVar("R")
Client = DriftClient | AsyncDriftClient
FeaturesOf = Callable[..., Any]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def features_in(value: Any) -> Iterator[Mapping[str, Any]]:
    """The events in a request value.

    A mapping of features (or `{"features": {...}}`), a pydantic model, or a list of them.
    """
    if isinstance(value, list | tuple):
        for item in value:
            yield from features_in(item)
        return
    if hasattr(value, "model_dump"):  # a pydantic model (FastAPI's request bodies)
        value = value.model_dump(mode="json")
    if isinstance(value, Mapping):
        inner = value.get("features")
        yield inner if isinstance(inner, Mapping) else value


def _loggable(value: Any) -> bool:
    return isinstance(value, Mapping | list | tuple) or hasattr(value, "model_dump")


def _events(client: Client, value: Any, what: str) -> list[Mapping[str, Any]]:
    """The events to log from `value`; what cannot be logged is counted as dropped."""
    try:
        events = list(features_in(value))
    except Exception as exc:
        client.discard(f"{what}: {exc}")
        return []
    if not events:
        client.discard(f"{what}: no features found in {type(value).__name__}")
    return events


def _log_now(client: DriftClient, value: Any, what: str) -> None:
    for features in _events(client, value, what):
        client.log(features)


async def _log(client: Client, value: Any, what: str) -> None:
    if isinstance(client, DriftClient):
        _log_now(client, value, what)
        return
    for features in _events(client, value, what):
        await client.log(features)


def _chosen(
    function: Callable[..., Any], features: str | FeaturesOf | None
) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """How to find the features among a call's arguments."""
    if callable(features):
        return lambda args, kwargs: features(*args, **kwargs)
    signature = inspect.signature(function)

    def pick(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        bound = signature.bind_partial(*args, **kwargs).arguments
        if features is not None:
            return bound.get(features)
        return next((v for v in bound.values() if _loggable(v)), None)

    return pick


def monitor_endpoint(
    client: Client, *, features: str | FeaturesOf | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an endpoint so that each successful call logs its input's features.

    `features`: the argument holding them (by name), a function of the call's arguments
    returning them, or None: the first argument that is a mapping, a pydantic model or
    a list of them. An async client needs an async endpoint.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        pick = _chosen(function, features)
        what = function.__qualname__
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_endpoint(*args: P.args, **kwargs: P.kwargs) -> Any:
                result = await function(*args, **kwargs)
                try:
                    value = pick(args, kwargs)
                except Exception as exc:
                    client.discard(f"{what}: {exc}")
                else:
                    await _log(client, value, what)
                return result

            return async_endpoint  # type: ignore[return-value]
        if isinstance(client, AsyncDriftClient):
            raise TypeError(
                f"{what}: an AsyncDriftClient needs an async endpoint; use DriftClient here"
            )

        sync_client = client

        @functools.wraps(function)
        def endpoint(*args: P.args, **kwargs: P.kwargs) -> R:
            result = function(*args, **kwargs)
            try:
                value = pick(args, kwargs)
            except Exception as exc:
                sync_client.discard(f"{what}: {exc}")
            else:
                _log_now(sync_client, value, what)
            return result

        return endpoint

    return decorate


class DriftMiddleware:
    """ASGI middleware: log the JSON body of each request to `paths` answered with 2xx.

    `app.add_middleware(DriftMiddleware, client=client, paths=["/predict"])`. The body
    is read as the app reads it (nothing is buffered twice); `features` maps the decoded
    body to the features when they are not the body itself or its `features` field.
    Bodies over `max_body_bytes` are not logged (and counted as dropped).
    """

    def __init__(
        self,
        app: ASGIApp,
        client: Client,
        paths: Collection[str] = ("/predict",),
        methods: Collection[str] = ("POST",),
        features: FeaturesOf | None = None,
        max_body_bytes: int = 1 << 20,
    ) -> None:
        self.app = app
        self.client = client
        self.paths = frozenset(paths)
        self.methods = frozenset(m.upper() for m in methods)
        self.features = features
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through; log its body once the app answered 2xx."""
        if (
            scope["type"] != "http"
            or scope["path"] not in self.paths
            or scope["method"] not in self.methods
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        state = {"size": 0, "complete": False, "status": 0}

        async def tapped_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                state["size"] += len(body)
                if state["size"] <= self.max_body_bytes:
                    chunks.append(body)
                state["complete"] = not message.get("more_body", False)
            return message

        async def tapped_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        await self.app(scope, tapped_receive, tapped_send)
        if 200 <= state["status"] < 300:
            await self._log_body(b"".join(chunks), state)

    async def _log_body(self, body: bytes, state: Mapping[str, Any]) -> None:
        what = "DriftMiddleware"
        if not state["complete"] or state["size"] > self.max_body_bytes:
            self.client.discard(
                f"{what}: request body not read whole, or over {self.max_body_bytes} bytes"
            )
            return
        try:
            value = msgspec.json.decode(body)
            if self.features is not None:
                value = self.features(value)
        except Exception as exc:
            self.client.discard(f"{what}: {exc}")
            return
        await _log(self.client, value, what)
