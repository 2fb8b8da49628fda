"""The operator's only door to the Kubernetes API: a few calls over lightkube's AsyncClient.

Everything else in the operator works on plain data. The ConfigMap and Secret that
several DriftMonitors share are written one key at a time with JSON merge patches
(`{"data": {"<monitor>.json": ...}}`, `null` to remove it): each touches only its own
key, so monitors never overwrite each other, and the cost of a write does not grow with
the number of monitors (server-side apply with a field manager per monitor did: 0.4 s a
write at 200 monitors on the API server, which then timed out under load).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import ConfigMap, Secret
from lightkube.resources.events_v1 import Event
from lightkube.types import PatchType

from .spec import API_GROUP, API_VERSION, KIND, PLURAL

DriftMonitorResource = create_namespaced_resource(API_GROUP, API_VERSION, KIND, PLURAL)
KeyedKind = Literal["ConfigMap", "Secret"]
_KEYED_RESOURCES: dict[KeyedKind, type[ConfigMap] | type[Secret]] = {
    "ConfigMap": ConfigMap,
    "Secret": Secret,
}


class KubeError(Exception):
    """A failed API call: the HTTP status (None when the server was not reached) and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class KeyedObject:
    """A ConfigMap's or Secret's values by key (as bytes) and its resourceVersion."""

    revision: str
    values: Mapping[str, bytes]


@asynccontextmanager
async def _api_call(what: str) -> AsyncIterator[None]:
    try:
        yield
    except ApiError as exc:
        raise KubeError(f"{what}: {exc.status.message}", exc.status.code) from exc
    except httpx2.HTTPStatusError as exc:  # an error without a Status body (e.g. a proxy's)
        code = exc.response.status_code
        raise KubeError(f"{what}: HTTP {code} {exc.response.reason_phrase}", code) from exc
    except httpx2.HTTPError as exc:
        why = str(exc) or type(exc).__name__  # connection errors often have no text
        raise KubeError(f"{what}: Kubernetes API unreachable: {why}") from exc


def _keyed_values(obj: ConfigMap | Secret) -> dict[str, bytes]:
    values: dict[str, bytes] = {}
    if isinstance(obj, ConfigMap):
        values.update((k, v.encode()) for k, v in (obj.data or {}).items())
        values.update((k, base64.b64decode(v)) for k, v in (obj.binaryData or {}).items())
    else:
        values.update((k, base64.b64decode(v)) for k, v in (obj.data or {}).items())
    return values


class KubeApi:
    """The Kubernetes calls the operator makes, returning and taking plain data."""

    def __init__(self, client: AsyncClient, field_manager: str = "driftline-controller") -> None:
        self._client = client
        self._field_manager = field_manager

    @classmethod
    def from_environment(cls) -> KubeApi:
        """In-cluster service account when present, else KUBECONFIG / ~/.kube/config."""
        return cls(AsyncClient(config=KubeConfig.from_env()))

    async def close(self) -> None:
        """Release the connection pool."""
        await self._client.close()

    async def read_keyed(self, kind: KeyedKind, namespace: str, name: str) -> KeyedObject | None:
        """A ConfigMap or Secret's values, or None when it does not exist."""
        resource = _KEYED_RESOURCES[kind]
        try:
            async with _api_call(f"get {kind} {namespace}/{name}"):
                obj = await self._client.get(resource, name, namespace=namespace)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        revision = obj.metadata.resourceVersion if obj.metadata else None
        return KeyedObject(revision or "", _keyed_values(obj))

    async def apply_key(
        self,
        kind: KeyedKind,
        namespace: str,
        name: str,
        *,
        key: str,
        value: bytes,
        labels: Mapping[str, str],
    ) -> None:
        """Set one key of a shared ConfigMap or Secret, creating the object when it is absent."""
        encoded = base64.b64encode(value).decode() if kind == "Secret" else value.decode()
        for _ in range(3):  # created or deleted by someone else meanwhile: try again
            if await self._merge_key(kind, namespace, name, {key: encoded}):
                return
            body: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": kind,
                "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
                "data": {key: encoded},
            }
            if kind == "Secret":
                body["type"] = "Opaque"
            try:
                async with _api_call(f"create {kind} {namespace}/{name}"):
                    created = cast(ConfigMap | Secret, _KEYED_RESOURCES[kind].from_dict(body))
                    await self._client.create(created, field_manager=self._field_manager)
                return
            except KubeError as exc:
                if exc.status != 409:
                    raise
        raise KubeError(f"{kind} {namespace}/{name} kept appearing and disappearing", 409)

    async def release_key(self, kind: KeyedKind, namespace: str, name: str, *, key: str) -> None:
        """Remove one key of a shared ConfigMap or Secret (nothing when absent)."""
        await self._merge_key(kind, namespace, name, {key: None})

    async def _merge_key(
        self, kind: KeyedKind, namespace: str, name: str, data: Mapping[str, str | None]
    ) -> bool:
        """Merge `data` into the object's data; False when the object does not exist."""
        try:
            async with _api_call(f"patch {kind} {namespace}/{name}"):
                await self._client.patch(
                    _KEYED_RESOURCES[kind],
                    name,
                    {"data": dict(data)},
                    namespace=namespace,
                    patch_type=PatchType.MERGE,
                    field_manager=self._field_manager,
                )
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def apply_autoscaler(self, autoscaler: Mapping[str, Any], *, field_manager: str) -> None:
        """Create or update a HorizontalPodAutoscaler from its full desired state."""
        metadata = autoscaler["metadata"]
        async with _api_call(
            f"apply HorizontalPodAutoscaler {metadata['namespace']}/{metadata['name']}"
        ):
            await self._client.patch(
                HorizontalPodAutoscaler,
                metadata["name"],
                dict(autoscaler),
                namespace=metadata["namespace"],
                patch_type=PatchType.APPLY,
                field_manager=field_manager,
                force=True,
            )

    async def delete_autoscaler(self, namespace: str, name: str) -> None:
        """Delete a HorizontalPodAutoscaler; one already gone is fine."""
        try:
            async with _api_call(f"delete HorizontalPodAutoscaler {namespace}/{name}"):
                await self._client.delete(HorizontalPodAutoscaler, name, namespace=namespace)
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def apply_monitor_status(
        self, namespace: str, name: str, status: Mapping[str, Any], *, field_manager: str
    ) -> None:
        """Apply the status fields `field_manager` owns; a monitor already gone is fine."""
        body = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace},
            "status": dict(status),
        }
        try:
            async with _api_call(f"apply status of {KIND} {namespace}/{name}"):
                await self._client.patch(
                    DriftMonitorResource.Status,
                    name,
                    body,
                    namespace=namespace,
                    patch_type=PatchType.APPLY,
                    field_manager=field_manager,
                    force=True,
                )
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def annotate_monitor(
        self, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> None:
        """Merge annotations into a DriftMonitor; a monitor already gone is fine."""
        try:
            async with _api_call(f"annotate {KIND} {namespace}/{name}"):
                await self._client.patch(
                    DriftMonitorResource,
                    name,
                    {"metadata": {"annotations": dict(annotations)}},
                    namespace=namespace,
                    patch_type=PatchType.MERGE,
                )
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def create_event(self, event: Mapping[str, Any]) -> None:
        """Post an events.k8s.io/v1 Event."""
        obj = cast(Event, Event.from_dict(dict(event)))
        async with _api_call(f"create Event in {event['metadata']['namespace']}"):
            await self._client.create(obj)
