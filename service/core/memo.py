"""The last result computed for each owner, kept with the inputs it came from.

Verdicts are asked for far more often than their inputs change: a monitor's performance
counts change only when labels are joined, an idle monitor's window only when a bucket
slides out, while every flush and every evaluation round asks again.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class LastResults(Generic[T]):
    """Per owner object, its last result and the inputs it came from; at most `size` owners."""

    def __init__(self, size: int) -> None:
        self._size = size
        # id(owner) -> (owner, inputs, result); the owner is held, so its id stays its own.
        self._held: dict[int, tuple[object, Hashable, T]] = {}

    def get(self, owner: object, inputs: Hashable) -> T | None:
        """The result kept for `owner` when it came from equal inputs, else None."""
        held = self._held.get(id(owner))
        if held is not None and held[0] is owner and held[1] == inputs:
            return held[2]
        return None

    def put(self, owner: object, inputs: Hashable, result: T) -> None:
        """Keep `result` as the owner's last; the least recently computed owner goes first."""
        self._held.pop(id(owner), None)
        if len(self._held) >= self._size:
            del self._held[next(iter(self._held))]
        self._held[id(owner)] = (owner, inputs, result)
