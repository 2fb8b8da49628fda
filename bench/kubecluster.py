"""A throwaway Kubernetes control plane on 127.0.0.1, from envtest assets.

`KUBEBUILDER_ASSETS` is the envtest convention (what `setup-envtest use 1.28.x -p path`
prints): a folder holding `etcd` and `kube-apiserver`, and optionally
`kube-controller-manager` (garbage collection, namespace deletion, the HPA controller).
Certificates are generated here; the admin client authenticates with a certificate in
`system:masters`. No kubelet runs: objects are stored, validated and reconciled, pods
stay Pending, which is all an operator's tests need. The live test suites
(tests/conftest.py) and the operator's benchmark (bench/operator_fleet.py) start it.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

START_TIMEOUT = 90.0  # seconds for each component to answer its health check


class ControlPlaneError(RuntimeError):
    """A component did not start; the message ends with the tail of its log."""


@dataclass(frozen=True, slots=True)
class ControlPlane:
    """A running control plane: its kubeconfig and whether controllers run beside it."""

    kubeconfig: Path
    server: str
    controller_manager: bool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


class _Authority:
    """A CA that signs the API server's serving certificate and the clients' certificates."""

    def __init__(self) -> None:
        self.key = _key()
        now = datetime.datetime.now(datetime.UTC)
        subject = _name("driftline-test-ca")
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self, common_name: str, *, organization: str | None = None, server: bool = False
    ) -> tuple[bytes, bytes]:
        """A (certificate PEM, key PEM) pair for a client, or for a server on loopback."""
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organization))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            names: list[x509.GeneralName] = [
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                x509.DNSName("localhost"),
                x509.DNSName("kubernetes.default.svc"),
            ]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        return certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _kubeconfig(server: str, ca: bytes, certificate: bytes, key: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: envtest\n  cluster:\n    server: {server}\n"
        f"    certificate-authority-data: {b64(ca)}\n"
        f"users:\n- name: admin\n  user:\n    client-certificate-data: {b64(certificate)}\n"
        f"    client-key-data: {b64(key)}\n"
        "contexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: admin\n"
        "    namespace: default\ncurrent-context: envtest\n"
    )


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


def _wait_healthy(
    url: str, process: subprocess.Popen[bytes], log: Path, context: ssl.SSLContext | None
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ControlPlaneError(f"{log.stem} exited with {process.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise ControlPlaneError(f"{log.stem}: {url} did not answer ({last}):\n{_tail(log)}")


class _Processes:
    """Started components, stopped newest first."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.running.append(process)
        return process, log

    def stop(self) -> None:
        for process in reversed(self.running):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextmanager
def control_plane(assets: Path, directory: Path) -> Iterator[ControlPlane]:
    """Start etcd, kube-apiserver (and kube-controller-manager when present); stop them after."""
    for binary in ("etcd", "kube-apiserver"):
        if not os.access(assets / binary, os.X_OK):
            raise ControlPlaneError(f"KUBEBUILDER_ASSETS={assets} has no executable {binary}")
    pki = directory / "pki"
    pki.mkdir(parents=True)
    authority = _Authority()
    ca = authority.certificate.public_bytes(serialization.Encoding.PEM)
    ca_file = _write(pki / "ca.crt", ca)
    ca_key_file = _write(pki / "ca.key", _pem_key(authority.key))
    serving_cert, serving_key = authority.issue("kube-apiserver", server=True)
    admin_cert, admin_key = authority.issue("admin", organization="system:masters")
    kcm_cert, kcm_key = authority.issue("system:kube-controller-manager")
    account_key = _key()
    account_key_file = _write(pki / "sa.key", _pem_key(account_key))
    account_pub_file = _write(
        pki / "sa.pub",
        account_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    etcd_port, peer_port, api_port, kcm_port = (_free_port() for _ in range(4))
    server = f"https://127.0.0.1:{api_port}"
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(_kubeconfig(server, ca, admin_cert, admin_key))
    kubeconfig.chmod(0o600)
    tls = ssl.create_default_context(cafile=str(ca_file))
    tls.load_cert_chain(_write(pki / "admin.crt", admin_cert), _write(pki / "admin.key", admin_key))

    with ExitStack() as stack:
        processes = _Processes(directory)
        stack.callback(processes.stop)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd, etcd_log = processes.start(
            "etcd",
            [
                str(assets / "etcd"),
                "--name=envtest",
                f"--data-dir={directory / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=envtest={peer_url}",
                "--initial-cluster-state=new",
            ],
        )
        _wait_healthy(f"{etcd_url}/health", etcd, etcd_log, None)
        apiserver, apiserver_log = processes.start(
            "kube-apiserver",
            [
                str(assets / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={directory / 'apiserver-certs'}",
                f"--tls-cert-file={_write(pki / 'apiserver.crt', serving_cert)}",
                f"--tls-private-key-file={_write(pki / 'apiserver.key', serving_key)}",
                f"--client-ca-file={ca_file}",
                f"--service-account-key-file={account_pub_file}",
                f"--service-account-signing-key-file={account_key_file}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--api-audiences=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        _wait_healthy(f"{server}/readyz", apiserver, apiserver_log, tls)
        manager = assets / "kube-controller-manager"
        has_manager = os.access(manager, os.X_OK)
        if has_manager:
            kcm_config = directory / "controller-manager.kubeconfig"
            kcm_config.write_text(_kubeconfig(server, ca, kcm_cert, kcm_key))
            controller_manager, kcm_log = processes.start(
                "kube-controller-manager",
                [
                    str(manager),
                    f"--kubeconfig={kcm_config}",
                    f"--authentication-kubeconfig={kcm_config}",
                    f"--authorization-kubeconfig={kcm_config}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={kcm_port}",
                    f"--cert-dir={directory / 'kcm-certs'}",
                    "--leader-elect=false",
                    "--use-service-account-credentials=true",
                    f"--service-account-private-key-file={account_key_file}",
                    f"--root-ca-file={ca_file}",
                    f"--cluster-signing-cert-file={ca_file}",
                    f"--cluster-signing-key-file={ca_key_file}",
                    # No nodes, volumes or cloud here: the controllers that manage them idle.
                    "--controllers=*,-node-ipam-controller,-node-lifecycle-controller,"
                    "-persistentvolume-binder-controller,"
                    "-persistentvolume-attach-detach-controller,"
                    "-persistentvolume-expander-controller,-ttl-controller",
                    "--profiling=false",
                    "--v=1",
                ],
            )
            insecure = ssl.create_default_context()
            insecure.check_hostname = False
            insecure.verify_mode = ssl.CERT_NONE  # its self-signed serving certificate
            _wait_healthy(
                f"https://127.0.0.1:{kcm_port}/healthz", controller_manager, kcm_log, insecure
            )
        yield ControlPlane(kubeconfig, server, has_manager)
