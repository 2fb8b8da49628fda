"""Idempotent ingestion: a request (or event) sent again under the same key counts once.

A client names a request with a key (the `Idempotency-Key` of a batch, or the `id` of a
single event); the store that counts the request records the key, hashed, with what the
request counted, in the same atomic step. A retry within the horizon is not counted
again: it gets the first attempt's outcome. The same key sent with another request is a
conflict, not a retry.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import struct
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

DEFAULT_HORIZON_SECONDS = 600  # how long a key is remembered, at least (10 min)
MAX_KEY_LENGTH = 255  # characters of an Idempotency-Key or an event id
KEY_PATTERN = "^[ -~]+$"  # an Idempotency-Key: printable ASCII, as a header carries it
KEY_BYTES = 16  # of the key's digest: collisions stay below 1e-20 for 1e9 live keys
FINGERPRINT_BYTES = 8  # of the request's digest: tells a retry from another request

# Keys of single events (their `id`) and keys of whole requests are different names,
# even when a client happens to spell them alike.
Namespace = Literal["event", "request"]


class ClaimStatus(enum.Enum):
    """What the store did with a keyed submission."""

    COUNTED = "counted"  # first time: its events were counted (or found late)
    REPLAYED = "replayed"  # seen before with the same request: nothing counted again
    CONFLICT = "conflict"  # seen before with another request: nothing counted


class KeyConflictError(Exception):
    """A key already recorded for another request: nothing was counted."""


class RequestKey(NamedTuple):
    """A client's key, hashed, and the fingerprint of the request that carried it.

    Made by `request_key` only, which gives the sizes every store relies on. A tuple:
    every keyed request makes one.
    """

    digest: bytes  # KEY_BYTES
    fingerprint: bytes  # FINGERPRINT_BYTES


class EventKey(RequestKey):
    """The key of a single event, made from its `id`: its digest is the id's `key_digest`."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """A keyed submission's outcome: the first attempt's counts when replayed."""

    status: ClaimStatus
    accepted: int  # events counted into the window
    late: int  # events acknowledged but older than the window (not counted)


@functools.lru_cache(maxsize=256)
def counted(accepted: int, late: int) -> ClaimOutcome:
    """The outcome of a submission counted now; shared, as a flush counts many alike."""
    return ClaimOutcome(ClaimStatus.COUNTED, accepted, late)


_COUNTS = struct.Struct(">II")  # a record's events accepted and late, after its fingerprint


@functools.lru_cache(maxsize=256)
def key_record_tail(accepted: int, late: int) -> bytes:
    """The counts part of a recorded key (after its fingerprint), as every store keeps it."""
    return _COUNTS.pack(accepted, late)


def recorded_outcome(record: bytes, fingerprint: bytes) -> ClaimOutcome:
    """The outcome of a submission whose key was recorded: the first attempt's counts."""
    accepted, late = _COUNTS.unpack(record[FINGERPRINT_BYTES:])
    same = record[:FINGERPRINT_BYTES] == fingerprint
    return ClaimOutcome(ClaimStatus.REPLAYED if same else ClaimStatus.CONFLICT, accepted, late)


# Copies of hashers set up once: blake2b's parameters cost more to set than a short
# key costs to hash, and every keyed request hashes twice.
_KEY_HASHERS = {
    namespace: hashlib.blake2b(digest_size=KEY_BYTES, person=namespace.encode())
    for namespace in get_args(Namespace)
}
_FINGERPRINT_HASHER = hashlib.blake2b(digest_size=FINGERPRINT_BYTES)


def key_digest(namespace: Namespace, key: str) -> bytes:
    """A client's key hashed within its namespace (the same on every replica)."""
    digest = _KEY_HASHERS[namespace].copy()
    digest.update(key.encode())
    return digest.digest()


def request_key(namespace: Namespace, key: str, content: bytes) -> RequestKey:
    """Hash a client's key (within its namespace) and the request content it came with."""
    fingerprint = _FINGERPRINT_HASHER.copy()
    fingerprint.update(content)
    made = EventKey if namespace == "event" else RequestKey
    return made(key_digest(namespace, key), fingerprint.digest())


def key_problem(key: str) -> str | None:
    """Why an Idempotency-Key cannot be used (None when it can): length and characters."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        return f"expected 1 to {MAX_KEY_LENGTH} characters, got {len(key)}"
    if not (key.isascii() and key.isprintable()):
        return "expected printable ASCII characters only"
    return None
