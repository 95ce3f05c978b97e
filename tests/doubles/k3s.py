"""STAND-IN k3s executable (edgewasm stand-in, not k3s) for the k3s role's molecule scenario.

k3s releases cannot be downloaded on our test machines. This stdlib-only script takes the place of
the `k3s` binary on the nodes and behaves like it where the roles can observe it:

- `k3s --version`; `k3s server` / `k3s agent` as systemd Type=notify services (READY=1 once up);
- the server writes its token (`K10<hash>::server:<token>`, from K3S_TOKEN or generated) to
  /var/lib/rancher/k3s/server/token and node-token, and /etc/rancher/k3s/k3s.yaml (0600);
- it serves plain HTTP on :6443 (`/ping`, a join endpoint); agents and joining servers register
  there with their token and exit 1 on a token mismatch, as a k3s agent fails to join;
- it completes k3s's containerd template like k3s does (`{{ template "base" . }}` and
  `{{ .SystemdCgroup }}`, with the base stanzas of tests/doubles/k3s_containerd) into
  agent/etc/containerd/config.toml and exits 1 when the result is not valid TOML (a table
  defined twice included), as containerd would fail;
- `k3s kubectl get node NAME -o jsonpath={.metadata.labels}` (or `-o json`) and
  `k3s kubectl label node NAME --overwrite k=v k-` on the registered nodes; `k3s kubectl get pods ... -o json`
  lists no pod (no kubelet runs behind it);
- every start and stop is appended to /var/lib/rancher/k3s/standin/events.log (JSON lines) so
  tests can see restarts and their order.

release_mirror.py writes it as `<mirror>/<k3s version>/k3s` with the version and base stanzas
filled in.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

MARKER = "edgewasm stand-in, not k3s"
VERSION = "__K3S_VERSION__"
BASES = {"2": "__BASE_V2__", "3": "__BASE_V3__"}
DATA = Path("/var/lib/rancher/k3s")
CONFIG = Path("/etc/rancher/k3s/config.yaml")
STATE = DATA / "standin"


def render_containerd_template(template: str, base: str, systemd_cgroup: bool) -> str:
    """Complete a k3s containerd template the way k3s does for the two constructs we use."""
    text = re.sub(r"\{\{-?\s*template\s+\"base\"\s+\.\s*-?\}\}", lambda _: base, template)
    text = re.sub(r"\{\{\s*\.SystemdCgroup\s*\}\}", "true" if systemd_cgroup else "false", text)
    if "{{" in text:
        raise ValueError("template uses Go template constructs the stand-in does not render")
    return text


def config_value(key: str) -> str:
    if not CONFIG.exists():
        return ""
    match = re.search(rf"^{re.escape(key)}:\s*['\"]?([^'\"\n]*)", CONFIG.read_text(), re.MULTILINE)
    return match.group(1).strip() if match else ""


def event(kind: str, mode: str) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    line = {"event": kind, "mode": mode, "version": VERSION, "time": time.time(), "pid": os.getpid()}
    with (STATE / "events.log").open("a") as log:
        log.write(json.dumps(line) + "\n")


def notify_ready() -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(b"READY=1")


def config_version() -> str:
    numbers = [int(n) for n in re.findall(r"\d+", VERSION)[:3]]
    major, minor, patch = [*numbers, 0, 0, 0][:3]
    newer = (major, minor) > (1, 32) or (minor == 32 and patch >= 2) or (minor == 31 and patch >= 6)
    return "3" if major > 1 or newer else "2"


def systemd_cgroup() -> bool:
    """k3s's cgroup driver choice: systemd only on a unified (v2) hierarchy with systemd running,
    else cgroupfs (the lab's nodes on a hybrid v1/v2 host). Its base and `.SystemdCgroup` follow it."""
    return Path("/sys/fs/cgroup/cgroup.controllers").exists() and Path("/run/systemd/system").is_dir()


def can_lower_oom_score() -> bool:
    """Whether this node may give processes a negative oom_score_adj (CAP_SYS_RESOURCE): the kubelet
    asks for -998 for every pod sandbox. A container without it needs restrict_oom_score_adj, which
    k3s sets for its rootless mode."""
    path = Path("/proc/self/oom_score_adj")
    try:
        current = path.read_text().strip()
        path.write_text("-998")
        path.write_text(current)
    except OSError:
        return False
    return True


def restrict_oom_score_adj(base: str) -> str:
    """The base with restrict_oom_score_adj = true in the CRI runtime table of either config version."""
    for table in ('[plugins."io.containerd.grpc.v1.cri"]\n', "[plugins.'io.containerd.cri.v1.runtime']\n"):
        base = base.replace(table, table + "  restrict_oom_score_adj = true\n", 1)
    return base


def render_containerd() -> None:
    directory = DATA / "agent" / "etc" / "containerd"
    version = config_version()
    names = ["config-v3.toml.tmpl", "config.toml.tmpl"] if version == "3" else ["config.toml.tmpl"]
    base = BASES[version]
    systemd = systemd_cgroup()
    base = base.replace("SystemdCgroup = true", f"SystemdCgroup = {str(systemd).lower()}")
    if not can_lower_oom_score():
        base = restrict_oom_score_adj(base)
    pause = config_value("pause-image")  # k3s's --pause-image: the sandbox image its base names
    if pause:
        base = base.replace('"rancher/mirrored-pause:3.6"', json.dumps(pause))
    text = base
    for name in names:
        if (directory / name).exists():
            text = render_containerd_template((directory / name).read_text(), base, systemd_cgroup=systemd)
            break
    tomllib.loads(text)  # containerd refuses a config that does not parse
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.toml").write_text(text)


def nodes_file() -> Path:
    return STATE / "nodes.json"


def load_nodes() -> dict:
    try:
        return json.loads(nodes_file().read_text())
    except FileNotFoundError:
        return {}


def save_nodes(nodes: dict) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    tmp = nodes_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(nodes, indent=1, sort_keys=True))
    os.replace(tmp, nodes_file())


