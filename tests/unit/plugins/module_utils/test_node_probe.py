from __future__ import annotations

import os
import platform
import re

import pytest

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import node_probe

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx avx2 fma f16c
bogomips\t: 4000.00

processor\t: 1
flags\t\t: fpu vme sse sse2
"""
X86_NOAVX_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse sse2 sse4_2\n"
ARM_CPUINFO = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"

LDCONFIG = """3 libs found in cache `/etc/ld.so.cache'
\tlibcudart.so.12 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.12
\tlibcudart.so.12 (libc6) => /usr/lib32/libcudart.so.12
\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1
\tlibm.so.6 (libc6,AArch64) => /lib/aarch64-linux-gnu/libm.so.6
"""


def test_x86_flags_come_from_the_first_processor():
    flags = node_probe.parse_cpu_flags(X86_CPUINFO)
    assert {"avx", "avx2", "fma"} <= flags
    summary = node_probe.cpu_summary(flags)
    assert summary == {"avx": True, "avx2": True, "avx512f": False, "fma": True, "f16c": True}


def test_cpu_without_avx():
    assert node_probe.cpu_summary(node_probe.parse_cpu_flags(X86_NOAVX_CPUINFO))["avx"] is False


def test_arm_features_are_read():
    flags = node_probe.parse_cpu_flags(ARM_CPUINFO)
    assert "asimd" in flags
    assert node_probe.cpu_summary(flags)["avx"] is False


def test_empty_cpuinfo():
    assert node_probe.parse_cpu_flags("") == set()


def test_ldconfig_cache_keeps_only_the_node_abi():
    x86 = node_probe.parse_ldconfig_cache(LDCONFIG, "x86_64")
    assert x86 == {
        "libcudart.so.12": ["/usr/local/cuda/lib64/libcudart.so.12"],
        "libcuda.so.1": ["/usr/lib/x86_64-linux-gnu/libcuda.so.1"],
    }
    arm = node_probe.parse_ldconfig_cache(LDCONFIG, "aarch64")
    assert list(arm) == ["libm.so.6"]


def test_cuda_summary_lists_missing_libraries():
    cache = node_probe.parse_ldconfig_cache(LDCONFIG, "x86_64")
    summary = node_probe.cuda_summary("535.104.05", cache)
    assert summary["driver_present"] is True
    assert summary["runtimes"]["12"] == {
        "complete": False,
        "missing": ["libcublas.so.12", "libcublasLt.so.12"],
    }
    full = {key: ["/x"] for key in node_probe.CUDA_LIBRARIES["12"]}
    assert node_probe.cuda_summary(None, full)["runtimes"]["12"]["complete"] is True
    assert node_probe.cuda_summary(None, full)["driver_present"] is False


def test_nvidia_driver_version():
    text = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\nGCC version: gcc 12"
    assert node_probe.parse_nvidia_driver_version(text) == "535.104.05"
    open_kernel = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build"
    assert node_probe.parse_nvidia_driver_version(open_kernel) == "570.86.15"
    assert node_probe.parse_nvidia_driver_version(None) is None
    assert node_probe.parse_nvidia_driver_version("garbage") is None


def test_free_space_of_a_missing_path_is_measured_at_its_parent(tmp_path):
    result = node_probe.free_space_mb(str(tmp_path / "a" / "b"))
    assert result["checked_path"] == str(tmp_path)
    st = os.statvfs(tmp_path)
    assert abs(result["free_mb"] - st.f_bavail * st.f_frsize // 2**20) <= 64


def test_kernel_module_and_sysctl_readers(tmp_path):
    (tmp_path / "module" / "br_netfilter").mkdir(parents=True)
    assert node_probe.kernel_module_present("br_netfilter", str(tmp_path))
    assert node_probe.kernel_module_present("br-netfilter", str(tmp_path))
    assert not node_probe.kernel_module_present("overlay", str(tmp_path))
    sysctl = tmp_path / "sys" / "net" / "ipv4"
    sysctl.mkdir(parents=True)
    (sysctl / "ip_forward").write_text("1\n")
    assert node_probe.read_sysctl("net.ipv4.ip_forward", str(tmp_path)) == "1"
    assert node_probe.read_sysctl("net.ipv4.nope", str(tmp_path)) is None


def test_glibc_version_of_this_process():
    # Our machines run Debian (glibc): the probe must find it, and agree with the standard library.
    assert platform.libc_ver()[0] == "glibc"
    assert node_probe.glibc_version() == platform.libc_ver()[1]
    assert re.fullmatch(r"2\.\d+", node_probe.glibc_version())


@pytest.mark.parametrize("answer", ["", "musl 1.2.4", OSError("unsupported"), ValueError("unknown name")])
def test_glibc_version_is_none_on_other_c_libraries(monkeypatch, answer):
    def confstr(name):
        assert name == "CS_GNU_LIBC_VERSION"
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(node_probe.os, "confstr", confstr)
    assert node_probe.glibc_version() is None
