"""`kubectl apply -k` of every kustomization in manifests/, as the README and docs say it.

On the session's API server: client-side apply as the quick start does, the switch to
server-side apply that docs/kubernetes.md describes, and server-side apply on an empty
namespace. Every object kustomize renders must then exist on the server, and applying
the same again must change nothing. No kubelet runs: pods stay Pending, which does not
matter to what is checked here.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_support import ROOT, KubeTarget

pytestmark = pytest.mark.k8s

MANIFESTS = ROOT / "manifests"
MONITORING_CRDS = Path(__file__).resolve().parent / "fixtures" / "monitoring-crds.yaml"
# Applied together, in this order (the base installs the CRD the examples need).
# manifests/examples/kserve is not: its InferenceService needs KServe's CRD, which the
# test API server lacks; test_manifests.py checks its shape and what it points at.
WITH_OPERATOR = ["manifests", "manifests/examples", "manifests/monitoring"]


def rendered(kube: KubeTarget, path: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize` renders for a kustomization directory."""
    return [d for d in yaml.safe_load_all(kube.kubectl("kustomize", str(path)).stdout) if d]


def refs(objects: list[dict[str, Any]]) -> list[str]:
    found = []
    for obj in objects:
        namespace = obj["metadata"].get("namespace")
        found.append(
            f"{obj['kind']}/{obj['metadata']['name']}" + (f" -n {namespace}" if namespace else "")
        )
    return found


def versions(kube: KubeTarget, objects: list[dict[str, Any]]) -> dict[str, str]:
    """What changes when an object's desired state does, per object; fails on a missing one.

    metadata.generation where the kind has one (controllers update the status of
    Deployments, StatefulSets, PodDisruptionBudgets, ... at their own pace, which moves
    resourceVersion but not generation), else resourceVersion.
    """
    found: dict[str, str] = {}
    for ref, obj in zip(refs(objects), objects, strict=True):
        kind = f"{obj['kind'].lower()}.{obj['apiVersion'].split('/')[0]}"
        if "/" not in obj["apiVersion"]:
            kind = obj["kind"].lower()  # the core group
        args = [
            "get",
            kind,
            obj["metadata"]["name"],
            "-o",
            "jsonpath={.metadata.generation}/{.metadata.resourceVersion}",
        ]
        if obj["metadata"].get("namespace"):
            args += ["-n", obj["metadata"]["namespace"]]
        done = kube.kubectl(*args, check=False)
        assert done.returncode == 0, f"{ref} was not created: {done.stderr}"
        generation, version = done.stdout.split("/")
        found[ref] = generation or version
    return found


def overlay(directory: Path, base: Path, namespace: str) -> Path:
    """A kustomization placing `base` in `namespace` (for bases that share object names)."""
    directory.mkdir(parents=True, exist_ok=True)
    relative = Path("/".join([".."] * len(directory.parts[1:]))) / base.relative_to("/")
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": namespace,
                "resources": [str(relative)],
            }
        )
    )
    return directory


@pytest.fixture(scope="module")
def monitoring_crds(kube: KubeTarget) -> None:
    kube.kubectl("apply", "-f", str(MONITORING_CRDS))
    for name in ("servicemonitors", "prometheusrules"):
        kube.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            f"crd/{name}.monitoring.coreos.com",
        )


def test_client_side_apply_then_the_switch_to_server_side(
    kube: KubeTarget, monitoring_crds: None
) -> None:
    objects: list[dict[str, Any]] = []
    for path in WITH_OPERATOR:
        kube.kubectl("apply", "-k", str(ROOT / path))
        objects += rendered(kube, ROOT / path)
    before = versions(kube, objects)
    assert "DriftMonitor/credit-risk -n driftline" in before
    assert "CustomResourceDefinition/driftmonitors.driftline.io" in before
    for path in WITH_OPERATOR:
        kube.kubectl("apply", "-k", str(ROOT / path))
    assert versions(kube, objects) == before, "re-applying the same manifests changed objects"
    # Switching an install from client-side to server-side apply takes the fields over
    # once with --force-conflicts (docs/kubernetes.md); afterwards plain applies work.
    for path in WITH_OPERATOR:
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / path))
    switched = versions(kube, objects)
    for path in WITH_OPERATOR:
        kube.kubectl("apply", "--server-side", "-k", str(ROOT / path))
    assert versions(kube, objects) == switched, "re-applying the same manifests changed objects"


@pytest.mark.parametrize("path", ["manifests/examples", "manifests/standalone"])
def test_server_side_apply_on_an_empty_namespace(
    kube: KubeTarget, monitoring_crds: None, path: str, tmp_path: Path
) -> None:
    # The standalone variant and the examples share object names with the base: each
    # gets a namespace of its own through an overlay, the way a user would place them.
    namespace = f"{Path(path).name}-{uuid.uuid4().hex[:6]}"
    if path != "manifests/standalone":  # it brings its own Namespace object
        kube.kubectl("create", "namespace", namespace)
    kube.install_crd()
    directory = overlay(tmp_path / "overlay", ROOT / path, namespace)
    kube.kubectl("apply", "--server-side", "-k", str(directory))
    objects = rendered(kube, directory)
    assert all(obj["metadata"].get("namespace") in (None, namespace) for obj in objects), (
        "the overlay left an object outside its namespace"
    )
    first = versions(kube, objects)
    kube.kubectl("apply", "--server-side", "-k", str(directory))
    assert versions(kube, objects) == first, "a second server-side apply changed objects"
