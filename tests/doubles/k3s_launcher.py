"""STAND-IN k3s, real-node mode (edgewasm stand-in, not k3s): the lab's launcher of upstream components.

Where the lab mounts tools/controlplane's multi-call binary at /opt/edgewasm-lab/controlplane/current
(scripts/lab.sh; containerd 2 from tools/containerd at /opt/edgewasm-lab/containerd/current),
the stand-in `k3s server` and `k3s agent` (k3s.py) stop pretending and start the real upstream programs,
as k3s starts its embedded ones, behind the interface the k3s role drives (config.yaml, the token, the
containerd template, /etc/rancher/k3s/k3s.yaml, the manifests and air-gap images directories):

- server: etcd, kube-apiserver (:6443), kube-controller-manager (node CIDRs, CSR signing and
  approval, bootstrap tokens), kube-scheduler, then the node components below against 127.0.0.1;
  it applies server/manifests/*.yaml as k3s's deploy controller does;
- every node: Debian's containerd with the config rendered from the containerd template, the air-gap
  images imported into it, a kubelet that joins by TLS bootstrapping with a bootstrap token derived
  from the cluster token (a wrong token is refused by the API server: the agent exits 1 saying so),
  kube-proxy (iptables), and the CNI bridge with this node's pod CIDR plus routes to the other
  nodes' pod CIDRs (what kind's kindnet does).

An agent checks the server's CA against the hash in a `K10<sha256>::server:<secret>` token before it
trusts it, as k3s does. Only one server: a joining server exits 1 with a message (embedded etcd
clusters are the stand-in's, not this launcher's). Stdlib + PyYAML (the node image has python3-yaml)
+ openssl, iproute2, zstd and the upstream binaries.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import yaml

BIN = Path(os.environ.get("EDGEWASM_LAB_BIN", "/opt/edgewasm-lab/controlplane/current"))
CONTAINERD2 = Path(os.environ.get("EDGEWASM_LAB_CONTAINERD", "/opt/edgewasm-lab/containerd/current"))
CONFIG = Path("/etc/rancher/k3s/config.yaml")
ADMIN_KUBECONFIG = Path("/etc/rancher/k3s/k3s.yaml")
API_PORT = 6443
ETCD_PORT = 2379
START_TIMEOUT = 120.0
CNI_PLUGINS = Path("/usr/lib/cni")
KUBELET_DIR = Path("/var/lib/kubelet")


def available() -> bool:
    """Real-node mode: the lab mounted the upstream components."""
    return (BIN / "controlplane").is_file()


class LaunchError(RuntimeError):
    """Why this node cannot start: printed as k3s's last words, exit status 1."""


# -- settings -------------------------------------------------------------------------------------


class Settings:
    """config.yaml as k3s reads it, with k3s's defaults."""

    def __init__(self) -> None:
        raw = yaml.safe_load(CONFIG.read_text()) if CONFIG.exists() else {}
        self.raw = raw or {}
        self.data = Path(self.get("data-dir") or "/var/lib/rancher/k3s")
        self.node_name = self.get("node-name") or socket.gethostname()
        self.node_ip = self.get("node-ip") or primary_ip()
        self.cluster_cidr = self.get("cluster-cidr") or "10.42.0.0/16"
        self.service_cidr = self.get("service-cidr") or "10.43.0.0/16"
        self.server = self.get("server") or os.environ.get("K3S_URL", "")

    def get(self, key: str) -> str:
        value = self.raw.get(key)
        return "" if value in (None, [], "") else str(value)

    def items(self, key: str) -> list[str]:
        value = self.raw.get(key) or []
        return [str(v) for v in (value if isinstance(value, list) else str(value).split(","))]

    def service_ip(self, index: int) -> str:
        return str(ipaddress.ip_network(self.service_cidr)[index])


def primary_ip() -> str:
    """The address of the interface the default route leaves by (kubelet's own choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("192.0.2.1", 9))  # no packet is sent: UDP connect only picks the route
        return sock.getsockname()[0]


def local_ips() -> list[str]:
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3]


def bootstrap_token(token: str) -> tuple[str, str]:
    """The bootstrap token (id, secret) both sides derive from the cluster token's secret part."""
    digest = hashlib.sha256(token.rsplit(":", 1)[-1].encode()).hexdigest()
    return digest[:6], digest[6:22]


