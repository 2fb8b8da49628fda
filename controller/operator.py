"""The kopf handlers: thin adapters from kopf's calls to the render and status functions.

Each DriftMonitor is reconciled as a whole on create, update, resume and when a
ConfigMap or Secret it reads changes: its key in one of the service's monitors ConfigMaps
(placement.py chooses which) and in its alerts Secret, the service's one
HorizontalPodAutoscaler, and its conditions. A timer copies the drift service's verdict
into the status; a finalizer removes what the monitor added. Handlers return nothing
(kopf would store it in the status); the status is written with server-side apply,
reconcile and timer each owning their own fields.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
import kopf
import msgspec

from driftline.targets import VettingResolver

from .drift_service import (
    DriftSummary,
    ServiceFailure,
    bearer_token,
    fetch_drift_summary,
    forget_window,
    refused_service_url,
)
from .inputs import (
    INPUT_CHANGED_ANNOTATION,
    InputKey,
    InputUse,
    freshest_uses,
    monitor_inputs,
    monitors_to_refresh,
    revision_key,
)
from .kube import KeyedKind, KeyedObject, KubeApi, KubeError
from .placement import (
    MonitorShard,
    NoRoomError,
    key_holders,
    place_monitor,
    shard_entry,
    shard_name,
)
from .render import (
    MANAGED_LABELS,
    InvalidInputError,
    MissingInputError,
    ServiceMonitor,
    alert_secret_names,
    alerts_secret_name,
    encode_monitor_config,
    monitor_key,
    render_alerts,
    render_autoscaler,
    render_monitor_config,
    resolve_baseline,
    service_traffic,
    serving_monitors,
)
from .settings import ControllerSettings
from .spec import (
    API_GROUP,
    API_VERSION,
    DEFAULT_SERVICE,
    PLURAL,
    MonitorSpec,
    SpecError,
    TrafficSpec,
    parse_spec,
    service_url,
)
from .status import (
    ALERTS_READY,
    AUTOSCALING_READY,
    CONFIG_RENDERED,
    READY,
    RECONCILED_CONDITIONS,
    Condition,
    carried_report_status,
    condition_entries,
    conditions_from_status,
    ready_condition,
    report_status,
    severity_change,
    severity_event,
    status_holds,
)

# Field managers: what the reconcile writes (keys, HPA, conditions) and the status timer.
CONTROLLER_MANAGER = "driftline-controller"
REPORT_MANAGER = "driftline-controller-report"
FINALIZER = "driftline.io/finalizer"
# kopf's own annotations (handler progress, last handled spec). Not `driftline.io`:
# kopf hides its prefix from change detection, and driftline.io/input-changed must count.
KOPF_ANNOTATION_PREFIX = "kopf.driftline.io"
# Retry delay (s) after an API error: usually brief. A missing input is not retried on a
# timer: its creation is a watch event that re-reconciles the monitor at once.
API_ERROR_DELAY = 10.0
# The finalizer tries the window deletion this often, then lets the keys' TTL clean up,
# so an unreachable service (e.g. a namespace being deleted) cannot block deletion.
WINDOW_DELETE_ATTEMPTS = 3
WINDOW_DELETE_DELAY = 5.0
# Drift service calls in flight at once: hundreds of status timers firing together (an
# operator restart) queue here instead of timing out on an overloaded service.
SERVICE_CALLS = 16
# Seconds kopf waits in memory for a stopped status timer, then between its checks.
TIMER_EXIT_WAIT = 0.1
TIMER_EXIT_POLL = 2.0
# Seconds kopf waits for its own patch to come back on the watch before it treats the
# object as consistent. Past kopf's default 5 s it handles the older event it still
# holds: a busy API server then saw every monitor "created" a second time, and rewritten.
# The wait ends as soon as the patched version arrives, so a long bound costs nothing
# unless a watch restart skips that version (then changes wait at most this long).
CONSISTENCY_TIMEOUT = 60.0
MEMO_KEY = "driftline"
STATUS_TIMER = "refresh-status"
# kopf passes each index to handlers as a keyword named after the index handler's id.
INPUTS_INDEX = "monitor_inputs"
TRAFFIC_INDEX = "service_traffic"
SHARDS_INDEX = "monitor_shards"
TrafficIndex = kopf.Index[tuple[str, str], ServiceMonitor]
ShardsIndex = kopf.Index[tuple[str, str], MonitorShard]


@dataclass(slots=True)
class MonitorMemory:
    """What this process last decided for one DriftMonitor (kopf's per-object memo)."""

    reconciled: list[Condition] | None = None
    probe: DriftSummary | ServiceFailure | None = None
    severity: str | None = None


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """One reconcile step: its condition, and the error to raise if it failed."""

    condition: Condition
    error: kopf.TemporaryError | kopf.PermanentError | None = None


def _memory(memo: kopf.Memo) -> MonitorMemory:
    memory = memo.get(MEMO_KEY)
    if not isinstance(memory, MonitorMemory):
        memory = memo[MEMO_KEY] = MonitorMemory()
    return memory


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    # A snapshot: kopf updates a timer's body in place as watch events arrive.
    return copy.deepcopy(dict(body))


def _now() -> datetime:
    return datetime.now(UTC)


def _previous_conditions(monitor: Mapping[str, Any]) -> list[dict[str, Any]]:
    conditions = monitor.get("status", {}).get("conditions", [])
    return [c for c in conditions if isinstance(c, dict)]


def _find(conditions: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == kind), None)


