"""Scopes: the declared model versions and segments a monitor keeps windows of their own for.

A monitor's window vector is its layout's block (every event) followed by one block of
the same layout per declared model version and per declared segment (docs/versions.md).
An event adds into the first block, into its version's block when its version is
declared, and into its segment's block when its value of the segment feature is a
declared segment; events of other versions and values are pooled in the first block
only. The blocks share the window's buckets, so they slide, are written and are read in
one atomic step with it, and a version's or segment's window is a slice of the totals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from driftline.core.binning import BinnedBatch, BinnedEvent
from driftline.core.layout import CategoricalMatrix, FeatureSlots, Layout, NumericMatrix
from driftline.core.performance import PerformanceSlots, label_deltas
from driftline.core.profile import CategoricalProfile
from driftline.core.window import Vector, WindowTotals

MAX_VERSIONS = 8
"""Declared model versions with a window of their own: each multiplies the window's width."""
MAX_SEGMENTS = 16
"""Declared segments with a window of their own."""
DEFAULT_TOP_SEGMENTS = 5

ScopeKind = Literal["model_version", "segment"]
IntArray = npt.NDArray[np.intp]
RowBlocks = tuple[IntArray, IntArray]
"""Each event's version block and segment block (0: none)."""


class SegmentsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Segments of a monitor: a categorical feature and the values that get their own window.

    `values` unset: the `top` most frequent categories of the feature in the baseline.
    """

    by: str
    values: Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_SEGMENTS)] | None = None
    top: Annotated[int, msgspec.Meta(ge=1, le=MAX_SEGMENTS)] = DEFAULT_TOP_SEGMENTS


@dataclass(frozen=True, slots=True)
class Scope:
    """One declared version or segment, and the block of the window vector that is its own."""

    kind: ScopeKind
    value: str
    block: int  # 1.. (block 0 holds every event)


@dataclass(frozen=True, slots=True)
class Scopes:
    """A monitor's declared versions and segments, and where their blocks sit."""

    block_width: int  # the layout's width
    versions: tuple[str, ...] = ()
    segment_feature: FeatureSlots | None = None
    segments: tuple[str, ...] = ()
    segment_part: int = 0  # where the segment feature's slots sit in a BinnedBatch

    @property
    def blocks(self) -> int:
        """Blocks in the window vector: every event's, then one per version and segment."""
        return 1 + len(self.versions) + len(self.segments)

    @property
    def width(self) -> int:
        """The window vector's width."""
        return self.block_width * self.blocks

    @property
    def signature(self) -> str:
        """What names the blocks: part of the layout id, so blocks of other scopes never mix."""
        by = "" if self.segment_feature is None else self.segment_feature.name
        return "\x1f".join(("v", *self.versions, "s", by, *self.segments))

    def scope(self, kind: ScopeKind, value: str) -> Scope | None:
        """The declared version or segment `value`, else None."""
        if kind == "model_version":
            if value in self.versions:
                return Scope(kind, value, 1 + self.versions.index(value))
        elif value in self.segments:
            return Scope(kind, value, 1 + len(self.versions) + self.segments.index(value))
        return None

    def all(self) -> list[Scope]:
        """Every declared version, then every declared segment."""
        return [Scope("model_version", v, 1 + i) for i, v in enumerate(self.versions)] + [
            Scope("segment", s, 1 + len(self.versions) + i) for i, s in enumerate(self.segments)
        ]

    def version_blocks(self, versions: Sequence[str | None]) -> IntArray:
        """Each event's version block (0: its version is not declared)."""
        index = {v: 1 + i for i, v in enumerate(self.versions)}
        found = (0 if v is None else index.get(v, 0) for v in versions)
        return np.fromiter(found, np.intp, len(versions))

    def segment_blocks(self, slots: IntArray) -> IntArray:
        """Each event's segment block from its slot of the segment feature (0: none)."""
        feature = self.segment_feature
        assert feature is not None
        assert feature.index is not None
        by_slot = np.zeros(feature.missing + 1, dtype=np.intp)
        first = 1 + len(self.versions)
        for i, value in enumerate(self.segments):
            by_slot[feature.index[value]] = first + i
        return by_slot[slots]  # every slot of the feature is at most its missing slot

    def totals(self, totals: WindowTotals, block: int = 0) -> WindowTotals:
        """The totals (and rolling reference) of one block of a window's totals."""
        if self.blocks == 1:
            return totals
        cut = slice(block * self.block_width, (block + 1) * self.block_width)
        reference = None if totals.reference is None else totals.reference[cut]
        return replace(totals, vector=totals.vector[cut], reference=reference)


