# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only probes of a node: architecture, glibc, CPU flags, NVIDIA/CUDA,
free disk space, kernel modules and sysctls.

Pure functions over file contents where possible, so that unit tests can feed
them text captured from other machines (aarch64, musl, GPU hosts).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

# CPU features the GGML plugin variants care about, as /proc/cpuinfo spells them.
X86_FLAGS_OF_INTEREST = ("avx", "avx2", "avx512f", "fma", "f16c")
# CUDA runtime libraries the cuda variants of the plugin link against.
CUDA_LIBRARIES = {
    "12": ("libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12", "libcuda.so.1"),
    "11": ("libcudart.so.11.0", "libcublas.so.11", "libcublasLt.so.11", "libcuda.so.1"),
}

_LDCONFIG_LINE = re.compile(r"^\s*(?P<soname>\S+)\s+\((?P<flags>[^)]*)\)\s+=>\s+(?P<path>\S+)\s*$")
_NVIDIA_VERSION = re.compile(r"Kernel Module\s+(?:for\s+\S+\s+)?(?P<version>\d+(?:\.\d+)+)")


def glibc_version():
    """Return the running C library's glibc version ("2.36") or None (musl, other)."""
    try:
        value = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        return None
    if not value or not value.startswith("glibc "):
        return None
    return value.split(" ", 1)[1].strip()


def parse_cpu_flags(cpuinfo):
    """Return the set of CPU feature flags of the first processor in /proc/cpuinfo text.

    x86 lists them under ``flags``, arm64 under ``Features``.
    """
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_summary(flags):
    """Map a flag set to the booleans the role decides on."""
    return dict((name, name in flags) for name in X86_FLAGS_OF_INTEREST)


def parse_ldconfig_cache(text, machine):
    """Parse ``ldconfig -p`` output into {soname: [paths]} for the given machine.

    ``ldconfig -p`` lists every ABI in the cache; entries are tagged with flags such
    as ``libc6,x86-64`` or ``libc6,AArch64``. Only entries of the node's own ABI count.
    """
    tag = {"x86_64": "x86-64", "aarch64": "AArch64"}.get(machine)
    found = {}
    for line in text.splitlines():
        match = _LDCONFIG_LINE.match(line)
        if not match:
            continue
        flags = match.group("flags")
        if tag and tag not in flags:
            continue
        found.setdefault(match.group("soname"), []).append(match.group("path"))
    return found


def parse_nvidia_driver_version(text):
    """Return the driver version from /proc/driver/nvidia/version text, or None."""
    match = _NVIDIA_VERSION.search(text or "")
    return match.group("version") if match else None


def cuda_summary(driver_version, ld_cache):
    """Which CUDA major versions have all their runtime libraries present."""
    runtimes = {}
    for major, libs in CUDA_LIBRARIES.items():
        missing = [lib for lib in libs if lib not in ld_cache]
        runtimes[major] = {"complete": not missing, "missing": missing}
    return {
        "driver_present": driver_version is not None,
        "driver_version": driver_version,
        "runtimes": runtimes,
    }


def nearest_existing(path):
    """The path itself or its closest existing ancestor (free space is measured there)."""
    current = os.path.abspath(path)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def free_space_mb(path):
    checked = nearest_existing(path)
    st = os.statvfs(checked)
    return {"path": path, "checked_path": checked, "free_mb": st.f_bavail * st.f_frsize // (1024 * 1024)}


def kernel_module_present(name, sys_root="/sys"):
    """True when a module is loaded or built in: both appear under /sys/module."""
    return os.path.isdir(os.path.join(sys_root, "module", name.replace("-", "_")))


def read_sysctl(name, proc_root="/proc"):
    path = os.path.join(proc_root, "sys", *name.split("."))
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None