@contextlib.contextmanager
def updating_nodes() -> Iterator[dict]:
    """Read, change and write nodes.json under an exclusive lock: servers join at the same time (one
    handler thread each) and `k3s kubectl label` runs in processes of its own. Without it a join is lost."""
    STATE.mkdir(parents=True, exist_ok=True)
    with (STATE / "nodes.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        nodes = load_nodes()
        yield nodes
        save_nodes(nodes)


def register(name: str, role: str) -> None:
    with updating_nodes() as nodes:
        node = nodes.setdefault(name, {"labels": {"kubernetes.io/hostname": name}})
        node["role"] = role
        node["version"] = VERSION


def node_name() -> str:
    return config_value("node-name") or socket.gethostname()


def raw_token(token: str) -> str:
    return token.rsplit(":", 1)[-1]


def serve(token: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            return

        def _answer(self, code: int, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer(200, "pong" if self.path == "/ping" else json.dumps(load_nodes()))

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if raw_token(request.get("token", "")) != token:
                self._answer(401, "token mismatch")
                return
            register(request["node"], request["role"])
            self._answer(200, "joined")

    server = ThreadingHTTPServer(("0.0.0.0", 6443), Handler)  # noqa: S104 - where k3s listens
    Thread(target=server.serve_forever, daemon=True).start()
    return server


def join(url: str, token: str, role: str) -> None:
    target = re.sub(r"^https://", "http://", url).rstrip("/") + "/standin/join"
    if not target.startswith("http://"):
        sys.exit(f"k3s ({MARKER}): server URL {url} is not https://")
    body = json.dumps({"token": token, "node": node_name(), "role": role}).encode()
    deadline = time.time() + 60
    while True:
        try:
            request = urllib.request.Request(target, data=body)  # noqa: S310 - http:// checked above
            urllib.request.urlopen(request, timeout=5).read()  # noqa: S310
            return
        except urllib.error.HTTPError as err:
            sys.exit(f"k3s ({MARKER}): cannot join {url}: {err.code} {err.read().decode()}")
        except OSError as err:
            if time.time() > deadline:
                sys.exit(f"k3s ({MARKER}): cannot reach {url}: {err}")
            time.sleep(1)


def real_nodes():
    """The launcher of the real components (k3s_launcher.py, beside this file in the release) when the
    lab mounted them into this node, else None: this script then only pretends, as described above."""
    try:
        import k3s_launcher  # noqa: PLC0415 - optional: needs PyYAML and the lab's binaries
    except ImportError:
        return None
    return k3s_launcher if k3s_launcher.available() else None


def run(mode: str) -> int:
    render_containerd()
    token = raw_token(os.environ.get("K3S_TOKEN", ""))
    server_url = config_value("server") or os.environ.get("K3S_URL", "")
    if mode == "server":
        token_file = DATA / "server" / "token"
        if not token:
            token = (
                raw_token(token_file.read_text().strip()) if token_file.exists() else secrets.token_hex(16)
            )
    launcher = real_nodes()
    if launcher is not None:
        return launcher.run(mode, token, notify_ready, lambda kind: event(kind, mode))
    if mode == "server":
        if server_url:
            join(server_url, token, "server")
        token_file.parent.mkdir(parents=True, exist_ok=True)
        for name in ("token", "node-token"):
            path = DATA / "server" / name
            path.write_text(f"K10{MARKER.replace(' ', '')}::server:{token}\n")
            path.chmod(0o600)
        kubeconfig = Path("/etc/rancher/k3s/k3s.yaml")
        kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        kubeconfig.write_text(KUBECONFIG)
        kubeconfig.chmod(0o600)
        serve(token)
        register(node_name(), "server")
    else:
        if not server_url or not token:
            sys.exit(f"k3s ({MARKER}): an agent needs a server URL and a token")
        join(server_url, token, "agent")
    event("start", mode)

    def stop(*_args: object) -> None:
        event("stop", mode)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    notify_ready()
    while True:
        time.sleep(3600)


def kubectl(args: list[str]) -> int:
    launcher = real_nodes()
    if launcher is not None:
        return launcher.kubectl_main(args)
    nodes = load_nodes()
    if args[:2] == ["get", "node"] and len(args) >= 3:
        if args[2] not in nodes:
            print(f'Error from server (NotFound): nodes "{args[2]}" not found', file=sys.stderr)
            return 1
        if args[3:] == ["-o", "json"]:
            node = {
                "kind": "Node",
                "metadata": {"name": args[2], "labels": nodes[args[2]]["labels"]},
                "spec": {},
            }
            print(json.dumps(node))
        else:
            print(json.dumps(nodes[args[2]]["labels"]))
        return 0
    if args[:2] == ["get", "pods"] and args[-2:] == ["-o", "json"]:
        # No kubelet behind the stand-in: no node runs a pod.
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": []}))
        return 0
    if args[:2] == ["label", "node"] and len(args) >= 3 and args[2] in nodes:
        with updating_nodes() as current:
            labels = current[args[2]]["labels"]
            before = dict(labels)
            for item in args[3:]:
                if item.startswith("--"):
                    continue
                if item.endswith("-"):
                    labels.pop(item[:-1], None)
                else:
                    key, _sep, value = item.partition("=")
                    labels[key] = value
        print(f"node/{args[2]} {'labeled' if labels != before else 'not labeled'}")
        return 0
    print(f"k3s kubectl ({MARKER}): unsupported: {' '.join(args)}", file=sys.stderr)
    return 1


KUBECONFIG = f"""apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: {MARKER.encode().hex()}
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
preferences: {{}}
users:
- name: default
  user:
    client-certificate-data: {MARKER.encode().hex()}
    client-key-data: {MARKER.encode().hex()}
"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("--version", "-v", "version"):
        print(f"k3s version {VERSION} ({MARKER})\ngo version go1.23.6")
        return 0
    if argv[0] in ("server", "agent"):
        return run(argv[0])
    if argv[0] == "kubectl":
        return kubectl(argv[1:])
    if argv[0] == "ctr" and real_nodes() is not None:
        return real_nodes().ctr_main(argv[1:])
    print(f"k3s ({MARKER}): unsupported command {argv[0]}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
