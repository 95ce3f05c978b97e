"""The lab end to end: real kubelets, containerd, kube-proxy and CNI on podman nodes, site.yml's backends
and balancer as real pods, and what happens to them when nodes and pods go away.

Runs in file order: the stories at the end change the lab (a pod deleted, a node drained, a wrong
token) and put it back.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import kubernetes
import pytest
from conftest import REPO, Lab, wait_for

NAMESPACE = "llamaedge"
READY_REPLICAS = "llamaedge/ready-replicas"
BALANCER = "llama-balancer"
UPGRADE_K3S = "v1.32.3+k3s1"  # scripts/lab.sh puts it on the lab's mirror
EVENTS = "/var/lib/rancher/k3s/standin/events.log"
KUBECTL = REPO / ".cache" / "controlplane" / "current" / "kubectl"
# What inventories/lab/hosts.yml deploys: backend -> (model name, nodes holding its model, replicas).
BACKENDS = {
    "llama-low-cost": ("llama-3-1b", {"server1", "agent1", "agent2"}, 3),
    "llama-high-cost": ("llama-3-3b", {"agent1", "agent2"}, 2),
    "qwen-mid": ("qwen-2.5-1.5b", {"server1", "agent1", "agent2"}, 2),
}


def ready(node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def backend_pods(core, backend: str) -> list:
    selector = f"app.kubernetes.io/component=backend,app.kubernetes.io/instance={backend}"
    return core.list_namespaced_pod(NAMESPACE, label_selector=selector).items


def running_and_ready(pod) -> bool:
    statuses = pod.status.container_statuses or []
    return pod.status.phase == "Running" and bool(statuses) and all(s.ready for s in statuses)


def rolled_out(apps, name: str) -> bool:
    """Every pod updated and available; with leader election (the balancer's annotation) one available."""
    deployment = apps.read_namespaced_deployment(name, NAMESPACE)
    status = deployment.status
    available = int((deployment.metadata.annotations or {}).get(READY_REPLICAS, deployment.spec.replicas))
    return (
        status.observed_generation == deployment.metadata.generation
        and (status.updated_replicas or 0) == deployment.spec.replicas
        and (status.available_replicas or 0) >= available
        and (status.replicas or 0) == deployment.spec.replicas
    )


def balancer_url(core) -> str:
    server = core.read_node("server1")
    address = next(a.address for a in server.status.addresses if a.type == "InternalIP")
    return f"http://{address}:30080"


def ask(url: str, model: str) -> dict:
    # A few tokens: llama.cpp generates them in the pod; the stories below send thousands of these.
    message = {"role": "user", "content": "which colour?"}
    body = json.dumps({"model": model, "messages": [message], "max_tokens": 8}).encode()
    request = urllib.request.Request(  # noqa: S310 - the lab's http:// URL
        f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        return json.loads(answer.read())


def kubectl(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBECTL), f"--kubeconfig={lab.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_nodes_are_real_kubelets_and_ready(core):
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert sorted(nodes) == ["agent1", "agent2", "server1"]
    for name, node in nodes.items():
        assert ready(node), f"{name} is not Ready: {node.status.conditions}"
        info = node.status.node_info
        assert info.kubelet_version.startswith("v1."), info.kubelet_version
        assert info.container_runtime_version.startswith("containerd://2."), info.container_runtime_version
        assert node.spec.pod_cidr, f"{name} has no pod CIDR"
    assert "node-role.kubernetes.io/control-plane" in nodes["server1"].metadata.labels
    assert len({n.spec.pod_cidr for n in nodes.values()}) == 3


def test_backends_run_where_their_models_are(core, api):
    discovery = kubernetes.client.DiscoveryV1Api(api)
    for backend, (_model, nodes, replicas) in BACKENDS.items():
        pods = backend_pods(core, backend)
        assert len(pods) == replicas, [p.metadata.name for p in pods]
        for pod in pods:
            assert running_and_ready(pod), f"{pod.metadata.name}: {pod.status.phase}"
            assert pod.spec.node_name in nodes, f"{pod.metadata.name} runs on {pod.spec.node_name}"
            assert pod.spec.runtime_class_name == "wasmedge-nn"
        # What the balancer discovers: the Service's EndpointSlices list every pod, ready.
        slices = discovery.list_namespaced_endpoint_slice(
            NAMESPACE, label_selector=f"kubernetes.io/service-name={backend}"
        ).items
        addresses = {a for s in slices for e in s.endpoints or [] if e.conditions.ready for a in e.addresses}
        assert addresses == {p.status.pod_ip for p in pods}


def test_a_wasm_pod_without_the_plugin_fails_with_upstreams_message(core):
    """The backends above run because the plugin and its libraries are mounted where WASMEDGE_PLUGIN_PATH
    says: a pod of the same serving image without those mounts cannot load the plugin inside its container,
    and the shim fails the module's wasi_ephemeral_nn imports as upstream's does."""
    image = backend_pods(core, "llama-low-cost")[0].spec.containers[0].image
    name = f"no-plugin-{uuid.uuid4().hex[:6]}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "restartPolicy": "Never",
            "runtimeClassName": "wasmedge-nn",
            "containers": [
                {
                    "name": "llama-api-server",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["llama-api-server.wasm"],
                    "args": ["--model-name", "llama-3-1b", "--port", "8080"],
                    "env": [
                        {
                            "name": "WASMEDGE_WASINN_PRELOAD",
                            "value": "default:GGML:AUTO:/models/missing.gguf",
                        },
                        {"name": "WASMEDGE_PLUGIN_PATH", "value": "/opt/wasmedge/current/plugin"},
                    ],
                }
            ],
        },
    }
    core.create_namespaced_pod(NAMESPACE, pod)
    try:
        failed = wait_for(
            f"pod {name} to fail",
            lambda: (
                (p := core.read_namespaced_pod(name, NAMESPACE)).status.phase in ("Failed", "Succeeded") and p
            ),
        )
        assert failed.status.phase == "Failed"
        assert failed.status.container_statuses[0].state.terminated.exit_code == 137
        log = core.read_namespaced_pod_log(name, NAMESPACE)
        assert "[error] instantiation failed: unknown import, Code: 0x302" in log, log
        assert 'When linking module: "wasi_ephemeral_nn"' in log, log
    finally:
        core.delete_namespaced_pod(name, NAMESPACE, grace_period_seconds=0)