# -- certificates (openssl) ----------------------------------------------------------------------


def openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode:
        raise LaunchError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def ensure_pki(tls: Path, sans: list[str]) -> None:
    """The cluster CA (also the client and kubelet-signing CA), the API server's serving certificate,
    the admin client certificate and the service-account key pair. Kept across restarts; the serving
    certificate is renewed when its SANs change."""
    tls.mkdir(parents=True, exist_ok=True)
    os.chmod(tls, 0o700)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    if not (tls / "server-ca.crt").exists():
        openssl(
            "req",
            "-x509",
            *ec,
            "-keyout",
            str(tls / "server-ca.key"),
            "-out",
            str(tls / "server-ca.crt"),
            "-days",
            "3650",
            "-subj",
            f"/CN=k3s-server-ca@{int(time.time())}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
        )
    wanted = ",".join(sorted(set(sans)))
    stamp = tls / "serving-kube-apiserver.sans"
    if not stamp.exists() or stamp.read_text() != wanted:
        alt = ",".join(("IP:" if is_ip(name) else "DNS:") + name for name in sorted(set(sans)))
        leaf(tls, "serving-kube-apiserver", "/CN=kube-apiserver", "serverAuth", alt)
        stamp.write_text(wanted)
    if not (tls / "client-admin.crt").exists():
        leaf(tls, "client-admin", "/O=system:masters/CN=system:admin", "clientAuth")
    if not (tls / "service.key").exists():
        openssl("ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(tls / "service.key"))
        openssl("ec", "-in", str(tls / "service.key"), "-pubout", "-out", str(tls / "service.pub"))
    for key in tls.glob("*.key"):
        key.chmod(0o600)


def leaf(tls: Path, name: str, subject: str, usage: str, alt: str = "") -> None:
    extra = ["-addext", f"subjectAltName={alt}"] if alt else []
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-CA",
        str(tls / "server-ca.crt"),
        "-CAkey",
        str(tls / "server-ca.key"),
        "-keyout",
        str(tls / f"{name}.key"),
        "-out",
        str(tls / f"{name}.crt"),
        "-days",
        "365",
        "-subj",
        subject,
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext",
        f"extendedKeyUsage={usage}",
        *extra,
    )


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def kubeconfig(server: str, ca: bytes, user: dict) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "default",
                    "cluster": {
                        "server": server,
                        "certificate-authority-data": base64.b64encode(ca).decode(),
                    },
                }
            ],
            "users": [{"name": "default", "user": user}],
            "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
            "current-context": "default",
        }
    )


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


# -- processes ------------------------------------------------------------------------------------