def spread(
    scopes: Scopes,
    deltas_of: Callable[[npt.NDArray[np.bool_] | None], Mapping[int, Vector]],
    blocks: Sequence[IntArray],
) -> dict[int, Vector]:
    """Per bucket, the window-wide deltas of a batch whose events fall into `blocks`.

    `deltas_of(members)` gives a block's per-bucket deltas of the events where `members`
    is true (None: every event); `blocks` are per-event block numbers (0: none), one
    array per dimension (versions, segments).
    """
    base = deltas_of(None)
    if scopes.blocks == 1:
        return dict(base)
    width = scopes.block_width
    wide: dict[int, Vector] = {}
    for start, vector in base.items():
        wide[start] = np.zeros(scopes.width, dtype=np.float64)
        wide[start][:width] = vector
    for per_event in blocks:
        for block in np.unique(per_event[per_event > 0]).tolist():
            for start, vector in deltas_of(per_event == block).items():
                wide[start][block * width : (block + 1) * width] += vector
    return wide


def event_blocks(scopes: Scopes, batch: BinnedBatch, versions: Sequence[str | None]) -> RowBlocks:
    """Each event's version block and segment block in a binned batch (0: none)."""
    segment = (
        np.zeros(batch.size, dtype=np.intp)
        if scopes.segment_feature is None
        else scopes.segment_blocks(batch.slots[scopes.segment_part])
    )
    return scopes.version_blocks(versions), segment


def single_blocks(scopes: Scopes, event: BinnedEvent, version: str | None) -> RowBlocks:
    """One binned event's version block and segment block (0: none), as event_blocks's."""
    segment = np.zeros(1, dtype=np.intp)
    feature = scopes.segment_feature
    if feature is not None:  # a categorical feature: one slot of its own range per event
        slot = next(s for s in event.slots if feature.first_bin <= s <= feature.missing)
        segment = scopes.segment_blocks(np.array([slot], dtype=np.intp))
    return scopes.version_blocks([version]), segment


def batch_deltas(
    scopes: Scopes, batch: BinnedBatch, buckets: IntArray, versions: Sequence[str | None]
) -> dict[int, tuple[Vector, int]]:
    """BinnedBatch.deltas over the window's blocks: per bucket the wide vector and events."""
    width = scopes.block_width
    base = batch.deltas(width, buckets)
    if scopes.blocks == 1:
        return base

    def deltas_of(members: npt.NDArray[np.bool_] | None) -> dict[int, Vector]:
        if members is None:
            return {start: vector for start, (vector, _) in base.items()}
        others = np.flatnonzero(~members).tolist()
        return {s: v for s, (v, _) in batch.deltas(width, buckets, leave_out=others).items()}

    wide = spread(scopes, deltas_of, event_blocks(scopes, batch, versions))
    return {start: (wide[start], count) for start, (_, count) in base.items()}


def event_vectors(
    scopes: Scopes, batch: BinnedBatch, events: Sequence[int], versions: Sequence[str | None]
) -> npt.NDArray[np.float64]:
    """BinnedBatch.event_vectors over the window's blocks (`versions`: every event's)."""
    vectors = batch.event_vectors(scopes.block_width, events)
    if scopes.blocks == 1:
        return vectors
    chosen = np.asarray(events, dtype=np.intp)
    return widen_rows(scopes, vectors, [b[chosen] for b in event_blocks(scopes, batch, versions)])


