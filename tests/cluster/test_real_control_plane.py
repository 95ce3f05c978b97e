"""The control plane harness itself: what it serves, and that a component that cannot start fails with its log."""

from __future__ import annotations

import subprocess

import kubernetes
import pytest
from controlplane import BINARY, ControlPlane, ControlPlaneError


def test_the_binary_is_built_from_the_pinned_modules():
    versions = subprocess.run([str(BINARY), "versions"], capture_output=True, text=True, check=True).stdout
    assert "k8s.io/kubernetes v1.34.4" in versions
    assert "go.etcd.io/etcd/server/v3 v3.6.4" in versions


def test_the_api_server_reports_its_version_and_the_admin_is_cluster_admin(control_plane, api):
    version = kubernetes.client.VersionApi(api).get_code()
    assert (version.major, version.minor, version.git_version) == ("1", "34", "v1.34.4")
    review = kubernetes.client.AuthorizationV1Api(api).create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"verb": "*", "resource": "*"}}}
    )
    assert review.status.allowed is True


def test_a_component_that_cannot_start_fails_with_its_log(tmp_path):
    plane = ControlPlane(tmp_path)
    plane.certs.write()
    plane._run("etcd", ["--no-such-flag"])
    try:
        with pytest.raises(ControlPlaneError, match="etcd exited at start") as failed:
            plane._wait("etcd", lambda: False)
        assert "no-such-flag" in str(failed.value)  # the component's own log is in the message
    finally:
        plane.stop()
