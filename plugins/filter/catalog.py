# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters over the release catalog (plugins/module_utils/release_catalog.py): the roles' only view of
upstream versions, dists, architectures, archive layouts, plugin variants and checksum files."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import release_catalog as catalog


def _mapping(value, name):
    if not isinstance(value, dict):
        raise AnsibleFilterError("%s expects a dictionary, got %s" % (name, type(value).__name__))
    return value


def wasmedge_platform(version, node, dist="auto", variant="auto", vouched=None):
    return catalog.platform(version, _mapping(node, "wasmedge_platform"), dist, variant, vouched or [])


def wasmedge_core(version, dist, arch):
    return catalog.wasmedge_core(version, dist, arch)


def ggml_plugin(version, build, variant, dist, arch, vouched=None):
    return catalog.ggml_plugin(version, build, variant, dist, arch, vouched or [])


def wasmedge_archive_root(listing, version):
    if isinstance(listing, str):
        listing = listing.splitlines()
    return catalog.archive_root(list(listing), version)


def archive_root(listing, anchor, roots):
    if isinstance(listing, str):
        listing = listing.splitlines()
    if isinstance(roots, str):
        roots = [roots]
    return catalog.member_root(list(listing), anchor, list(roots))


def sha256_from_list(text, asset):
    return catalog.parse_checksums(text, asset)


def k3s_containerd(version):
    return catalog.k3s_containerd(version)


def k3s_binary(k3s_arch):
    return catalog.k3s_binary(k3s_arch)


def runwasi_build(version, arch):
    return catalog.runwasi_build(version, arch)


def runwasi_pairing(runwasi_version, wasmedge_version, wasi_nn=True):
    return catalog.runwasi_pairing(runwasi_version, wasmedge_version, boolean(wasi_nn, strict=False))


def crun_json_package(version):
    return catalog.crun_json_package(version)


def llamaedge_server(version):
    return catalog.llamaedge_server(version)


def release_arch(machine):
    names = catalog.ARCHES.get(machine)
    return dict(names) if names else {}


class FilterModule(object):
    def filters(self):
        return {
            "wasmedge_platform": wasmedge_platform,
            "wasmedge_core": wasmedge_core,
            "ggml_plugin": ggml_plugin,
            "wasmedge_archive_root": wasmedge_archive_root,
            "archive_root": archive_root,
            "sha256_from_list": sha256_from_list,
            "k3s_containerd": k3s_containerd,
            "k3s_binary": k3s_binary,
            "runwasi_build": runwasi_build,
            "runwasi_pairing": runwasi_pairing,
            "crun_json_package": crun_json_package,
            "release_arch": release_arch,
            "llamaedge_server": llamaedge_server,
        }