def test_the_serving_image_is_in_containerd_on_every_serving_node(lab):
    """#32: make lab built the serving image from the site's own wasm (llama_backends_server_wasm, the stand-in
    llama-api-server.wasm) and imported it, by digest, on each node that holds a backend's model; a rerun
    imports nothing."""
    serving = set().union(*(nodes for _model, nodes, _replicas in BACKENDS.values()))
    digests = set()
    for node in sorted(serving):
        listing = lab.node(node, "k3s", "ctr", "images", "ls").stdout
        names = {f[0]: f[2] for f in (line.split() for line in listing.splitlines()[1:]) if len(f) > 2}
        digest = names.get("localhost/llamaedge/llama-api-server:custom")
        assert digest and names.get(f"localhost/llamaedge/llama-api-server@{digest}") == digest, listing
        digests.add(digest)
    assert len(digests) == 1  # the same bytes everywhere
    rerun = lab.playbook("playbooks/site.yml", "--tags", "deploy")
    assert rerun.returncode == 0, rerun.stdout[-5000:]
    imports = rerun.stdout.split("Import the image into k3s's containerd")[1].split("TASK [")[0]
    assert "changed:" not in imports and "ok: [server1]" in imports, imports


def test_make_lab_verified_the_deployment(lab):
    report = (lab.directory / "reports" / "verify.md").read_text()
    assert "Result: **PASS**" in report, report
    for backend in BACKENDS:
        assert f"| {backend} |" in report


