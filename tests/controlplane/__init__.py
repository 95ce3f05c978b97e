"""The real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler from tools/controlplane (upstream Go modules, built by scripts/setup.sh), on loopback
ports, with certificates generated here and an admin kubeconfig.

Not a stand-in: server-side apply, dry-run, defaulting, field managers, RBAC, admission and watches are
the upstream code's. There are no nodes and no kubelet: Pods stay Pending unless a test writes their
status.

    with ControlPlane(workdir) as cp:        # etcd + kube-apiserver
        cp.start_controllers()               # + controller-manager and scheduler, when a test needs them
        cp.kubeconfig                        # admin (system:masters) kubeconfig
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(
    os.environ.get("EDGEWASM_CONTROLPLANE", REPO / ".cache" / "controlplane" / "current" / "controlplane")
)
SERVICE_CIDR = "10.96.0.0/16"
START_TIMEOUT = 90.0
LOG_TAIL = 60


class ControlPlaneError(RuntimeError):
    """A component did not start; the message carries its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common: str, org: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if org:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(parts)


@dataclass
class Certificates:
    """A CA, the API server's serving certificate, an admin client certificate and the SA signing key."""

    directory: Path
    files: dict[str, Path] = field(default_factory=dict)

    def write(self) -> Certificates:
        self.directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
        ca_key = _key()
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name("edgewasm-test-ca"))
            .issuer_name(_name("edgewasm-test-ca"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(ca_key, hashes.SHA256())
        )
        self._save("ca", ca, ca_key)
        sans = [
            x509.DNSName(n)
            for n in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
        ]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "10.96.0.1")]
        self._leaf("apiserver", _name("kube-apiserver"), ca, ca_key, ExtendedKeyUsageOID.SERVER_AUTH, sans)
        self._leaf(
            "admin", _name("edgewasm-admin", "system:masters"), ca, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH
        )
        sa_key = _key()
        self.files["sa.key"] = self.directory / "sa.key"
        self.files["sa.key"].write_bytes(_pem_key(sa_key))
        self.files["sa.pub"] = self.directory / "sa.pub"
        self.files["sa.pub"].write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return self

    def _leaf(self, name, subject, ca, ca_key, usage, sans=None) -> None:
        key = _key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(ca.not_valid_before_utc)
            .not_valid_after(ca.not_valid_after_utc)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        self._save(name, builder.sign(ca_key, hashes.SHA256()), key)

    def _save(self, name: str, cert: x509.Certificate, key) -> None:
        self.files[f"{name}.crt"] = self.directory / f"{name}.crt"
        self.files[f"{name}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.files[f"{name}.key"] = self.directory / f"{name}.key"
        self.files[f"{name}.key"].write_bytes(_pem_key(key))
        self.files[f"{name}.key"].chmod(0o600)


class Component:
    """One upstream process, its log in the work directory."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name, self.args, self.log = name, args, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(BINARY), self.name, *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-LOG_TAIL:])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class ControlPlane:
    def __init__(self, workdir: Path) -> None:
        if not BINARY.is_file():
            raise ControlPlaneError(
                f"{BINARY} does not exist: scripts/setup.sh builds it from tools/controlplane (make setup)"
            )
        self.workdir = workdir
        self.certs = Certificates(workdir / "pki")
        self.etcd_port, self.peer_port, self.port = free_port(), free_port(), free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.components: dict[str, Component] = {}

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.certs.write()
        self._write_kubeconfig()
        try:
            self._start_etcd()
            self._start_apiserver()
        except BaseException:
            self.stop()
            raise

    def start_controllers(self) -> None:
        """kube-controller-manager and kube-scheduler (Deployments -> ReplicaSets -> Pods, EndpointSlices)."""
        if "kube-controller-manager" in self.components:
            return
        files = self.certs.files
        self._run(
            "kube-controller-manager",
            [
                *self._client_flags(),
                f"--service-account-private-key-file={files['sa.key']}",
                f"--root-ca-file={files['ca.crt']}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-persistentvolume-binder",
            ],
        )
        self._run("kube-scheduler", self._client_flags())
        time.sleep(0.5)
        for name in ("kube-controller-manager", "kube-scheduler"):
            self._require_alive(name)

    def _client_flags(self) -> list[str]:
        """A controller's flags: the admin kubeconfig for everything, no leader election, its own port."""
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
        ]

    def restart_apiserver(self, down: float = 0.0) -> None:
        """Stop and start kube-apiserver on the same port (watches end; clients must relist), after `down`
        seconds without it (an API partition as the clients see it)."""
        self.components.pop("kube-apiserver").stop()
        time.sleep(down)
        self._start_apiserver()

    def stop(self) -> None:
        for component in reversed(list(self.components.values())):
            component.stop()
        self.components.clear()

    def logs(self) -> str:
        return "\n\n".join(
            f"--- {c.name} (last {LOG_TAIL} lines) ---\n{c.tail()}" for c in self.components.values()
        )

    # -- components ------------------------------------------------------------------------------------
    def _run(self, name: str, args: list[str]) -> Component:
        component = Component(name, args, self.workdir / f"{name}.log")
        self.components[name] = component
        component.start()
        return component

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        self._run(
            "etcd",
            [
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--log-level=warn",
                "--unsafe-no-fsync",  # test data: nothing to keep across a crash
            ],
        )
        self._wait("etcd", lambda: self._http_ok(f"http://127.0.0.1:{self.etcd_port}/health"))

    def _start_apiserver(self) -> None:
        files = self.certs.files
        self._run(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.port}",
                # Only for the default/kubernetes Service's endpoints, which may not be a loopback address.
                "--advertise-address=10.96.255.254",
                f"--tls-cert-file={files['apiserver.crt']}",
                f"--tls-private-key-file={files['apiserver.key']}",
                f"--client-ca-file={files['ca.crt']}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={files['sa.pub']}",
                f"--service-account-signing-key-file={files['sa.key']}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--profiling=false",
                "--enable-priority-and-fairness=false",
            ],
        )
        self._wait("kube-apiserver", lambda: self._http_ok(f"{self.server}/readyz", tls=True))

    # -- helpers ---------------------------------------------------------------------------------------
    def _require_alive(self, name: str) -> None:
        if not self.components[name].alive():
            raise ControlPlaneError(f"{name} exited at start:\n{self.logs()}")

    def _wait(self, name: str, ready) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._require_alive(name)
            if ready():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"{name} was not ready within {START_TIMEOUT:g} s:\n{self.logs()}")

    def ssl_context(self) -> ssl.SSLContext:
        files = self.certs.files
        context = ssl.create_default_context(cafile=str(files["ca.crt"]))
        context.load_cert_chain(str(files["admin.crt"]), str(files["admin.key"]))
        return context

    def _http_ok(self, url: str, tls: bool = False) -> bool:
        context = self.ssl_context() if tls else None
        try:
            answer = urllib.request.urlopen(url, timeout=2, context=context)  # noqa: S310 - our URLs
        except (urllib.error.URLError, OSError):
            return False
        with answer:
            return answer.status == 200

    def _write_kubeconfig(self) -> None:
        files = self.certs.files
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "edgewasm-test",
                            "cluster": {"server": self.server, "certificate-authority": str(files["ca.crt"])},
                        }
                    ],
                    "users": [
                        {
                            "name": "admin",
                            "user": {
                                "client-certificate": str(files["admin.crt"]),
                                "client-key": str(files["admin.key"]),
                            },
                        }
                    ],
                    "contexts": [
                        {"name": "edgewasm-test", "context": {"cluster": "edgewasm-test", "user": "admin"}}
                    ],
                    "current-context": "edgewasm-test",
                }
            )
        )
