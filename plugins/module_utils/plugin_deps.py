# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What wasmedge_plugin_deps does: find the plugin files, resolve their libraries (elf), and turn the
result into the hostPath volumes, mounts and env a pod needs (plugin_mounts)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import elf, plugin_mounts

UNAME_MACHINES = {"amd64": "x86_64", "arm64": "aarch64", "armv7l": "arm", "i686": "i386"}


def expand_paths(fs, paths):
    """Plugin files from files and directories (inside ``fs``), with clear errors."""
    files = []
    for path in paths:
        host = fs.host(path)
        if not os.path.lexists(host):
            raise elf.ResolverError("%s does not exist (option paths)" % path)
        if os.path.isdir(host):
            try:
                names = sorted(os.listdir(host))
            except OSError as exc:
                raise elf.ResolverError("%s cannot be listed: %s" % (path, exc.strerror)) from exc
            found = [
                os.path.join(path, n)
                for n in names
                if n.endswith(".so") and os.path.isfile(os.path.join(host, n))
            ]
            if not found:
                raise elf.ResolverError("%s contains no .so plugin file (option paths)" % path)
            files.extend(found)
        else:
            files.append(path)
    return list(dict.fromkeys(files))


def fingerprint(fs, paths):
    """sha256 over (path, device, inode, size, mtime) of each file (inside ``fs``): it changes when any of
    them is replaced, reinstalled or modified, which is what the WASI-NN self-test reruns on."""
    digest = hashlib.sha256()
    for path in sorted(set(paths)):
        try:
            st = os.stat(fs.host(path))
        except OSError:
            digest.update(("%s\0missing\n" % path).encode("utf-8"))
            continue
        fields = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        digest.update(("%s\0%d\0%d\0%d\0%d\n" % fields).encode("utf-8"))
    return digest.hexdigest()


def resolve(params):
    """wasmedge_plugin_deps' result for its parameters: libraries, mounts, env (raises elf.ResolverError)."""
    resolver = elf.Resolver(
        root=params["root"],
        ld_library_path=params["ld_library_path"],
        preloaded=params["exclude"],
        hwcaps=params["hwcaps"],
        max_conf_files=params.get("max_ld_so_conf_files") or elf.MAX_CONF_FILES,
    )
    plugins = expand_paths(resolver.fs, params["paths"])
    expected = params["architecture"]
    if expected is None and not resolver.fs.chrooted:
        machine = os.uname()[4]
        expected = UNAME_MACHINES.get(machine, machine)
    resolutions = []
    for plugin in plugins:
        obj = resolver.load(plugin)
        if expected and obj.machine != expected:
            raise elf.ResolverError(
                "%s is built for %s, this node needs %s: install the %s build of the plugin"
                % (plugin, obj.machine, expected, expected)
            )
        resolutions.append((plugin, resolver.resolve(plugin)))
    libraries = plugin_mounts.merge_libraries(resolutions)
    plugin_dirs = list(dict.fromkeys(os.path.dirname(p) for p in plugins))
    used_ld_dirs = [
        d
        for d in resolver.ld_library_path
        if any(os.path.dirname(lib["path"]) == os.path.normpath(d) for lib in libraries)
    ]
    directories = plugin_dirs + used_ld_dirs if params["collapse_directories"] else []
    volumes, mounts = plugin_mounts.build_mounts(
        plugins, libraries, directories, params["volume_name_prefix"]
    )
    missing = [m for _plugin, res in resolutions for m in res.missing]
    return {
        "plugins": [
            {
                "path": r.root.path,
                "realpath": r.root.realpath,
                "machine": r.root.machine,
                "soname": r.root.soname,
            }
            for _plugin, r in resolutions
        ],
        "libraries": libraries,
        "fingerprint": fingerprint(
            resolver.fs, [r.root.realpath for _p, r in resolutions] + [lib["realpath"] for lib in libraries]
        ),
        "missing": missing,
        "skipped": [s for _plugin, res in resolutions for s in res.skipped],
        "volumes": volumes,
        "volume_mounts": mounts,
        "env": plugin_mounts.build_env(plugin_dirs, params["ld_library_path"]),
    }