def _temporary(condition: Condition, delay: float) -> StepOutcome:
    return StepOutcome(condition, kopf.TemporaryError(condition.message, delay=delay))


def _waiting(condition: Condition) -> StepOutcome:
    # Done for now: the input's watch event re-reconciles when it appears.
    return StepOutcome(condition)


def _permanent(condition: Condition) -> StepOutcome:
    return StepOutcome(condition, kopf.PermanentError(condition.message))


class SpecDigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled annotation with a digest of the spec instead of the spec.

    An inline baseline profile can be hundreds of kilobytes; a copy in an annotation
    would break the 256 KiB limit. Changes are still detected: the digest changes.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        """The essence kopf compares, with `spec` replaced by its SHA-256."""
        essence = super().build(body=body, extra_fields=extra_fields)
        if "spec" in essence:
            canonical = json.dumps(essence["spec"], sort_keys=True, separators=(",", ":"))
            essence["spec"] = {"sha256": hashlib.sha256(canonical.encode()).hexdigest()}
        return essence


def operator_settings() -> kopf.OperatorSettings:
    """Kopf's settings: own annotations and finalizer, warnings posted as Events."""
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=KOPF_ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = SpecDigestDiffBaseStorage(
        prefix=KOPF_ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Handler failures and warnings become Events (`kubectl describe dm` shows why a
    # monitor failed); progress at INFO would be an Event per reconcile.
    settings.posting.loggers = True
    settings.posting.level = logging.WARNING
    # One operator replica and no peering CRDs (the Deployment runs exactly one pod).
    settings.peering.standalone = True
    # A deleted monitor keeps its finalizer until its status timer has exited. The timer
    # exits at the stop signal, in a few event-loop turns: wait that long in memory, and
    # should it still run, look again in seconds, not after kopf's default minute.
    settings.background.instant_exit_timeout = TIMER_EXIT_WAIT
    settings.background.cancellation_polling = TIMER_EXIT_POLL
    settings.persistence.consistency_timeout = CONSISTENCY_TIMEOUT
    return settings


class DriftMonitorOperator:
    """The operator's handlers and the clients they share (created at kopf start-up)."""

    def __init__(
        self,
        settings: ControllerSettings,
        *,
        kube_factory: Callable[[], KubeApi] = KubeApi.from_environment,
    ) -> None:
        self.settings = settings
        self._kube_factory = kube_factory
        self._kube: KubeApi | None = None
        self._http: aiohttp.ClientSession | None = None
        # The HPA is sized from all monitors of a service: one sizing at a time per
        # service, so a deletion and a creation cannot interleave list and write.
        self._service_locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Whether each monitor's config rendered, as this process last decided; monitors
        # it has not seen yet are judged by their status.
        self._renders: dict[tuple[str, str], bool] = {}
        # The revision of each input a reconcile read, recorded as it reads (namespace ->
        # monitor -> revision key -> revision): an input's change event may arrive before
        # the status that records the read does.
        self._reads: dict[str, dict[str, dict[str, str]]] = {}
        # The monitors shard this process last wrote each monitor's key to ((namespace,
        # name) -> (service, shard)): the shards index shows a write only once its watch
        # event has arrived, and a key must never be left behind in a second shard.
        self._placed: dict[tuple[str, str], tuple[str, int]] = {}
        self._reconciles = asyncio.Semaphore(settings.max_concurrent_reconciles)
        self._service_calls = asyncio.Semaphore(SERVICE_CALLS)
        self._instance = socket.gethostname()

    @property
    def kube(self) -> KubeApi:
        """The Kubernetes API client (after start-up)."""
        if self._kube is None:
            raise RuntimeError("the operator has not started")
        return self._kube

    @property
    def http(self) -> aiohttp.ClientSession:
        """The HTTP session for drift service calls (after start-up)."""
        if self._http is None:
            raise RuntimeError("the operator has not started")
        return self._http

    # ------------------------------------------------------------------ lifecycle

    async def startup(self, logger: kopf.Logger, **_: Any) -> None:
        """Open the Kubernetes and HTTP clients in kopf's event loop."""
        self._kube = self._kube_factory()
        # Drift services are reached by name; link-local and metadata addresses never.
        token_file = self.settings.service_token_file
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.service_timeout),
            connector=aiohttp.TCPConnector(resolver=VettingResolver()),
            middlewares=(bearer_token(token_file),) if token_file else (),
        )
        logger.info("driftline controller settings: %s", msgspec.to_builtins(self.settings))

    async def cleanup(self, **_: Any) -> None:
        """Close the clients."""
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._kube is not None:
            await self._kube.close()
            self._kube = None

    # ------------------------------------------------------------------ reconcile

    def _refused(self, namespace: str, url: str) -> ServiceFailure | None:
        return refused_service_url(
            url,
            namespace,
            cluster_domain=self.settings.cluster_domain,
            extra_hosts=self.settings.service_hosts,
        )

    async def reconcile(self, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        """Render the monitor's config, alerts and autoscaler; write its conditions.

        A monitor whose config cannot be rendered is withdrawn: its keys are released
        and its traffic leaves the autoscaler's sums until its spec or inputs change.
        """
        async with self._reconciles:
            await self._reconcile(body, memo, kwargs[TRAFFIC_INDEX], kwargs[SHARDS_INDEX])

    async def _reconcile(
        self, body: kopf.Body, memo: kopf.Memo, index: TrafficIndex, shards: ShardsIndex
    ) -> None:
        monitor = _plain(body)
        metadata = monitor["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        try:
            spec = parse_spec(monitor.get("spec"))
        except SpecError as exc:
            invalid = Condition(CONFIG_RENDERED, "False", "InvalidSpec", str(exc))
            service = str(monitor.get("spec", {}).get("service", DEFAULT_SERVICE))
            await self._withdraw(namespace, name, service, shards)
            sizing = await self._size_autoscaler(namespace, service, index, None)
            await self._write_reconciled(monitor, memo, [invalid, sizing.condition], {}, None)
            raise kopf.PermanentError(str(exc)) from exc
        inputs: dict[str, str] = {}
        config = await self._render_config(namespace, name, spec, inputs, shards)
        if isinstance(config.error, kopf.PermanentError):
            await self._withdraw(namespace, name, spec.service, shards)
            alerts = StepOutcome(
                Condition(
                    ALERTS_READY, "False", "ConfigInvalid", "not rendered: " + str(config.error)
                )
            )
        else:
            self._renders[namespace, name] = True
            alerts = await self._render_alerts(namespace, name, spec, inputs)
        counted = None if isinstance(config.error, kopf.PermanentError) else spec.traffic
        sizing = await self._size_autoscaler(namespace, spec.service, index, counted)
        steps = [config, alerts, sizing]
        url = service_url(spec.service, namespace, spec.service_url)
        await self._write_reconciled(
            monitor, memo, [s.condition for s in steps], inputs, url, self._refused(namespace, url)
        )
        temporary = [s.error for s in steps if isinstance(s.error, kopf.TemporaryError)]
        if temporary:
            raise kopf.TemporaryError(
                "; ".join(str(e) for e in temporary), delay=min(e.delay or 0 for e in temporary)
            )
        for step in steps:
            if step.error is not None:
                raise step.error

    async def _withdraw(self, namespace: str, name: str, service: str, shards: ShardsIndex) -> None:
        """Release a monitor's keys and leave it out of its service's autoscaler."""
        self._renders[namespace, name] = False
        try:
            await self._release(namespace, name, service, shards)
        except KubeError as exc:
            raise kopf.TemporaryError(str(exc), delay=API_ERROR_DELAY) from exc

    async def _release(self, namespace: str, name: str, service: str, shards: ShardsIndex) -> None:
        key = monitor_key(name)
        await self._release_config(namespace, name, service, shards)
        await self.kube.release_key("Secret", namespace, alerts_secret_name(service), key=key)

    def _shard_sizes(
        self, namespace: str, service: str, shards: ShardsIndex
    ) -> dict[int, Mapping[str, int]]:
        return {entry.shard: entry.sizes for entry in shards.get((namespace, service), [])}

    def _last_written(self, namespace: str, name: str, service: str) -> int | None:
        """The shard of `service` this process last wrote the monitor's key to, if any."""
        placed = self._placed.get((namespace, name))
        return placed[1] if placed is not None and placed[0] == service else None

    async def _release_config(
        self, namespace: str, name: str, service: str, shards: ShardsIndex
    ) -> None:
        """Remove the monitor's key from every monitors shard of `service` holding it.

        Those the index shows, and the one this process last wrote (whose watch event may
        not have arrived yet).
        """
        key = monitor_key(name)
        sizes = self._shard_sizes(namespace, service, shards)
        holders = key_holders(name, sizes, self._last_written(namespace, name, service))
        for shard in sorted(holders):
            await self.kube.release_key("ConfigMap", namespace, shard_name(service, shard), key=key)
        self._placed.pop((namespace, name), None)

    async def _write_config(
        self, namespace: str, name: str, service: str, data: bytes, shards: ShardsIndex
    ) -> str:
        """Set the monitor's key in one monitors shard of its service, then drop it elsewhere.

        Written before it is released: the service's projected volume shows a key held by
        two shards as one file, so the monitor never leaves the service while it moves.
        Returns the shard's ConfigMap name.
        """
        key = monitor_key(name)
        sizes = self._shard_sizes(namespace, service, shards)
        placed = self._placed.get((namespace, name))
        refused: set[int] = set()
        while True:
            placement = place_monitor(
                name,
                len(data),
                sizes,
                self.settings.monitor_shards,
                service=service,
                current=self._last_written(namespace, name, service),
                refused=refused,
            )
            config_map = shard_name(service, placement.shard)
            try:
                await self.kube.apply_key(
                    "ConfigMap",
                    namespace,
                    config_map,
                    key=key,
                    value=data,
                    labels=MANAGED_LABELS,
                )
                break
            except KubeError as exc:
                if exc.status != 422:
                    raise
                # Over 1 MiB with writes the index has not shown yet: try the next shard.
                refused.add(placement.shard)
        if placed is not None and placed[0] != service:
            # Written for another service before: spec.service is immutable in the CRD,
            # but a monitor deleted past its finalizer and created again may name another.
            await self._release_config(namespace, name, placed[0], shards)
        self._placed[namespace, name] = (service, placement.shard)
        for shard in placement.release:
            await self.kube.release_key("ConfigMap", namespace, shard_name(service, shard), key=key)
        return config_map

    async def _read_inputs(
        self,
        kind: KeyedKind,
        namespace: str,
        monitor: str,
        names: Iterable[str],
        inputs: dict[str, str],
    ) -> dict[str, KeyedObject | None]:
        found: dict[str, KeyedObject | None] = {}
        reads = self._reads.setdefault(namespace, {}).setdefault(monitor, {})
        for input_name in names:
            obj = await self.kube.read_keyed(kind, namespace, input_name)
            found[input_name] = obj
            key = revision_key(kind, input_name)
            inputs[key] = reads[key] = obj.revision if obj else ""
        return found

    async def _render_config(
        self,
        namespace: str,
        name: str,
        spec: MonitorSpec,
        inputs: dict[str, str],
        shards: ShardsIndex,
    ) -> StepOutcome:
        key = monitor_key(name)
        try:
            ref = spec.baseline.config_map_key_ref
            baseline = (
                (await self._read_inputs("ConfigMap", namespace, name, [ref.name], inputs))[
                    ref.name
                ]
                if ref
                else None
            )
            profile = resolve_baseline(spec, baseline)
            data = encode_monitor_config(render_monitor_config(name, spec, profile))
            config_map = await self._write_config(namespace, name, spec.service, data, shards)
        except MissingInputError as exc:
            return _waiting(Condition(CONFIG_RENDERED, "False", "BaselineNotFound", str(exc)))
        except NoRoomError as exc:
            return _permanent(Condition(CONFIG_RENDERED, "False", "NoRoom", str(exc)))
        except InvalidInputError as exc:
            return _permanent(Condition(CONFIG_RENDERED, "False", "InvalidConfig", str(exc)))
        except KubeError as exc:
            return _temporary(
                Condition(CONFIG_RENDERED, "False", "ApiError", str(exc)), API_ERROR_DELAY
            )
        return StepOutcome(
            Condition(
                CONFIG_RENDERED,
                "True",
                "Rendered",
                f"ConfigMap {config_map} key {key}: {len(profile.features)} features, "
                f"baseline of {profile.rows} rows",
            )
        )

    async def _render_alerts(
        self, namespace: str, name: str, spec: MonitorSpec, inputs: dict[str, str]
    ) -> StepOutcome:
        secret = alerts_secret_name(spec.service)
        key = monitor_key(name)
        try:
            secrets = await self._read_inputs(
                "Secret", namespace, name, alert_secret_names(spec), inputs
            )
            document = render_alerts(spec, secrets)
            await self.kube.apply_key(
                "Secret",
                namespace,
                secret,
                key=key,
                value=msgspec.json.encode(document),
                labels=MANAGED_LABELS,
            )
        except MissingInputError as exc:
            return _waiting(Condition(ALERTS_READY, "False", "SecretNotFound", str(exc)))
        except InvalidInputError as exc:
            return _permanent(Condition(ALERTS_READY, "False", "InvalidAlert", str(exc)))
        except KubeError as exc:
            return _temporary(
                Condition(ALERTS_READY, "False", "ApiError", str(exc)), API_ERROR_DELAY
            )
        count = len(spec.alerts)
        return StepOutcome(
            Condition(
                ALERTS_READY,
                "True",
                "Resolved" if count else "NoAlerts",
                f"Secret {secret} key {key}: {count} receiver(s)",
            )
        )

    async def _resize_autoscaler(
        self, namespace: str, service: str, index: TrafficIndex
    ) -> dict[str, Any] | None:
        """Size the service's HPA from its serving monitors; delete it when none is left.

        The monitors come from kopf's index of every DriftMonitor's traffic, kept from the
        watch: sizing costs no API call but the HPA's own (a no-op when unchanged).
        """
        lock = self._service_locks.setdefault((namespace, service), asyncio.Lock())
        async with lock:
            rendered = {n: ok for (ns, n), ok in self._renders.items() if ns == namespace}
            monitors = serving_monitors(index.get((namespace, service), []), rendered)
            if not monitors:
                await self.kube.delete_autoscaler(namespace, service)
                return None
            autoscaler = render_autoscaler(namespace, service, monitors, self.settings)
            await self.kube.apply_autoscaler(autoscaler, field_manager=CONTROLLER_MANAGER)
            return autoscaler

    async def _size_autoscaler(
        self, namespace: str, service: str, index: TrafficIndex, counted: TrafficSpec | None
    ) -> StepOutcome:
        """Resize the service's HPA; the condition speaks of this monitor's share only.

        `counted` is the monitor's declared traffic, None when it is withdrawn. The sums
        are in the HPA's annotations: a message quoting them would change, and be
        rewritten, in every monitor's status whenever any monitor of the service changed.
        """
        try:
            autoscaler = await self._resize_autoscaler(namespace, service, index)
        except KubeError as exc:
            return _temporary(
                Condition(AUTOSCALING_READY, "False", "ApiError", str(exc)), API_ERROR_DELAY
            )
        if counted is None:
            return StepOutcome(
                Condition(
                    AUTOSCALING_READY,
                    "False",
                    "Withdrawn",
                    f"HorizontalPodAutoscaler {service} does not count this monitor: "
                    "its config cannot be rendered",
                )
            )
        if autoscaler is None:  # the monitor is being deleted: the index no longer has it
            return StepOutcome(
                Condition(
                    AUTOSCALING_READY,
                    "False",
                    "NoServingMonitors",
                    "no monitor of the service runs",
                )
            )
        return StepOutcome(
            Condition(
                AUTOSCALING_READY,
                "True",
                "Sized",
                f"HorizontalPodAutoscaler {service} counts this monitor's "
                f"{counted.expected_events_per_second:g} expected and {counted.peak:g} "
                "peak events/s",
            )
        )

    async def _write_reconciled(
        self,
        monitor: Mapping[str, Any],
        memo: kopf.Memo,
        reconciled: list[Condition],
        inputs: Mapping[str, str],
        url: str | None,
        refusal: ServiceFailure | None = None,
    ) -> None:
        memory = _memory(memo)
        metadata = monitor["metadata"]
        previous = _previous_conditions(monitor)
        complete = len(reconciled) == len(RECONCILED_CONDITIONS)
        memory.reconciled = reconciled if complete else None
        ready = ready_condition(
            reconciled,
            refusal or memory.probe,
            service_url=url or "",
            previous_ready=_find(previous, READY),
        )
        generation = int(metadata.get("generation", 0))
        status = {
            "observedGeneration": generation,
            "conditions": condition_entries(
                [*reconciled, ready], previous, generation=generation, now=_now()
            ),
            "inputRevisions": dict(inputs),
        }
        if status_holds(monitor.get("status", {}), status):
            return
        try:
            await self.kube.apply_monitor_status(
                metadata["namespace"], metadata["name"], status, field_manager=CONTROLLER_MANAGER
            )
        except KubeError as exc:
            raise kopf.TemporaryError(f"status not written: {exc}", delay=API_ERROR_DELAY) from exc

    # ------------------------------------------------------------------- status

    async def refresh_status(
        self,
        body: kopf.Body,
        memo: kopf.Memo,
        logger: kopf.Logger,
        **kwargs: Any,
    ) -> None:
        """Copy the drift service's verdict into the status; an Event when severity changes.

        Abandoned when kopf stops the timer: kopf keeps a deleted monitor's finalizer
        until its timer has exited, and checks again only after its polling delay.
        """
        refresh = asyncio.ensure_future(self._refresh_status(body, memo, logger))
        stopped: kopf.DaemonStopped = kwargs["stopped"]
        stop = asyncio.ensure_future(stopped.wait())
        try:
            await asyncio.wait((refresh, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            refresh.cancel()
        if refresh.done() and not refresh.cancelled():
            refresh.result()  # its TemporaryError reaches kopf

    async def _refresh_status(self, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger) -> None:
        monitor = _plain(body)
        metadata = monitor["metadata"]
        if metadata.get("deletionTimestamp"):
            return
        try:
            spec = parse_spec(monitor.get("spec"))
        except SpecError:
            return  # the reconcile reports it
        namespace, name = metadata["namespace"], metadata["name"]
        url = service_url(spec.service, namespace, spec.service_url)
        answer: DriftSummary | ServiceFailure | None = self._refused(namespace, url)
        if answer is None:
            async with self._service_calls:
                answer = await fetch_drift_summary(self.http, url, name)
        memory = _memory(memo)
        memory.probe = answer
        previous = _previous_conditions(monitor)
        reconciled = memory.reconciled or conditions_from_status(previous, RECONCILED_CONDITIONS)
        ready = ready_condition(
            reconciled, answer, service_url=url, previous_ready=_find(previous, READY)
        )
        current = monitor.get("status", {})
        fields = (
            report_status(answer)
            if isinstance(answer, DriftSummary)
            else carried_report_status(current)
        )
        generation = int(metadata.get("generation", 0))
        now = _now()
        status = {
            **fields,
            "conditions": condition_entries([ready], previous, generation=generation, now=now),
        }
        # Nothing a person reads changed: no write, so idle monitors cost etcd nothing.
        if not status_holds(current, status):
            try:
                await self.kube.apply_monitor_status(
                    namespace, name, status, field_manager=REPORT_MANAGER
                )
            except KubeError as exc:
                raise kopf.TemporaryError(
                    f"status not written: {exc}", delay=self.settings.status_interval
                ) from exc
        if not isinstance(answer, DriftSummary):
            return
        known = memory.severity if memory.severity is not None else current.get("severity")
        memory.severity = answer.severity
        change = severity_change(known, answer.severity)
        if change is None:
            return
        try:
            await self.kube.create_event(
                severity_event(monitor, change, answer, now=now, instance=self._instance)
            )
        except KubeError as exc:
            logger.warning("severity change event not posted: %s", exc)

    # ------------------------------------------------------------------- delete

    async def finalize(
        self, body: kopf.Body, retry: int, logger: kopf.Logger, **kwargs: Any
    ) -> None:
        """Drop the monitor's window, its keys in the shared objects, and resize the HPA."""
        monitor = _plain(body)
        metadata = monitor["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        raw_spec = monitor.get("spec", {})
        service = raw_spec.get("service", DEFAULT_SERVICE)
        url = service_url(service, namespace, raw_spec.get("serviceUrl"))
        failure = self._refused(namespace, url)
        if failure is None:
            async with self._service_calls:
                failure = await forget_window(self.http, url, name)
        if failure is not None:
            if failure.reason != "ServiceUrlRefused" and retry + 1 < WINDOW_DELETE_ATTEMPTS:
                raise kopf.TemporaryError(failure.message, delay=WINDOW_DELETE_DELAY)
            logger.warning(
                "window of monitor %s not deleted (%s); its Redis keys expire with their TTL",
                name,
                failure.message,
            )
        try:
            await self._release(namespace, name, service, kwargs[SHARDS_INDEX])
            await self._resize_autoscaler(namespace, service, kwargs[TRAFFIC_INDEX])
        except KubeError as exc:
            raise kopf.TemporaryError(str(exc), delay=API_ERROR_DELAY) from exc
        self._renders.pop((namespace, name), None)
        self._reads.get(namespace, {}).pop(name, None)

    # ------------------------------------------------------------------- inputs

    def index_inputs(self, body: kopf.Body, **_: Any) -> dict[InputKey, InputUse]:
        """Index entries: each ConfigMap and Secret the monitor reads -> the monitor."""
        return monitor_inputs(_plain(body))

    def index_traffic(self, body: kopf.Body, **_: Any) -> dict[tuple[str, str], ServiceMonitor]:
        """Index entry: the monitor's service -> its declared traffic (for HPA sizing)."""
        return service_traffic(_plain(body))

    def index_shards(self, body: kopf.Body, **_: Any) -> dict[tuple[str, str], MonitorShard]:
        """Index entry of a monitors ConfigMap: its service -> its shard and key sizes."""
        # Read in place, not copied: shards are up to 1 MiB and every write is an event.
        return shard_entry(body)

    def reads_input(
        self, resource: kopf.Resource, name: str, namespace: str | None, **kwargs: Any
    ) -> bool:
        """Filter: a ConfigMap or Secret some DriftMonitor reads (the rest are not handled)."""
        index: kopf.Index[InputKey, InputUse] = kwargs[INPUTS_INDEX]
        return (resource.kind, namespace or "", name) in index

    async def input_changed(
        self,
        event: kopf.RawEvent,
        resource: kopf.Resource,
        name: str,
        namespace: str | None,
        logger: kopf.Logger,
        **kwargs: Any,
    ) -> None:
        """Re-reconcile the monitors that last read another version of this ConfigMap/Secret."""
        index: kopf.Index[InputKey, InputUse] = kwargs[INPUTS_INDEX]
        kind = cast(KeyedKind, resource.kind)
        key: InputKey = (kind, namespace or "", name)
        metadata = event.get("object", {}).get("metadata", {})
        revision = "" if event.get("type") == "DELETED" else metadata.get("resourceVersion", "")
        uses = freshest_uses(index.get(key, []), self._reads.get(key[1], {}), kind, name)
        for monitor in monitors_to_refresh(uses, revision):
            try:
                await self.kube.annotate_monitor(
                    key[1],
                    monitor,
                    {INPUT_CHANGED_ANNOTATION: f"{kind}/{name}@{revision or 'deleted'}"},
                )
            except KubeError as exc:
                logger.warning(
                    "monitor %s/%s not refreshed after %s/%s changed: %s",
                    key[1],
                    monitor,
                    kind,
                    name,
                    exc,
                )


def build_registry(operator: DriftMonitorOperator) -> kopf.OperatorRegistry:
    """A kopf registry with the operator's handlers (no global state)."""
    registry = kopf.OperatorRegistry()
    # In-cluster service account first (kopf prefers its higher priority), else kubeconfig.
    kopf.on.login(registry=registry)(kopf.login_with_service_account)
    kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)
    kopf.on.startup(registry=registry)(operator.startup)
    kopf.on.cleanup(registry=registry)(operator.cleanup)
    monitors = (API_GROUP, API_VERSION, PLURAL)
    kopf.index(*monitors, id=INPUTS_INDEX, registry=registry)(operator.index_inputs)
    kopf.index(*monitors, id=TRAFFIC_INDEX, registry=registry)(operator.index_traffic)
    # From the ConfigMap watch the input handlers need anyway; kopf fills every index
    # before any handler runs, so a restarted operator sees where each key already is.
    kopf.index("", "v1", "configmaps", id=SHARDS_INDEX, registry=registry)(operator.index_shards)
    for on in (kopf.on.create, kopf.on.update, kopf.on.resume):
        on(*monitors, id="reconcile", registry=registry)(operator.reconcile)
    kopf.on.delete(*monitors, id="finalize", registry=registry)(operator.finalize)
    kopf.timer(
        *monitors,
        id=STATUS_TIMER,
        interval=operator.settings.status_interval,
        registry=registry,
    )(operator.refresh_status)
    for plural in ("configmaps", "secrets"):
        kopf.on.event(
            "", "v1", plural, id=f"{plural}-changed", when=operator.reads_input, registry=registry
        )(operator.input_changed)
    return registry