def test_the_node_port_names_no_backend_and_serves_no_metrics(core):
    """#31 item 12: backend names and pod addresses stay inside the cluster; verify passed without the header."""
    url = balancer_url(core)
    body = json.dumps({"model": "llama-3-1b", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(  # noqa: S310 - the lab's http:// URL
        f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        assert answer.status == 200 and answer.headers.get("X-Edgewasm-Backend") is None
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}/metrics", timeout=30)  # noqa: S310
    assert refused.value.code == 404
    balancer = core.list_namespaced_pod(
        NAMESPACE, label_selector="app.kubernetes.io/component=balancer"
    ).items
    assert balancer and all(
        {p.name: p.container_port for p in pod.spec.containers[0].ports}.get("metrics") == 8082
        for pod in balancer
    )


def balancer_pods(core) -> list:
    return core.list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/component=balancer").items


def lease_holder(api) -> str:
    lease = kubernetes.client.CoordinationV1Api(api).read_namespaced_lease(BALANCER, NAMESPACE)
    return lease.spec.holder_identity or ""


def stream(url: str, model: str, max_tokens: int = 16) -> list[dict]:
    """A streamed chat completion (SSE, one event per token llama.cpp generates): its data chunks."""
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Name a colour."}],
            "stream": True,
            "max_tokens": max_tokens,
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - the lab's http:// URL
        f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310
        events = [line[6:] for line in answer.read().decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-3:]
    return [json.loads(event) for event in events[:-1]]


def content(chunks: list[dict]) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)


class SteadyClients:
    """Clients sending requests through the node port one after another, a new connection each, until
    stopped: every failure is kept with its time."""

    def __init__(self, url: str, clients: int = 2) -> None:
        self.url = url
        self.answered = 0
        self.failures: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _client in range(clients)]

    def __enter__(self) -> SteadyClients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ask(self.url, "llama-3-1b")
                self.answered += 1
            except (urllib.error.URLError, OSError, ValueError) as error:
                self.failures.append((time.monotonic(), f"{type(error).__name__}: {error}"))
                time.sleep(0.05)

    def window(self) -> float:
        """Seconds from the first failure to the last (0 without any)."""
        if not self.failures:
            return 0.0
        return self.failures[-1][0] - self.failures[0][0]


def test_the_balancer_replicas_elect_one_leader(core, api):
    """#34: balancer_replicas 2 - one ready pod, the holder of the Lease; the other stands by."""
    pods = balancer_pods(core)
    assert len(pods) == 2, [p.metadata.name for p in pods]
    ready_pods = [p.metadata.name for p in pods if running_and_ready(p)]
    assert len(ready_pods) == 1, ready_pods
    assert lease_holder(api) == ready_pods[0]
    assert all(p.status.phase == "Running" for p in pods)  # the standby runs, not ready


def test_each_backend_generates_tokens_through_the_balancer(core):
    """#33: through the node port, each of the three models answers with text llama.cpp generated inside
    its wasm pods (JSON and SSE); llama-api-server answers with its own --model-name."""
    url = balancer_url(core)
    for model, _nodes, _replicas in BACKENDS.values():
        answer = ask(url, model)
        assert answer["model"] == model, answer
        assert answer["choices"][0]["message"]["content"], answer
        chunks = stream(url, model)
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and content(chunks), chunks
        print(f"{model}: {answer['choices'][0]['message']['content']!r}")


def test_streams_at_once_on_one_slot_backends_all_complete(core):
    """#34: 12 streams at once for a model of two one-slot pods (llama-api-server serves one connection at a
    time), through the node port, with two balancer replicas: the balancer queues them on the slots and every
    one completes with generated tokens."""
    url = balancer_url(core)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda _i: stream(url, "llama-3-3b", max_tokens=24), range(12)))
    print(f"12 streams on 2 one-slot pods: {sum(len(r) for r in results)} events, all completed")
    assert all(r[-1]["choices"][0]["finish_reason"] == "stop" and content(r) for r in results)


