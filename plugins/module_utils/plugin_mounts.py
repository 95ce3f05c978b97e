# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn resolved plugin dependencies into Kubernetes volumes, mounts and env.

Pure functions: the same inputs give the same names and order on every run and
every node, so manifests built from them are stable.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
MAX_LABEL = 63


def volume_name(prefix, path):
    """A valid DNS-1123 label naming ``path``: readable part + hash of the full path."""
    digest = hashlib.sha256(path.encode("utf-8")).hexdigest()[:8]
    slug = re.sub(r"[^a-z0-9]+", "-", os.path.basename(path.rstrip("/")).lower()).strip("-") or "root"
    room = MAX_LABEL - len(prefix) - len(digest) - 2
    slug = slug[:room].strip("-") if room > 0 else ""
    name = "-".join(part for part in (prefix, slug, digest) if part)
    return name[:MAX_LABEL].strip("-")


def check_prefix(prefix):
    """Error text for an unusable volume name prefix, or None."""
    if not DNS1123_LABEL.match(prefix) or len(prefix) > 40:
        return (
            "volume_name_prefix %r must be a DNS-1123 label of at most 40 characters "
            "(lowercase letters, digits and '-', starting and ending with a letter or digit)" % prefix
        )
    return None


def _inside(path, directory):
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def build_mounts(plugin_files, libraries, directories, prefix):
    """Volumes and volumeMounts for the plugin files and libraries.

    ``directories`` are mounted whole (type Directory); files inside them are not
    mounted again. Every other file gets its own read-only File mount at the same
    path. Duplicates (libraries shared by several plugins) appear once.
    """
    directories = sorted(set(d.rstrip("/") or "/" for d in directories))
    files = set()
    for path in list(plugin_files) + [lib["path"] for lib in libraries]:
        if not any(_inside(path, d) for d in directories):
            files.add(path)
    entries = [(d, "Directory") for d in directories] + [(f, "File") for f in sorted(files)]
    volumes = []
    mounts = []
    for path, kind in entries:
        name = volume_name(prefix, path)
        volumes.append({"name": name, "hostPath": {"path": path, "type": kind}})
        mounts.append({"name": name, "mountPath": path, "readOnly": True})
    return volumes, mounts


def build_env(plugin_dirs, ld_library_path):
    env = []
    if plugin_dirs:
        env.append({"name": "WASMEDGE_PLUGIN_PATH", "value": ":".join(plugin_dirs)})
    if ld_library_path:
        env.append({"name": "LD_LIBRARY_PATH", "value": ":".join(ld_library_path)})
    return env


def merge_libraries(resolutions):
    """One entry per library path across several plugins, with every plugin that needs it."""
    merged = {}
    order = []
    for plugin, resolution in resolutions:
        for lib in resolution.libraries():
            entry = merged.get(lib["path"])
            if entry is None:
                entry = dict(lib, needed_by=[], plugins=[])
                merged[lib["path"]] = entry
                order.append(lib["path"])
            if lib["needed_by"] and lib["needed_by"] not in entry["needed_by"]:
                entry["needed_by"].append(lib["needed_by"])
            if plugin not in entry["plugins"]:
                entry["plugins"].append(plugin)
    return [merged[p] for p in order]


def missing_message(missing):
    parts = ["%s (needed by %s: %s)" % (m["name"], m["needed_by"], " -> ".join(m["chain"])) for m in missing]
    return (
        "Missing shared libraries: %s. Install them on the node, add their directory to ld_library_path, "
        "list them in exclude if the runtime process already provides them, or set allow_missing=true."
        % "; ".join(parts)
    )
