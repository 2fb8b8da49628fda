"""The set of monitors a replica serves, loaded from config files and kept current.

Sources: every `*.json`, `*.yaml` or `*.yml` in the monitors directory (a mounted
ConfigMap in Kubernetes), and the original API's single-baseline variable (a monitor named
`default`). The directory is polled: kubelet updates a ConfigMap volume by swapping its
`..data` link, which changes the resolved paths, so polling resolved stats sees it.
A config that stops loading keeps its last good monitor and reports the error.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from driftline.core.monitor import (
    Monitor,
    MonitorConfig,
    MonitorConfigError,
    build_monitor,
    decode_monitor_config,
    read_monitor_config,
)
from driftline.core.receivers import Receiver, ReceiverConfigError, load_receivers
from driftline.lifecycle import pause
from driftline.settings import Settings

log = logging.getLogger(__name__)

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
BASELINE_DATA_MONITOR = "default"


class UnknownMonitorError(KeyError):
    """No monitor of that name is loaded."""


# Told after every load: the monitors now loaded, and the names no longer loaded.
LoadListener = Callable[[list[Monitor], set[str]], None]


FileStamp = tuple[str, int, int, int]
"""A file's path, and the inode, size and mtime of what it leads to (see `file_stamp`)."""


def file_stamp(path: Path) -> FileStamp:
    """Path, and the inode, size and mtime of the file it leads to (links followed).

    A Kubernetes volume's `..data` link swap leads to new files, so new inodes; one stat
    per file, where resolving each link first cost a replica of 1,000 monitors a fifth
    of a core at the default reload interval.
    """
    try:
        stat = os.stat(path)
    except OSError:
        return (str(path), -1, -1, -1)
    return (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _stamps(document: Any, dependency: Path | None) -> tuple[FileStamp, ...]:
    """The stamps of a source's config file (when it is one) and of its baseline file."""
    own = (file_stamp(document),) if isinstance(document, Path) else ()
    return own if dependency is None else (*own, file_stamp(dependency))


class MonitorRegistry:
    """Monitors by name, reloaded when their files change."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._monitors: dict[str, Monitor] = {}
        self._by_source: dict[str, Monitor] = {}
        self.errors: dict[str, str] = {}
        self._fingerprint: tuple[FileStamp, ...] = ()
        # Per source: its monitor, baseline file and the stamps they were read at.
        self._built: dict[str, tuple[Monitor, Path | None, tuple[FileStamp, ...]]] = {}
        self._dependencies: list[Path] = []
        self._receivers: dict[str, list[Receiver]] = {}
        self._listeners: list[LoadListener] = []

    # ------------------------------------------------------------------ lookup

    def __iter__(self) -> Iterator[Monitor]:
        return iter(self._monitors.values())

    def __len__(self) -> int:
        return len(self._monitors)

    @property
    def default_name(self) -> str | None:
        """The monitor a request without a `monitor` field goes to, if any."""
        if self._settings.default_monitor:
            return self._settings.default_monitor
        if BASELINE_DATA_MONITOR in self._monitors:
            return BASELINE_DATA_MONITOR
        if len(self._monitors) == 1:
            return next(iter(self._monitors))
        return None

    def on_load(self, listener: LoadListener) -> None:
        """Call `listener` after every reload by `watch` from now on (on the event loop)."""
        self._listeners.append(listener)

    def receivers(self, name: str) -> tuple[Receiver, ...]:
        """The alert receivers of the monitor called `name` (none when it has no file)."""
        return tuple(self._receivers.get(name, ()))

    def get(self, name: str) -> Monitor:
        """The monitor called `name`; raises UnknownMonitorError."""
        try:
            return self._monitors[name]
        except KeyError:
            raise UnknownMonitorError(name) from None

    # ----------------------------------------------------------------- loading

    def _config_files(self) -> list[Path]:
        directory = self._settings.monitors_dir
        if not directory:
            return []
        root = Path(directory)
        # Hidden entries are kubelet's bookkeeping (..data, ..2024_…): skip them.
        return sorted(
            p for p in root.iterdir() if p.suffix in CONFIG_SUFFIXES and not p.name.startswith(".")
        )

    def _sources(self) -> list[tuple[str, Path, Any]]:
        """(source name, base dir, decoded document) per config, raising per bad file."""
        sources: list[tuple[str, Path, Any]] = []
        if self._settings.baseline_data_path:
            path = Path(self._settings.baseline_data_path)
            sources.append(
                (
                    f"BASELINE_DATA_PATH={path}",
                    Path.cwd(),
                    {"name": BASELINE_DATA_MONITOR, "baseline": str(path)},
                )
            )
        for path in self._config_files():
            sources.append((str(path), path.parent, path))
        return sources

    def _alert_files(self) -> list[Path]:
        directory = self._settings.alerts_dir
        if not directory or not Path(directory).is_dir():
            return []
        return sorted(p for p in Path(directory).glob("*.json") if not p.name.startswith("."))

    def _load_receivers(self, errors: dict[str, str]) -> None:
        """Receivers per monitor; on a bad alerts file keep the last good set."""
        directory = self._settings.alerts_dir
        if not directory:
            return
        try:
            self._receivers = load_receivers(Path(directory))
        except ReceiverConfigError as exc:
            errors[f"DRIFTLINE_ALERTS_DIR={directory}"] = str(exc)
            log.error("alert receivers not loaded", extra={"error": str(exc)})

    def fingerprint(self) -> tuple[FileStamp, ...]:
        """The stamp (`file_stamp`) of every config, baseline and alerts file in use."""
        paths = self._config_files() + self._dependencies + self._alert_files()
        return tuple(file_stamp(p) for p in paths)

    def _decode(self, source: str, document: Any) -> MonitorConfig:
        if isinstance(document, Path):
            return read_monitor_config(document, source)
        return decode_monitor_config(document, source)

    def _build(
        self, source: str, base_dir: Path, document: Any
    ) -> tuple[Monitor, Path | None, tuple[FileStamp, ...]]:
        """The source's monitor, its baseline file (if any) and the stamps it was read at.

        A source whose config and baseline files are as they were is not read again: an
        edit to one monitor of a fleet rebuilds that monitor, and the others keep their
        Monitor (so their latest verdicts stay valid).
        """
        previous = self._built.get(source)
        if previous is not None and previous[2] == _stamps(document, previous[1]):
            return previous
        stamps = _stamps(document, None)  # taken before reading: a change shows next poll
        config = self._decode(source, document)
        dependency = None
        if isinstance(config.baseline, str):
            baseline = Path(config.baseline)
            dependency = baseline if baseline.is_absolute() else base_dir / baseline
            stamps = (*stamps, file_stamp(dependency))
        monitor = build_monitor(config, self._settings.defaults, base_dir=base_dir, source=source)
        self._log_loaded(monitor)
        return monitor, dependency, stamps

    def load(self) -> set[str]:
        """(Re)load every source, keeping the last good monitor of a config that fails.

        Returns the names of the monitors no longer loaded.
        """
        # Taken before reading: a file that changes while we read shows as a change next poll.
        fingerprint = self.fingerprint()
        monitors: dict[str, Monitor] = {}
        by_source: dict[str, Monitor] = {}
        built: dict[str, tuple[Monitor, Path | None, tuple[FileStamp, ...]]] = {}
        errors: dict[str, str] = {}
        dependencies: list[Path] = []
        for source, base_dir, document in self._sources():
            try:
                monitor, dependency, stamps = self._build(source, base_dir, document)
                if dependency is not None:
                    dependencies.append(dependency)
                if monitor.name in monitors:
                    raise MonitorConfigError(
                        f"{source}: name: monitor {monitor.name!r} is already defined by "
                        f"{monitors[monitor.name].source}"
                    )
            except Exception as exc:
                # One bad file must never take the other monitors (or reloading) down.
                if not isinstance(exc, MonitorConfigError):
                    log.exception("monitor config failed unexpectedly", extra={"source": source})
                errors[source] = str(exc)
                previous = self._by_source.get(source)
                if previous is not None and previous.name not in monitors:
                    monitors[previous.name] = previous
                    by_source[source] = previous
                log.error("monitor config not loaded", extra={"source": source, "error": str(exc)})
                continue
            monitors[monitor.name] = monitor
            by_source[source] = monitor
            built[source] = (monitor, dependency, stamps)
        self._load_receivers(errors)
        default_before = self.default_name
        removed = self._monitors.keys() - monitors.keys()
        self._monitors, self._by_source, self.errors = monitors, by_source, errors
        self._built = built
        if default_before is not None and self.default_name is None:
            # The quick start's requests name no monitor: say why they now get 422.
            log.warning(
                "no default monitor any more: requests that name no monitor are refused; "
                "set DRIFTLINE_DEFAULT_MONITOR (or serve --default-monitor)",
                extra={"previous_default": default_before, "monitors": sorted(monitors)},
            )
        new_dependencies = dependencies != self._dependencies
        self._dependencies = dependencies
        # Baselines first named by this load were read after `fingerprint`; take their
        # stats now (a change in that instant waits for the next edit to be seen).
        self._fingerprint = self.fingerprint() if new_dependencies else fingerprint
        return removed

    def _log_loaded(self, monitor: Monitor) -> None:
        log.info(
            "monitor loaded",
            extra={
                "monitor": monitor.name,
                "features": len(monitor.layout.features),
                "layout": monitor.window.layout_id,
                "source": monitor.source,
            },
        )
        uncalibrated = [s.name for s in monitor.layout.features.values() if not s.calibrated]
        if uncalibrated:
            log.warning(
                "baseline profile without held-out categories: the categorical tests of "
                "these features may alarm too often, and their new-categories check is "
                "off; rebuild the profile with `driftline baseline build`",
                extra={"monitor": monitor.name, "features": uncalibrated},
            )

    async def watch(self, stopping: asyncio.Event) -> None:
        """Poll the sources and reload when a file changes, until `stopping`."""
        while not await pause(stopping, self._settings.reload_interval):
            current = await asyncio.to_thread(self.fingerprint)
            if current != self._fingerprint:
                log.info("monitor configs changed; reloading")
                try:
                    removed = await asyncio.to_thread(self.load)
                except OSError as exc:  # e.g. the directory vanished mid-swap
                    log.error("monitor reload failed", extra={"error": str(exc)})
                    continue
                for listener in self._listeners:
                    listener(list(self), removed)