def test_a_killed_wasm_process_is_seen_by_kubelet(core, apps, lab):
    """#33: a backend pod's wasm process killed on its node: the shim reports the exit, kubelet restarts the
    container, and the pod is ready again."""
    pod = next(p for p in backend_pods(core, "qwen-mid") if running_and_ready(p))
    status = pod.status.container_statuses[0]
    container = status.container_id.removeprefix("containerd://")
    tasks = lab.node(pod.spec.node_name, "k3s", "ctr", "-n", "k8s.io", "task", "ls").stdout
    pid = next(line.split()[1] for line in tasks.splitlines() if line.startswith(container))
    lab.node(pod.spec.node_name, "kill", "-KILL", pid)
    # The restart count, readiness and the killed container's last state can come in separate status updates
    # (seen once: restarted and ready, lastState still empty): wait for all three.
    restarted = wait_for(
        f"{pod.metadata.name} to restart, be ready and report how its last container ended",
        lambda: (
            (p := core.read_namespaced_pod(pod.metadata.name, NAMESPACE))
            .status.container_statuses[0]
            .restart_count
            > status.restart_count
            and running_and_ready(p)
            and p.status.container_statuses[0].last_state.terminated is not None
            and p
        ),
    )
    last = restarted.status.container_statuses[0].last_state.terminated
    print(f"killed pid {pid} of {pod.metadata.name}: exit code {last.exit_code}, restarted, ready")
    assert last.exit_code == 137, last
    wait_for("qwen-mid to be available again", lambda: rolled_out(apps, "qwen-mid"))


def test_a_rollout_restart_of_the_balancer_loses_no_request(core, apps, api, lab):
    """#34: every pod replaced at once; the old leader hands over and bridges the new leader's start."""
    url = balancer_url(core)
    before = {p.metadata.name for p in balancer_pods(core)}
    with SteadyClients(url) as clients:
        time.sleep(2)
        restarted = kubectl(lab, "-n", NAMESPACE, "rollout", "restart", f"deployment/{BALANCER}")
        assert restarted.returncode == 0, restarted.stderr
        wait_for(
            "the balancer to roll out with a new leader",
            lambda: (
                rolled_out(apps, BALANCER)
                and not before & {p.metadata.name for p in balancer_pods(core)}
                and lease_holder(api) not in before
            ),
            interval=0.5,
        )
        time.sleep(3)
    print(f"rollout restart of the balancer: {clients.answered} answered, {len(clients.failures)} failed")
    assert clients.failures == [], clients.failures[:5]
    assert clients.answered > 20


def test_a_deleted_leader_pod_is_replaced_and_the_gap_is_stated(core, apps, api):
    """#34: the leader's pod deleted (SIGTERM): a standby takes over; the failure window is measured."""
    url = balancer_url(core)
    leader = lease_holder(api)
    assert leader in {p.metadata.name for p in balancer_pods(core)}
    with SteadyClients(url) as clients:
        time.sleep(2)
        answered_by_the_old_leader = clients.answered
        core.delete_namespaced_pod(leader, NAMESPACE)
        wait_for(
            "a new leader",
            lambda: (
                lease_holder(api) not in ("", leader)
                and any(running_and_ready(p) for p in balancer_pods(core) if p.metadata.name != leader)
            ),
            interval=0.2,
        )
        wait_for("the balancer to roll out again", lambda: rolled_out(apps, BALANCER))
        answered_at_rollout = clients.answered
        time.sleep(3)
    print(
        f"leader pod deleted: {clients.answered} answered, {len(clients.failures)} failed, "
        f"failure window {clients.window():.2f} s"
    )
    assert clients.window() <= 6 + 2, clients.failures[:5]  # lease duration + 2 s at the very worst
    # Requests flowed before the deletion, and the new leader answers once the rollout is done.
    assert answered_by_the_old_leader > 0
    assert clients.answered > answered_at_rollout, clients.failures[-5:]


