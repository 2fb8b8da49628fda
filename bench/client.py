"""A small HTTP/1.1 client on raw asyncio streams, for the harness's own load.

aiohttp's client costs more CPU per request than the server under test; this one
sends pre-built requests on keep-alive connections and parses only the status line and
Content-Length, so one core drives the single-process server without being the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass


def build_request(
    host: str, port: int, path: str, body: bytes, content_type: str = "application/json"
) -> bytes:
    """A complete keep-alive POST request."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


@dataclass(slots=True)
class Response:
    """Status and body of one answer."""

    status: int
    body: bytes


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        """Connect."""
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 24)
        return cls(reader, writer)

    async def send(self, request: bytes) -> Response:
        """Send a prepared request and read the whole response."""
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self._reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            return Response(status, b"".join(parts))
        body = await self._reader.readexactly(length) if length else b""
        return Response(status, body)

    async def close(self) -> None:
        """Close the socket."""
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


async def get(host: str, port: int, path: str) -> Response:
    """One GET on a fresh connection."""
    connection = await Connection.open(host, port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        return await connection.send(request)
    finally:
        await connection.close()
