"""Run a command against a fresh control plane (etcd, kube-apiserver, controller-manager, scheduler):

    python tests/controlplane [--integration-config FILE] -- ansible-test integration llama_modules ...

The command gets KUBECONFIG (the admin kubeconfig) and the control plane's binary directory first on PATH
(kubectl); --integration-config writes `kubeconfig: <path>` to FILE first (ansible-test passes no
environment to its targets, only tests/integration/integration_config.yml). The command's exit status is
this program's; a control plane that does not start fails with its logs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlplane import BINARY, ControlPlane, ControlPlaneError


def main(argv: list[str]) -> int:
    config = None
    if argv[:1] == ["--integration-config"] and len(argv) > 1:
        config, argv = Path(argv[1]), argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        sys.stderr.write(__doc__)
        return 2
    with tempfile.TemporaryDirectory(prefix="edgewasm-controlplane.") as work:
        plane = ControlPlane(Path(work))
        try:
            plane.start()
            plane.start_controllers()
        except ControlPlaneError as err:
            sys.stderr.write(f"the control plane did not start: {err}\n")
            plane.stop()
            return 1
        if config is not None:
            config.write_text(f"kubeconfig: {plane.kubeconfig}\n")
        env = dict(os.environ, KUBECONFIG=str(plane.kubeconfig), PATH=f"{BINARY.parent}:{os.environ['PATH']}")
        try:
            rc = subprocess.run(argv, env=env, check=False).returncode
            if rc:
                sys.stderr.write(f"{plane.logs()}\n")
            return rc
        finally:
            plane.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
