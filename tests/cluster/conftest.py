"""The real control plane (tests/controlplane) for the cluster tests: one per session, a namespace per test.

A control plane that does not start fails the tests with its components' logs; it never skips.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import kubernetes
import pytest
from controlplane import ControlPlane, ControlPlaneError


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    try:
        plane.start()
    except ControlPlaneError as err:
        pytest.fail(str(err), pytrace=False)
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def controllers(control_plane: ControlPlane) -> ControlPlane:
    """The control plane with kube-controller-manager and kube-scheduler (no nodes: pods stay Pending)."""
    try:
        control_plane.start_controllers()
    except ControlPlaneError as err:
        pytest.fail(str(err), pytrace=False)
    return control_plane


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig))


@pytest.fixture
def namespace(request) -> str:
    """A namespace name of this test's own (not created: the tests create it, as users would)."""
    return "t-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]


@pytest.fixture
def core(api) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api)


@pytest.fixture
def apps(api) -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(api)