class Supervisor:
    """The upstream programs as children, each logging to <log_dir>/<name>.log (as k3s keeps
    containerd's log in agent/containerd/containerd.log); one dying stops them all, its log's tail
    printed to the journal (systemd restarts k3s)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stopping = False

    def start(self, name: str, argv: list[str], env: dict | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        print(f"k3s: starting {name} (log: {self.log_dir / name}.log)", flush=True)
        with (self.log_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        self.children.append((name, proc))

    def tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join((self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None and not self.stopping:
                raise LaunchError(
                    f"{name} exited with status {proc.returncode}; the end of {self.log_dir / name}.log:\n"
                    + self.tail(name)
                )

    def stop(self) -> None:
        self.stopping = True
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
        for _name, proc in reversed(self.children):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def component(name: str) -> list[str]:
    return [str(BIN / "controlplane"), name]


def wait_until(what: str, ready, supervisor: Supervisor, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        supervisor.check()
        if time.monotonic() > deadline:
            raise LaunchError(f"{what} was not ready after {timeout:.0f} s")
        time.sleep(0.5)


def https_status(url: str, context: ssl.SSLContext, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - https only
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as answer:  # noqa: S310
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def kubectl(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*component("kubectl"), f"--kubeconfig={config}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


# -- server ---------------------------------------------------------------------------------------


RBAC = "rbac.authorization.k8s.io"


def binding(name: str, role: str, group: str) -> dict:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC, "kind": "Group", "name": group}],
    }


def bootstrap_objects(token: str, ca: bytes, server: str) -> str:
    """What kubeadm sets up for TLS bootstrapping, plus kube-proxy's rights for node credentials: a v1
    List in JSON (in YAML, a token id such as 907e21 would be read back as a number)."""
    token_id, secret = bootstrap_token(token)
    csr = "system:certificates.k8s.io:certificatesigningrequests"
    items = [
        binding("edgewasm-lab:kubelet-bootstrap", "system:node-bootstrapper", "system:bootstrappers"),
        binding("edgewasm-lab:node-autoapprove-bootstrap", f"{csr}:nodeclient", "system:bootstrappers"),
        binding("edgewasm-lab:node-autoapprove-rotation", f"{csr}:selfnodeclient", "system:nodes"),
        binding("edgewasm-lab:node-proxier", "system:node-proxier", "system:nodes"),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"},
            "stringData": {
                "token-id": token_id,
                "token-secret": secret,
                "usage-bootstrap-authentication": "true",
                "usage-bootstrap-signing": "true",
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cluster-info", "namespace": "kube-public"},
            "data": {"kubeconfig": kubeconfig(server, ca, {})},
        },
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "Role",
            "metadata": {"name": "edgewasm-lab:cluster-info", "namespace": "kube-public"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["cluster-info"],
                    "verbs": ["get"],
                }
            ],
        },
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "edgewasm-lab:cluster-info", "namespace": "kube-public"},
            "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "edgewasm-lab:cluster-info"},
            "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "system:anonymous"}],
        },
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def start_server(settings: Settings, token: str, supervisor: Supervisor) -> bytes:
    """The control plane on this node; returns the CA certificate (PEM)."""
    if settings.server:
        raise LaunchError(
            "this lab launcher runs one server: joining servers are not supported "
            f"(config.yaml has server: {settings.server})"
        )
    tls = settings.data / "server" / "tls"
    sans = [
        "127.0.0.1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        settings.service_ip(1),
        settings.node_name,
        socket.gethostname(),
        settings.node_ip,
        *local_ips(),
        *settings.items("tls-san"),
    ]
    ensure_pki(tls, [s for s in sans if s])
    ca = (tls / "server-ca.crt").read_bytes()
    write_tokens(settings.data / "server", ca, token)
    admin = settings.data / "server" / "cred" / "admin.kubeconfig"
    write_private(
        admin,
        kubeconfig(
            f"https://127.0.0.1:{API_PORT}",
            ca,
            {
                "client-certificate": str(tls / "client-admin.crt"),
                "client-key": str(tls / "client-admin.key"),
            },
        ),
    )
    etcd_dir = settings.data / "server" / "db" / "etcd"
    supervisor.start(
        "etcd",
        [
            *component("etcd"),
            "--name",
            settings.node_name,
            f"--data-dir={etcd_dir}",
            f"--listen-client-urls=http://127.0.0.1:{ETCD_PORT}",
            f"--advertise-client-urls=http://127.0.0.1:{ETCD_PORT}",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--log-level=warn",
        ],
    )
    wait_until("etcd", lambda: http_ok(f"http://127.0.0.1:{ETCD_PORT}/health"), supervisor)
    supervisor.start(
        "kube-apiserver",
        [
            *component("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
            "--bind-address=0.0.0.0",
            f"--secure-port={API_PORT}",
            f"--advertise-address={settings.node_ip}",
            f"--tls-cert-file={tls / 'serving-kube-apiserver.crt'}",
            f"--tls-private-key-file={tls / 'serving-kube-apiserver.key'}",
            f"--client-ca-file={tls / 'server-ca.crt'}",
            f"--kubelet-client-certificate={tls / 'client-admin.crt'}",
            f"--kubelet-client-key={tls / 'client-admin.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={tls / 'service.pub'}",
            f"--service-account-signing-key-file={tls / 'service.key'}",
            f"--service-cluster-ip-range={settings.service_cidr}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--enable-bootstrap-token-auth=true",
            "--allow-privileged=true",
            "--profiling=false",
        ],
    )
    context = ssl.create_default_context(cadata=ca.decode())
    context.load_cert_chain(tls / "client-admin.crt", tls / "client-admin.key")
    wait_until(
        "kube-apiserver",
        lambda: https_status(f"https://127.0.0.1:{API_PORT}/readyz", context) == 200,
        supervisor,
    )
    applied = kubectl(
        admin,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin=bootstrap_objects(token, ca, f"https://{settings.node_ip}:{API_PORT}"),
    )
    if applied.returncode:
        raise LaunchError(f"cannot create the bootstrap objects: {applied.stderr.strip()}")
    controllers = [
        f"--kubeconfig={admin}",
        f"--authentication-kubeconfig={admin}",
        f"--authorization-kubeconfig={admin}",
        "--leader-elect=false",
        "--profiling=false",
    ]
    supervisor.start(
        "kube-controller-manager",
        [
            *component("kube-controller-manager"),
            *controllers,
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={tls / 'service.key'}",
            f"--root-ca-file={tls / 'server-ca.crt'}",
            f"--cluster-signing-cert-file={tls / 'server-ca.crt'}",
            f"--cluster-signing-key-file={tls / 'server-ca.key'}",
            "--allocate-node-cidrs=true",
            f"--cluster-cidr={settings.cluster_cidr}",
            f"--service-cluster-ip-range={settings.service_cidr}",
            "--node-cidr-mask-size=24",
            "--controllers=*,bootstrapsigner,tokencleaner,-cloud-node-lifecycle",
        ],
    )
    supervisor.start("kube-scheduler", [*component("kube-scheduler"), *controllers])
    # The admin kubeconfig k3s writes for `k3s kubectl` and the k3s role: certificates inline, 0600.
    ADMIN_KUBECONFIG.parent.mkdir(parents=True, exist_ok=True)
    write_private(
        ADMIN_KUBECONFIG,
        kubeconfig(
            f"https://127.0.0.1:{API_PORT}",
            ca,
            {
                "client-certificate-data": base64.b64encode((tls / "client-admin.crt").read_bytes()).decode(),
                "client-key-data": base64.b64encode((tls / "client-admin.key").read_bytes()).decode(),
            },
        ),
    )
    threading.Thread(
        target=apply_manifests, args=(settings.data / "server" / "manifests", admin), daemon=True
    ).start()
    return ca


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - our loopback URL
            return answer.status == 200
    except OSError:
        return False


def apply_manifests(directory: Path, admin: Path) -> None:
    """k3s's deploy controller, simply: apply every manifest whose content changed, every 5 s."""
    applied: dict[Path, str] = {}
    while True:
        for manifest in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
            try:
                digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
            except OSError:
                continue
            if applied.get(manifest) == digest:
                continue
            result = kubectl(admin, "apply", "-f", str(manifest))
            print(f"k3s: applied {manifest.name}: {(result.stdout + result.stderr).strip()}", flush=True)
            if result.returncode == 0:
                applied[manifest] = digest
        time.sleep(5)


