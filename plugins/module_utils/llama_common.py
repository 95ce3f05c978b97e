# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the backend and balancer manifests share: labels, selectors, option checks, probes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
MANAGED_BY = "edgewasm.llamaedge"
PART_OF = "edgewasm-llamaedge"


def range_error(option, value, low, high, *, required=False):
    """The message for an integer option outside [low, high] (or missing when ``required``), or None."""
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return "%s=%r must be an integer from %d to %d" % (option, value, low, high)
    return None


def dns_label_error(option, value, max_length=63):
    """Error text when ``value`` is not a DNS-1123 label of at most ``max_length``, else None."""
    if not isinstance(value, str) or not DNS1123_LABEL.match(value) or len(value) > max_length:
        return (
            "%s=%r must be a DNS-1123 label of at most %d characters: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit" % (option, value, max_length)
        )
    return None


def labels(name, component):
    return {
        "app.kubernetes.io/name": "llama-api-server" if component == "backend" else "edgewasm-balancer",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector(name, component):
    return {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": component}


def label_selector(labels_):
    """A label selector string matching every label of ``labels_`` (sorted: stable across runs)."""
    return ",".join("%s=%s" % kv for kv in sorted(labels_.items()))


def probe(path, port, period, failures, delay=0):
    probe = {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }
    if delay:
        probe["initialDelaySeconds"] = delay
    return probe
