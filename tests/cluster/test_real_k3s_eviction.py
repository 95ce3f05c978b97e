"""The k3s role's eviction before a restart (roles/k3s/tasks/evict.yml, uncordon.yml) against the real
kube-apiserver: the real Eviction API, the real PodDisruptionBudget check, the real cordon, through real kubectl.

No kubelet runs here, so a pod's status is written by the test as a kubelet would, and the pods evicted for real
have a grace period of 0 (the API server then deletes them at once instead of waiting for a kubelet).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes
import pytest
import yaml
from controlplane import BINARY

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "tests/cluster/playbooks/k3s_evict.yml"
NODE = "evict-node1"
PDB_REFUSAL = "Cannot evict pod as it would violate the pod's disruption budget."


@pytest.fixture
def k3s_on_path(control_plane, tmp_path) -> dict[str, str]:
    """`k3s kubectl` as on a k3s server: kubectl with the server's admin kubeconfig (here the control plane's)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    k3s = bin_dir / "k3s"
    k3s.write_text(
        "#!/bin/sh\n"
        '[ "$1" = kubectl ] || { echo "k3s: only kubectl in this test" >&2; exit 1; }\n'
        "shift\n"
        f'exec {BINARY} kubectl --kubeconfig={control_plane.kubeconfig} "$@"\n'
    )
    k3s.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1")


@pytest.fixture
def node(core):
    core.create_node(kubernetes.client.V1Node(metadata=kubernetes.client.V1ObjectMeta(name=NODE)))
    yield NODE
    core.delete_node(NODE)


@pytest.fixture
def wasm_class(api):
    nodes = kubernetes.client.NodeV1Api(api)
    body = kubernetes.client.V1RuntimeClass(
        metadata=kubernetes.client.V1ObjectMeta(name="wasmedge-nn"), handler="wasmedge-nn"
    )
    try:
        nodes.create_runtime_class(body)
    except kubernetes.client.ApiException as err:
        if err.status != 409:
            raise
    return "wasmedge-nn"


def running_pod(core, namespace: str, name: str, runtime_class: str | None, grace: int) -> None:
    """A pod bound to NODE, Running and not ready, as a kubelet that just started it would report it."""
    pod = kubernetes.client.V1Pod(
        metadata=kubernetes.client.V1ObjectMeta(name=name, labels={"app": name}),
        spec=kubernetes.client.V1PodSpec(
            node_name=NODE,
            runtime_class_name=runtime_class,
            termination_grace_period_seconds=grace,
            containers=[kubernetes.client.V1Container(name="server", image="localhost/none:1")],
        ),
    )
    core.create_namespaced_pod(namespace, pod)
    status = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}}
    core.patch_namespaced_pod_status(name, namespace, status)


@pytest.fixture
def pods(core, api, namespace, node, wasm_class):
    core.create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=namespace))
    )
    # What kube-controller-manager would add (not started here: its node controller would taint the kubelet-less
    # node): the namespace's default service account, which admission requires of every pod.
    core.create_namespaced_service_account(
        namespace, kubernetes.client.V1ServiceAccount(metadata=kubernetes.client.V1ObjectMeta(name="default"))
    )
    running_pod(core, namespace, "backend", wasm_class, grace=0)
    running_pod(core, namespace, "balancer", None, grace=0)  # runc: never evicted
    yield namespace
    core.delete_namespace(namespace)


def budget(api, namespace: str) -> None:
    """A PodDisruptionBudget that allows the backend no disruption."""
    kubernetes.client.PolicyV1Api(api).create_namespaced_pod_disruption_budget(
        namespace,
        kubernetes.client.V1PodDisruptionBudget(
            metadata=kubernetes.client.V1ObjectMeta(name="backend"),
            spec=kubernetes.client.V1PodDisruptionBudgetSpec(
                min_available=1, selector=kubernetes.client.V1LabelSelector(match_labels={"app": "backend"})
            ),
        ),
    )


def run(tmp_path: Path, env: dict[str, str], timeout: int = 5) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "hosts.yml"
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory.write_text(yaml.safe_dump({"server": {"hosts": {"server1": local}}}))
    extra = {"evict_node": NODE, "evict_timeout": timeout}
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            str(inventory),
            "-e",
            yaml.safe_dump(extra, default_flow_style=True).strip(),
            str(PLAYBOOK),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )


def failure(result: subprocess.CompletedProcess[str]) -> str:
    """The msg of the play's fatal task."""
    assert result.returncode != 0, result.stdout
    found = re.search(r"^fatal: \[server1\]: FAILED! => (\{.*\})$", result.stdout, re.M)
    assert found, result.stdout + result.stderr
    return json.loads(found.group(1))["msg"]


def pod_names(core, namespace: str) -> list[str]:
    return sorted(p.metadata.name for p in core.list_namespaced_pod(namespace).items)


def unschedulable(core) -> bool:
    return bool(core.read_node(NODE).spec.unschedulable)


def test_the_wasm_pods_are_evicted_and_the_node_uncordoned(core, pods, k3s_on_path, tmp_path):
    result = run(tmp_path, k3s_on_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^changed: \[server1\] => \(item=t-\w+/backend\)", result.stdout, re.M), result.stdout
    assert pod_names(core, pods) == ["balancer"]
    assert not unschedulable(core)
    assert re.search(
        r"TASK \[.*Uncordon the node once k3s is back\] \**\nchanged: \[server1\]", result.stdout
    )


def test_a_budget_that_holds_stops_before_the_restart_and_uncordons(core, api, pods, k3s_on_path, tmp_path):
    """The eviction's 429 is retried until the timeout, then the play stops naming the pod, the API server's
    refusal and the variable to change; the node this cordoned is uncordoned again, and no pod is gone."""
    budget(api, pods)
    message = failure(run(tmp_path, k3s_on_path))
    assert message.startswith(
        f'{NODE}: k3s was not restarted, because "Evict the node\'s pods on runwasi runtime classes" failed '
        f"for pod {pods}/backend: Error from server (TooManyRequests): {PDB_REFUSAL[:-1]}. A PodDisruptionBudget "
    ), message
    assert "k3s_restart_evict_timeout (5 s) runs out" in message
    assert message.endswith("The node was uncordoned again.")
    assert not unschedulable(core)
    assert pod_names(core, pods) == ["backend", "balancer"]


def test_a_node_cordoned_by_its_administrator_stays_cordoned(core, api, pods, k3s_on_path, tmp_path):
    core.patch_node(NODE, {"spec": {"unschedulable": True}})
    budget(api, pods)
    message = failure(run(tmp_path, k3s_on_path))
    assert f"for pod {pods}/backend: Error from server (TooManyRequests)" in message, message
    assert "uncordon" not in message
    assert unschedulable(core)