# -- every node -----------------------------------------------------------------------------------


def fetch_ca(server: str, token: str) -> bytes:
    """The cluster CA from the server's public cluster-info, checked against a K10 token's hash."""
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # trust comes from the token's hash, below (as k3s does)
    url = f"{server.rstrip('/')}/api/v1/namespaces/kube-public/configmaps/cluster-info"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5, context=insecure) as answer:  # noqa: S310
                info = json.loads(answer.read())
            break
        except (OSError, ValueError) as err:
            if time.monotonic() > deadline:
                raise LaunchError(f"cannot read the cluster CA from {server}: {err}") from err
            time.sleep(1)
    config = yaml.safe_load(info["data"]["kubeconfig"])
    ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
    if token.startswith("K10") and "::" in token:
        expected = token[3:].split("::", 1)[0]
        if hashlib.sha256(ca).hexdigest() != expected:
            raise LaunchError(
                f"the CA of {server} does not match the hash in the token: "
                "wrong server, or a token of another cluster"
            )
    return ca


def check_token(server: str, ca: bytes, token: str) -> None:
    """Refuse to start when the server does not accept this node's bootstrap token: the clear message
    a kubelet retrying a 401 forever would never give."""
    token_id, secret = bootstrap_token(token)
    context = ssl.create_default_context(cadata=ca.decode())
    context.check_hostname = False  # the server is addressed as the inventory names it
    status = https_status(
        f"{server.rstrip('/')}/apis/certificates.k8s.io/v1/certificatesigningrequests",
        context,
        {"Authorization": f"Bearer {token_id}.{secret}"},
    )
    if status == 401:
        raise LaunchError(
            f"{server} refused the join token (401 Unauthorized): this node's token is not "
            "the cluster's (K3S_TOKEN in the service environment file)"
        )
    if status not in (200, 403):
        raise LaunchError(f"{server} answered {status or 'nothing'} to the join token check")