def test_a_deleted_backend_pod_is_replaced_and_verify_passes(core, apps, lab):
    """The wasm process ignores SIGTERM (PID 1 without a handler): the pod goes when its grace period ends,
    the lab's llama_backends_termination_grace_period (5 s), not Kubernetes' 30 s."""
    pod = backend_pods(core, "llama-low-cost")[0]
    victim = pod.metadata.name
    assert pod.spec.termination_grace_period_seconds == 5, pod.spec
    deleted = time.monotonic()
    core.delete_namespaced_pod(victim, NAMESPACE)
    wait_for(
        f"{victim} to be gone",
        lambda: victim not in {p.metadata.name for p in backend_pods(core, "llama-low-cost")},
        interval=0.5,
    )
    print(f"deleted backend pod {victim} gone after {time.monotonic() - deleted:.1f} s")
    wait_for("llama-low-cost to roll out again", lambda: rolled_out(apps, "llama-low-cost"))
    result = lab.playbook("playbooks/site.yml", "--tags", "verify")
    assert result.returncode == 0, result.stdout[-5000:]
    assert "Verification passed" in result.stdout


def test_a_drained_node_gets_no_more_requests(core, apps, lab):
    url = balancer_url(core)
    before = {
        p.metadata.name for b in BACKENDS for p in backend_pods(core, b) if p.spec.node_name == "agent2"
    }
    assert before, "no backend pod on agent2 to drain away"
    drained = kubectl(
        lab, "drain", "agent2", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=180s"
    )
    try:
        assert drained.returncode == 0, drained.stderr
        for name in [*BACKENDS, "llama-balancer"]:
            wait_for(f"{name} to roll out without agent2", lambda n=name: rolled_out(apps, n))
        pods = {p.metadata.name: p.spec.node_name for b in BACKENDS for p in backend_pods(core, b)}
        assert not set(pods) & before and "agent2" not in pods.values(), pods
        # Every model still answers, from the pods left: the balancer dropped the drained endpoints.
        for _round in range(6):
            for model, _nodes, _replicas in BACKENDS.values():
                answer = ask(url, model)
                assert answer["model"] == model and answer["choices"][0]["message"]["content"], answer
    finally:
        kubectl(lab, "uncordon", "agent2")


def test_an_agent_with_a_wrong_token_fails_to_join(lab, core):
    env_file = "/etc/systemd/system/k3s-agent.service.env"
    original = lab.node("agent2", "cat", env_file).stdout
    wrong = "K3S_TOKEN=edgewasm-lab-wrong-token\n"
    lab.node("agent2", "sh", "-c", f"printf %s {shlex.quote(wrong)} > {env_file}")
    try:
        restarted = lab.node("agent2", "systemctl", "restart", "k3s-agent", check=False)
        assert restarted.returncode != 0, "k3s-agent started with a wrong token"
        journal = lab.node("agent2", "journalctl", "-u", "k3s-agent", "--no-pager", "-n", "30").stdout
        assert "refused the join token (401 Unauthorized)" in journal, journal
    finally:
        lab.node("agent2", "sh", "-c", f"printf %s {shlex.quote(original)} > {env_file}")
        lab.node("agent2", "systemctl", "reset-failed", "k3s-agent", check=False)
        lab.node("agent2", "systemctl", "restart", "k3s-agent", check=False)
    wait_for("agent2 to be Ready again", lambda: ready(core.read_node("agent2")))


def pods_by_uid(core) -> dict[str, tuple]:
    """Every pod of the deployment: node, container ids and restart counts."""
    return {
        p.metadata.uid: (
            p.spec.node_name,
            tuple(sorted((s.container_id or "", s.restart_count) for s in p.status.container_statuses or [])),
        )
        for p in core.list_namespaced_pod(NAMESPACE).items
    }


