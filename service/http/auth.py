"""Bearer tokens with scopes: who may send events, read reports, or change state.

The tokens live in a YAML (or JSON) file, in Kubernetes a mounted Secret:

    tokens:
      - name: model-server            # named in logs, never the token
        token: 3f1c...                # at least 32 characters
        scopes: [ingest]
      - name: operator
        sha256: 9b74...               # or the token's SHA-256 (hex) instead of the token
        scopes: [read, admin]

Scopes: `ingest` (POST events), `read` (GET reports, monitors, alerts, the OpenAPI
document), `admin` (DELETE a window, acknowledge an alert). Probes and the metrics
scrape are open unless the settings say otherwise; then they need `read`. The file is
polled and reloaded when it changes; a file that cannot be read or parsed admits no
token at all (fail closed) until it is fixed. Without a tokens file every route is open.
Tokens are compared by their SHA-256 digests in constant time, against every entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import msgspec.yaml
from aiohttp import web

from driftline.engine.registry import FileStamp, file_stamp
from driftline.http.problems import FieldError, ProblemError
from driftline.lifecycle import pause
from driftline.settings import AuthSettings

log = logging.getLogger(__name__)

Scope = Literal["ingest", "read", "admin"]
# What a route needs: a scope, or `probe` / `metrics` (open or `read`, by configuration).
Access = Literal["ingest", "read", "admin", "probe", "metrics"]
REALM = 'Bearer realm="driftline"'


class TokenEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One client's token (or its SHA-256) and what it may do."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1)]
    token: Annotated[str, msgspec.Meta(min_length=32)] | None = None
    sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")] | None = None


class TokensFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The tokens file."""

    tokens: list[TokenEntry]


class TokensFileError(ValueError):
    """A tokens file that cannot be used; the message names the entry, never a token."""


@dataclass(frozen=True, slots=True)
class Client:
    """Who presented a token, and its scopes."""

    name: str
    scopes: frozenset[str]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(raw: bytes, origin: str) -> list[tuple[bytes, Client]]:
    """The (digest, client) pairs of a tokens file's content."""
    try:
        decoded = msgspec.yaml.decode(raw, type=TokensFile)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise TokensFileError(f"{origin}: {exc}") from None
    pairs: list[tuple[bytes, Client]] = []
    for index, entry in enumerate(decoded.tokens):
        if (entry.token is None) == (entry.sha256 is None):
            raise TokensFileError(f"{origin}: tokens[{index}]: give `token` or `sha256`, not both")
        digest = _digest(entry.token) if entry.token else bytes.fromhex(entry.sha256 or "")
        pairs.append((digest, Client(entry.name, frozenset(entry.scopes))))
    return pairs


class TokenGate:
    """The configured tokens: who a request is, and whether it may use a route."""

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._path = Path(settings.tokens_file) if settings.tokens_file else None
        self._entries: list[tuple[bytes, Client]] = []
        self._fingerprint: FileStamp | None = None
        self.error: str | None = None

    @property
    def open(self) -> bool:
        """True when no tokens file is configured: every route is open."""
        return self._path is None

    def load(self) -> None:
        """(Re)read the tokens file; on failure no token is accepted until it loads."""
        if self._path is None:
            return
        self._fingerprint = file_stamp(self._path)
        try:
            self._entries = parse_tokens(self._path.read_bytes(), str(self._path))
        except (OSError, TokensFileError) as exc:
            self._entries = []
            self.error = str(exc) if isinstance(exc, TokensFileError) else exc.strerror
            log.error("tokens not loaded: no token is accepted", extra={"error": self.error})
            return
        self.error = None
        log.info(
            "tokens loaded",
            extra={"clients": sorted(client.name for _, client in self._entries)},
        )

    async def watch(self, interval: float, stopping: asyncio.Event) -> None:
        """Reload the file when it changes, until `stopping`."""
        while self._path is not None and not await pause(stopping, interval):
            if await asyncio.to_thread(file_stamp, self._path) != self._fingerprint:
                await asyncio.to_thread(self.load)

    def identify(self, token: str) -> Client | None:
        """The client whose token this is; every entry is compared, in constant time."""
        digest = _digest(token)
        found = None
        for stored, client in self._entries:
            if hmac.compare_digest(stored, digest):
                found = client
        return found

    def required(self, access: Access) -> Scope | None:
        """The scope a route needs (None: open)."""
        if self.open:
            return None
        if access == "probe":
            return None if self._settings.open_probes else "read"
        if access == "metrics":
            return None if self._settings.open_metrics else "read"
        return access

    def check(self, request: web.Request, access: Access) -> None:
        """Raise the 401 or 403 problem of a request that may not use its route."""
        scope = self.required(access)
        if scope is None:
            return
        header = request.headers.get("Authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise ProblemError(
                401,
                "unauthorized",
                "this route needs a bearer token (Authorization: Bearer <token>)",
                [FieldError("Authorization", f"expected a bearer token with scope {scope}")],
                headers={"WWW-Authenticate": REALM},
            )
        client = self.identify(token.strip())
        if client is None:
            raise ProblemError(
                401,
                "unauthorized",
                "the bearer token is not valid",
                [FieldError("Authorization", "unknown token")],
                headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
            )
        if scope not in client.scopes:
            raise ProblemError(
                403,
                "forbidden",
                f"token {client.name!r} lacks the {scope!r} scope this route needs",
                [FieldError("Authorization", f"expected a token with scope {scope}")],
                headers={
                    "WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope}"'
                },
            )