def containerd_config(settings: Settings) -> tuple[Path, dict]:
    path = settings.data / "agent" / "etc" / "containerd" / "config.toml"
    return path, tomllib.loads(path.read_text())


def cni_dirs(config: dict) -> tuple[Path, Path]:
    """bin_dir and conf_dir of the CRI plugin, wherever the config version puts them."""
    plugins = config.get("plugins", {})
    for key in ("io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"):
        cni = plugins.get(key, {}).get("cni")
        if cni:
            return Path(cni["bin_dir"]), Path(cni["conf_dir"])
    raise LaunchError("the rendered containerd config has no CRI cni section")


def cgroup_driver(config: dict) -> str:
    """The kubelet's cgroup driver: the one k3s rendered for runc (SystemdCgroup), as k3s keeps both alike."""
    plugins = config.get("plugins", {})
    for key in ("io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"):
        runc = plugins.get(key, {}).get("containerd", {}).get("runtimes", {}).get("runc", {})
        if runc:
            return "systemd" if runc.get("options", {}).get("SystemdCgroup") else "cgroupfs"
    return "cgroupfs"


def start_containerd(settings: Settings, supervisor: Supervisor) -> Path:
    path, config = containerd_config(settings)
    version = str(config.get("version"))
    # Config version 2 is Debian's containerd 1.6 (k3s before v1.31.6), 3 is containerd 2 (tools/containerd).
    env = dict(os.environ)
    binary = "containerd"
    if version == "3":
        if not (CONTAINERD2 / "containerd").is_file():
            raise LaunchError(
                f"{path} is containerd config version 3: it needs containerd 2 at {CONTAINERD2}, "
                "which the lab mounts from tools/containerd's build (scripts/setup.sh)"
            )
        binary = str(CONTAINERD2 / "containerd")
        env["PATH"] = f"{CONTAINERD2}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"  # its runc shim
    elif version != "2":
        raise LaunchError(f"{path} has containerd config version {version}: containerd reads 2 or 3")
    bin_dir, conf_dir = cni_dirs(config)
    bin_dir.mkdir(parents=True, exist_ok=True)
    conf_dir.mkdir(parents=True, exist_ok=True)
    for plugin in CNI_PLUGINS.iterdir():
        link = bin_dir / plugin.name
        if not link.exists():
            link.symlink_to(plugin)
    socket_path = Path(config.get("grpc", {}).get("address", "/run/containerd/containerd.sock"))
    socket_path.unlink(missing_ok=True)
    supervisor.start("containerd", [binary, "--config", str(path)], env)
    wait_until("containerd", socket_path.exists, supervisor)
    ctr = str(CONTAINERD2 / "ctr") if version == "3" else "/usr/bin/ctr"  # not k3s's own `ctr` link
    import_images(settings.data / "agent" / "images", socket_path, ctr)
    return socket_path