def test_a_k3s_upgrade_keeps_runc_pods_and_moves_wasm_pods(core, apps, lab):
    """upgrade.yml replaces k3s and restarts it node by node (KillMode=process). runc's containers keep
    running and the restarted kubelet and containerd adopt them. runwasi's shim answers no Pids call, so a
    restarted containerd drops its tasks while the wasm processes keep running (the replacements then
    crash-loop on the port they hold): the k3s role evicts each node's wasm pods, cordoned, before its restart.
    Afterwards every backend pod is new, ready and never restarted, no node is left cordoned, and each model
    answers."""
    before = pods_by_uid(core)
    wasm_before = {
        p.metadata.uid for p in core.list_namespaced_pod(NAMESPACE).items if p.spec.runtime_class_name
    }
    assert wasm_before, "the lab's backends run on a runtime class"
    result = lab.playbook("playbooks/upgrade.yml", "-e", f"k3s_version={UPGRADE_K3S}")
    assert result.returncode == 0, result.stdout[-5000:]
    for node in ("server1", "agent1", "agent2"):
        assert UPGRADE_K3S in lab.node(node, "k3s", "--version").stdout
        events = [json.loads(line) for line in lab.node(node, "cat", EVENTS).stdout.splitlines()]
        assert events[-1]["event"] == "start" and events[-1]["version"] == UPGRADE_K3S, events[-3:]
    # The eviction task runs once per node (upgrade.yml goes node by node): pods were evicted, not skipped.
    sections = result.stdout.split("Evict the node's pods on runwasi runtime classes]")[1:]
    evictions = "".join(section.split("TASK [", 1)[0] for section in sections)
    assert re.search(r"^changed: \[\w+ -> [^\]]+\] => \(item=llamaedge/", evictions, re.M), evictions
    wait_for("every node Ready after the upgrade", lambda: all(ready(n) for n in core.list_node().items))
    assert not [n.metadata.name for n in core.list_node().items if n.spec.unschedulable]
    for backend in BACKENDS:
        wait_for(f"{backend} to roll out again", lambda backend=backend: rolled_out(apps, backend))
    after = pods_by_uid(core)
    runc_before = {uid: state for uid, state in before.items() if uid not in wasm_before}
    assert {uid: after.get(uid) for uid in runc_before} == runc_before
    for backend in BACKENDS:
        for pod in backend_pods(core, backend):
            assert pod.metadata.uid not in wasm_before, f"{pod.metadata.name} was not evicted"
            assert running_and_ready(pod), pod.status
            assert [s.restart_count for s in pod.status.container_statuses] == [0], pod.status
    url = balancer_url(core)
    for model, _nodes, _replicas in BACKENDS.values():
        assert ask(url, model)["choices"][0]["message"]["content"]


def test_reset_leaves_nothing_behind(lab):
    """playbooks/reset.yml on real nodes: no k3s process or container, no pod mounts, no kube-proxy or
    CNI iptables rules, no veth devices or CNI bridge. The lab's cluster is gone afterwards."""
    result = lab.playbook("playbooks/reset.yml")
    assert result.returncode == 0, result.stdout[-5000:]
    for node in ("server1", "agent1", "agent2"):
        processes = lab.node(node, "pgrep", "-af", "containerd|controlplane|kubelet", check=False).stdout
        assert not processes.strip(), f"{node}: {processes}"
        mounts = [
            line.split()[1]
            for line in lab.node(node, "cat", "/proc/self/mounts").stdout.splitlines()
            if line.split()[1].startswith(
                ("/var/lib/kubelet", "/run/k3s", "/run/netns/cni-", "/var/lib/rancher/k3s/")
            )
        ]
        assert mounts == [], f"{node}: {mounts}"
        rules = lab.node(node, "iptables-save").stdout
        leftovers = [line for line in rules.splitlines() if "KUBE-" in line or "CNI-" in line]
        assert leftovers == [], f"{node}: {leftovers[:10]}"
        links = lab.node(node, "ip", "-o", "link", "show").stdout
        assert "veth" not in links and "cni0" not in links, f"{node}: {links}"


@pytest.fixture(autouse=True)
def _namespace_exists(core):
    """Every test here needs what site.yml deployed: fail at once, clearly, when it is not there."""
    names = {n.metadata.name for n in core.list_namespace().items}
    if NAMESPACE not in names:
        pytest.fail(f"namespace {NAMESPACE} is missing: site.yml did not deploy the backends")
