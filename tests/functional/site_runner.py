"""Inventories for running the collection's playbooks against this machine."""

from __future__ import annotations

import sys


def local_inventory(servers: list[str], agents: list[str], host_vars: dict | None = None) -> dict:
    """A k3s_cluster inventory whose hosts are all this machine (local connection)."""

    def hosts(names: list[str]) -> dict:
        return {n: dict(host_vars or {}) for n in names}

    return {
        "k3s_cluster": {
            "children": {
                "server": {"hosts": hosts(servers)} if servers else {},
                "agent": {"hosts": hosts(agents)} if agents else {},
            },
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        }
    }