def import_images(directory: Path, socket_path: Path, ctr: str) -> None:
    """k3s imports every air-gap archive in agent/images at start; .tar.zst are decompressed first."""
    for archive in sorted(directory.glob("*.tar*")) if directory.is_dir() else []:
        reader = ["zstd", "-dcq", str(archive)] if archive.name.endswith(".zst") else ["cat", str(archive)]
        with subprocess.Popen(reader, stdout=subprocess.PIPE) as source:
            result = subprocess.run(
                [
                    ctr,
                    "--address",
                    str(socket_path),
                    "-n",
                    "k8s.io",
                    "images",
                    "import",
                    "--all-platforms",
                    "-",
                ],
                stdin=source.stdout,
                capture_output=True,
                text=True,
                check=False,
            )
        if source.returncode or result.returncode:
            print(
                f"k3s: {archive.name} is not an image archive, skipped: {result.stderr.strip()}", flush=True
            )
        else:
            print(f"k3s: imported {archive.name}", flush=True)


def start_node(settings: Settings, server: str, ca: bytes, token: str, supervisor: Supervisor) -> None:
    """containerd, kubelet (TLS bootstrap), kube-proxy and the pod network of this node."""
    agent = settings.data / "agent"
    (agent / "server-ca.crt").write_bytes(ca)
    token_id, secret = bootstrap_token(token)
    bootstrap = agent / "kubelet-bootstrap.kubeconfig"
    node_config = agent / "kubelet.kubeconfig"
    write_private(bootstrap, kubeconfig(server, ca, {"token": f"{token_id}.{secret}"}))
    socket_path = start_containerd(settings, supervisor)
    kubelet_config = agent / "etc" / "kubelet.yaml"
    kubelet_config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "cgroupDriver": cgroup_driver(containerd_config(settings)[1]),
                "failSwapOn": False,
                "containerRuntimeEndpoint": f"unix://{socket_path}",
                "authentication": {
                    "anonymous": {"enabled": False},
                    "webhook": {"enabled": True},
                    "x509": {"clientCAFile": str(agent / "server-ca.crt")},
                },
                "authorization": {"mode": "Webhook"},
                "clusterDNS": [settings.service_ip(10)],
                "clusterDomain": "cluster.local",
                "resolvConf": "/etc/resolv.conf",
                "rotateCertificates": True,
                # A lab node shares the machine's disk and memory: no evictions for the host's usage.
                "evictionHard": {
                    "memory.available": "1Mi",
                    "nodefs.available": "1%",
                    "imagefs.available": "1%",
                    "nodefs.inodesFree": "1%",
                },
                "imageGCHighThresholdPercent": 100,
                "localStorageCapacityIsolation": False,
            }
        )
    )
    labels = settings.items("node-label")
    taints = settings.items("node-taint")
    supervisor.start(
        "kubelet",
        [
            *component("kubelet"),
            f"--config={kubelet_config}",
            f"--bootstrap-kubeconfig={bootstrap}",
            f"--kubeconfig={node_config}",
            f"--cert-dir={agent / 'kubelet-pki'}",
            f"--hostname-override={settings.node_name}",
            f"--node-ip={settings.node_ip}",
            *([f"--node-labels={','.join(labels)}"] if labels else []),
            *([f"--register-with-taints={','.join(taints)}"] if taints else []),
        ],
    )
    client_cert = agent / "kubelet-pki" / "kubelet-client-current.pem"
    wait_until(
        "the kubelet's node credentials", lambda: node_config.exists() and client_cert.exists(), supervisor
    )
    proxy_config = agent / "etc" / "kube-proxy.yaml"
    proxy_config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "mode": "iptables",
                "clusterCIDR": settings.cluster_cidr,
                "hostnameOverride": settings.node_name,
                "clientConnection": {"kubeconfig": str(node_config)},
                "conntrack": {"maxPerCore": 0},
                "nodePortAddresses": ["primary"],
            }
        )
    )
    supervisor.start("kube-proxy", [*component("kube-proxy"), f"--config={proxy_config}"])
    _path, config = containerd_config(settings)
    network = PodNetwork(settings.node_name, node_config, cni_dirs(config)[1])
    wait_until(f"node {settings.node_name}'s pod CIDR", network.sync, supervisor)
    threading.Thread(target=network.forever, daemon=True).start()