def record_blocks(
    scopes: Scopes, batch: BinnedBatch, versions: Sequence[str | None], rows: Sequence[int]
) -> tuple[IntArray, IntArray] | None:
    """The version and segment blocks of `rows` of a batch, as pending records keep them."""
    if scopes.blocks == 1:
        return None
    chosen = np.asarray(rows, dtype=np.intp)
    version, segment = event_blocks(scopes, batch, versions)
    return version[chosen], segment[chosen]


def joined_deltas(
    scopes: Scopes,
    slots: PerformanceSlots,
    matched: npt.NDArray[np.void],
    labels: npt.NDArray[np.float64],
) -> dict[int, Vector]:
    """label_deltas over the window's blocks: each label also counts in its record's blocks."""

    def deltas_of(members: npt.NDArray[np.bool_] | None) -> dict[int, Vector]:
        if members is None:
            return label_deltas(slots, scopes.block_width, matched, labels)
        return label_deltas(slots, scopes.block_width, matched[members], labels[members])

    blocks = [matched["version"].astype(np.intp), matched["segment"].astype(np.intp)]
    return spread(scopes, deltas_of, blocks)


def widen_rows(
    scopes: Scopes, vectors: npt.NDArray[np.float64], blocks: Sequence[IntArray]
) -> npt.NDArray[np.float64]:
    """Events' own vectors (one row each) placed in the first block and in their scopes'."""
    if scopes.blocks == 1:
        return vectors
    width = scopes.block_width
    wide = np.zeros((len(vectors), scopes.width), dtype=np.float64)
    wide[:, :width] = vectors
    for per_event in blocks:
        for row, block in enumerate(per_event.tolist()):
            if block:
                wide[row, block * width : (block + 1) * width] += vectors[row]
    return wide


def without_feature(layout: Layout, name: str) -> Layout:
    """The layout read as if `name` were not watched: a segment's window, where it is fixed."""
    features = {n: f for n, f in layout.features.items() if n != name}
    return Layout(
        features,
        layout.width,
        NumericMatrix.of(features, layout.width),
        CategoricalMatrix.of(features, layout.width),
        layout.performance,
    )


def scopes_problem(
    layout: Layout, versions: Sequence[str], segments: SegmentsConfig | None
) -> str | None:
    """What is wrong with declared versions and segments (a field and why), else None."""
    if len(versions) > MAX_VERSIONS:
        return (
            f"model_versions: at most {MAX_VERSIONS} versions get a window of their own, "
            f"got {len(versions)}"
        )
    if segments is None:
        return None
    feature = layout.features.get(segments.by)
    if feature is None or feature.index is None:
        categorical = [n for n, f in layout.features.items() if f.index is not None]
        return (
            f"segments.by: {segments.by!r} is not a categorical feature of the baseline; "
            f"categorical features: {', '.join(categorical) or '(none)'}"
        )
    for value in segments.values or ():
        if value not in feature.index:
            return (
                f"segments.values: {value!r} is not a category of {segments.by} in the "
                f"baseline (kept categories: {', '.join(feature.index)})"
            )
    return None


def top_segments(feature: FeatureSlots, top: int) -> tuple[str, ...]:
    """The `top` most frequent categories of a feature in the baseline (ties: name order)."""
    profile = feature.profile
    assert isinstance(profile, CategoricalProfile)
    # Every baseline row: the held-out counts and those the categories were chosen on.
    counts = np.add(profile.counts, profile.selection or 0)
    position = {category: i for i, category in enumerate(profile.categories)}
    ranked = sorted(position, key=lambda c: (-counts[position[c]], c))
    return tuple(ranked[:top])