class PodNetwork:
    """This node's CNI bridge on its pod CIDR and routes to the other nodes' (kindnet's job)."""

    def __init__(self, name: str, credentials: Path, conf_dir: Path) -> None:
        self.name, self.credentials, self.conf_dir = name, credentials, conf_dir
        self.routes: dict[str, str] = {}

    def sync(self) -> bool:
        listed = kubectl(self.credentials, "get", "nodes", "-o", "json")
        if listed.returncode:
            return False
        mine = False
        for node in json.loads(listed.stdout).get("items", []):
            cidr = node.get("spec", {}).get("podCIDR")
            address = next(
                (
                    a["address"]
                    for a in node.get("status", {}).get("addresses", [])
                    if a["type"] == "InternalIP"
                ),
                None,
            )
            if not cidr:
                continue
            if node["metadata"]["name"] == self.name:
                self.write_cni(cidr)
                mine = True
            elif address and self.routes.get(cidr) != address:
                subprocess.run(["ip", "route", "replace", cidr, "via", address], check=False)
                self.routes[cidr] = address
        return mine

    def write_cni(self, cidr: str) -> None:
        conf = json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "edgewasm-lab",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": "cni0",
                        "isGateway": True,
                        "ipMasq": True,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": cidr}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            },
            indent=1,
        )
        path = self.conf_dir / "10-edgewasm-lab.conflist"
        if not path.exists() or path.read_text() != conf:
            write_private(path, conf)

    def forever(self) -> None:
        while True:
            time.sleep(5)
            self.sync()


# -- entry point ----------------------------------------------------------------------------------


def ctr_main(args: list[str]) -> int:
    """`k3s ctr`: the node's real ctr, talking to k3s's containerd in namespace k8s.io unless told otherwise
    (CONTAINERD_ADDRESS / CONTAINERD_NAMESPACE, --address / -n on the command line), as k3s's own does."""
    ctr = CONTAINERD2 / "ctr" if (CONTAINERD2 / "ctr").exists() else Path("/usr/bin/ctr")
    env = dict(os.environ)
    env.setdefault("CONTAINERD_ADDRESS", "/run/k3s/containerd/containerd.sock")
    env.setdefault("CONTAINERD_NAMESPACE", "k8s.io")
    return subprocess.run([str(ctr), *args], env=env, check=False).returncode


def kubectl_main(args: list[str]) -> int:
    """`k3s kubectl`: the real kubectl with the admin kubeconfig."""
    return subprocess.run(
        [*component("kubectl"), f"--kubeconfig={ADMIN_KUBECONFIG}", *args], check=False
    ).returncode


def write_tokens(server_dir: Path, ca: bytes, token: str) -> None:
    """token and node-token as k3s writes them: K10<sha256 of the CA>::server:<secret>, 0600."""
    for name in ("token", "node-token"):
        write_private(server_dir / name, f"K10{hashlib.sha256(ca).hexdigest()}::server:{token}\n")


def run(mode: str, token: str, notify, event) -> int:
    """`k3s server` / `k3s agent` with the real components; notify() once this node is registered."""
    settings = Settings()
    supervisor = Supervisor(settings.data / "agent" / "logs")

    def stop(*_args: object) -> None:
        supervisor.stop()
        event("stop")
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        if mode == "server":
            ca = start_server(settings, token, supervisor)
            server = f"https://127.0.0.1:{API_PORT}"
        else:
            if not settings.server or not token:
                raise LaunchError(
                    "an agent needs a server URL (server: in config.yaml) and a token (K3S_TOKEN)"
                )
            server = settings.server
            ca = fetch_ca(server, token)
            check_token(server, ca, token)
        start_node(settings, server, ca, token, supervisor)
        if mode == "server":
            kubectl(
                ADMIN_KUBECONFIG,
                "label",
                "node",
                settings.node_name,
                "--overwrite",
                "node-role.kubernetes.io/control-plane=true",
            )
        notify()
        event("start")
        while True:
            supervisor.check()
            time.sleep(2)
    except LaunchError as err:
        print(f"k3s (edgewasm lab launcher): {err}", file=sys.stderr, flush=True)
        supervisor.stop()
        return 1
