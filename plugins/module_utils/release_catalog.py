# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release catalog: every fact about upstream releases the collection relies on, in one place.

Versions, dists, architectures, archive layouts, WASI-NN GGML plugin variants and builds, checksum
files, runwasi build facts, crun build dependencies and k3s template support. Roles read it through
the filters in plugins/filter/catalog.py, and the stand-in release mirror under tests/ is generated
from it, so the roles, the tests and the stand-ins cannot disagree about upstream.

Evidence for each entry is in docs (upstream release pages and workflows); where upstream gives no
evidence that an asset exists, the catalog does not list it and ``ggml_plugin`` reports it as
unvouched: an operator who has the file in a mirror names it in ``edgewasm_vouched_assets``.

Pure Python, standard library only: imported by modules, filters and the test stand-ins alike.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# uname -m -> the names upstream release assets use.
ARCHES = {
    "x86_64": {"wasmedge": "x86_64", "k3s": "amd64", "k3s_binary": "k3s", "runwasi": "x86_64"},
    "aarch64": {"wasmedge": "aarch64", "k3s": "arm64", "k3s_binary": "k3s-arm64", "runwasi": "aarch64"},
}

# WasmEdge Linux dists, in the order the collection prefers them, with the oldest glibc each runs on.
DISTS = ("ubuntu20.04", "manylinux_2_28", "manylinux2014")
DIST_MIN_GLIBC = {"ubuntu20.04": "2.31", "manylinux_2_28": "2.28", "manylinux2014": "2.17"}

# Archive layouts: "topdir" has WasmEdge-<V>-Linux/{bin,include,lib}; "flat" has bin/, lib/, include/ at the root.
TOPDIR = "topdir"
FLAT = "flat"

# GGML plugin variants: asset infix, architectures, and what the node needs.
GGML_VARIANTS = {
    "cpu": {"infix": "", "arches": ("x86_64", "aarch64"), "cuda": None},
    "noavx": {"infix": "-noavx", "arches": ("x86_64",), "cuda": None},
    "cuda-12": {"infix": "-cuda", "arches": ("x86_64", "aarch64"), "cuda": "12"},
    # aarch64 + cuda-11 is not built (upstream issue #3885).
    "cuda-11": {"infix": "-cuda-11", "arches": ("x86_64",), "cuda": "11"},
}
# The default (cpu) x86_64 build: upstream builds it with GGML_NATIVE (-march=native) on its CI runner and
# describes that as AVX/AVX2/FMA/F16C. A CPU lacking any of these crashes on it (SIGILL); one that has them all
# may still lack another instruction the runner had, so only the node's self-test (its SIGILL verdict) proves it.
CPU_VARIANT_X86_FLAGS = ("avx", "avx2", "fma", "f16c")
# Registry builds marked do-not-use upstream.
BAD_BUILDS = ("b4067", "b4242")
PLUGIN_FILE = "libwasmedgePluginWasiNN.so"
CHECKSUM_FILE = "SHA256SUM"

_ALL_DISTS = ("ubuntu20.04", "manylinux_2_28", "manylinux2014")
_NEW_DISTS = ("ubuntu20.04", "manylinux_2_28")
# The GGML plugin of 0.14.1: its release workflow (.github/workflows/matrix-extensions.json) builds the cpu plugin
# for manylinux2014 and manylinux_2_28 on x86_64 and aarch64; its installer's support table (utils/install.py)
# adds ubuntu20.04 cpu on both, noavx and cuda-11 on x86_64, cuda (12) on both.
_OLD_GGML = {
    ("manylinux2014", "x86_64"): ("cpu",),
    ("manylinux2014", "aarch64"): ("cpu",),
    ("manylinux_2_28", "x86_64"): ("cpu",),
    ("manylinux_2_28", "aarch64"): ("cpu",),
    ("ubuntu20.04", "x86_64"): ("cpu", "noavx", "cuda-12", "cuda-11"),
    ("ubuntu20.04", "aarch64"): ("cpu", "cuda-12"),
}
# The GGML plugin matrix from 0.15.0: manylinux_2_28 (x86_64, aarch64) and ubuntu20.04 x86_64, cpu only.
_NEW_GGML = {
    ("manylinux_2_28", "x86_64"): ("cpu",),
    ("manylinux_2_28", "aarch64"): ("cpu",),
    ("ubuntu20.04", "x86_64"): ("cpu",),
}


def _release(layout, dists, ggml_build, ggml_assets, registry_builds, plugin_api):
    return {
        "layout": layout,
        "dists": dists,
        "ggml_build": ggml_build,
        "ggml_assets": ggml_assets,
        # Single builds ("b3651") and inclusive ranges (("b4273", "b6343")) of the plugin registry.
        "registry_builds": registry_builds,
        # The plugin API version: a plugin built for another one is rejected (with only a debug log).
        "plugin_api": plugin_api,
    }


# WasmEdge releases. ggml_assets: (dist, arch) -> variants upstream's release workflow builds for it.
WASMEDGE = {
    # Registry builds for 0.14.1: b3651 and b4273 through b6343 (the registry README; BAD_BUILDS refused).
    "0.14.1": _release(TOPDIR, _ALL_DISTS, "b3651", _OLD_GGML, ("b3651", ("b4273", "b6343")), 4),
    "0.15.0": _release(FLAT, _NEW_DISTS, "b5896", _NEW_GGML, ("b6301", "b6343"), 4),
    "0.15.1": _release(FLAT, _NEW_DISTS, "b5896", _NEW_GGML, (), 4),
}
for _version in ("0.16.0", "0.16.1", "0.16.2", "0.16.3", "0.16.4"):
    WASMEDGE[_version] = _release(FLAT, _NEW_DISTS, "b7090", _NEW_GGML, (), 4)
for _version in ("0.17.0", "0.17.1"):
    WASMEDGE[_version] = _release(FLAT, _NEW_DISTS, "b8757", _NEW_GGML, (), 5)
# The default: the oldest release with the fix of every vulnerability in VULNERABILITIES (0.14.1 lacks the
# CVE-2025-69261 fix) whose plugin API (4) the runwasi v0.6.0 shim's embedded 0.14.1 loads. README: "Versions".
DEFAULT_WASMEDGE = "0.15.1"

# Known vulnerabilities of WasmEdge releases, with the releases that fix them (a fix in x.y.z is in every later
# release of that line and in every later line listed).
VULNERABILITIES = (
    {
        "id": "CVE-2025-69261",
        "summary": "memory-offset overflow",
        "fixed": ("0.15.1", "0.16.0"),
    },
)

# WASI-NN tensor types. WasmEdge PR #4069 renumbered them (as the wasi-nn WIT numbers them): from 0.15.0, and in
# the 0.14.1 plugin LTS branch from registry build b5074 on. wasinnfunc.cpp accepts F16, F32, U8 and I32 only
# and answers any other type with "[WASI-NN] Unknown tensor type N." and errno 1 (invalid_argument).
TENSOR_TYPES_OLD = {"F16": 0, "F32": 1, "U8": 2, "I32": 3}
TENSOR_TYPES_NEW = {"F16": 0, "F32": 1, "F64": 2, "U8": 3, "I32": 4, "I64": 5}
TENSOR_TYPES_ACCEPTED = ("F16", "F32", "U8", "I32")
NEW_TENSOR_TYPES_FROM_BUILD = 5074
# The tensor type the self-test probe sends: U8 in the new numbering, I32 in the old (both accepted; the GGML
# backend ignores the type of its prompt and metadata tensors). LlamaEdge (wasmedge-wasi-nn 0.8) sends 3 too.
PROBE_TENSOR_TYPE = 3
# llama.cpp builds before this one write their gguf loader errors ("gguf_init_from_file: invalid magic
# characters") to stderr themselves; later builds route them through the log callback, which the plugin drops
# unless logging is enabled. Of the catalog's builds only b3651 is older.
LLAMA_LOG_CALLBACK_FROM_BUILD = 4273

# runwasi releases: the cargo feature that enables WASI-NN plugin loading, the WasmEdge its wasmedge-sys pins
# (statically embedded: its plugin API decides which plugins load), whether its shim applies the container's
# WASMEDGE_WASINN_PRELOAD (only v0.6.0's instance.rs copies the WASMEDGE_* variables and preloads), and the Rust
# toolchain its rust-toolchain.toml pins (rustup downloads it unless the build names one that is installed).
RUNWASI = {
    "0.6.0": {"nn_feature": "plugin", "wasmedge_static": "0.14.1", "preload": True, "toolchain": "1.85.0"},
    "0.5.0": {"nn_feature": "wasi_nn", "wasmedge_static": "0.13.5", "preload": False, "toolchain": ""},
    "0.4.0": {"nn_feature": "wasi_nn", "wasmedge_static": "0.13.5", "preload": False, "toolchain": ""},
}
DEFAULT_RUNWASI = "0.6.0"
# The plugin API of WasmEdge versions older than the catalog's releases (embedded by old runwasi releases).
_PLUGIN_API_BEFORE_0_14 = 3


# LlamaEdge (github.com/LlamaEdge/LlamaEdge releases): its release workflow (.github/workflows/publish.yml) builds
# llama-api-server.wasm for wasm32-wasip1 and publishes it with a sha256sum-format SHA256SUM over the release's
# .wasm files (since 0.2.x), under the bare version as tag. Every stock build imports wasi:logging.
LLAMAEDGE_RELEASES = ("0.28.1", "0.28.0")
DEFAULT_LLAMAEDGE = "0.28.1"
LLAMAEDGE_SERVER_ASSET = "llama-api-server.wasm"
LLAMAEDGE_CHECKSUM_FILE = "SHA256SUM"


# crun: the JSON library it builds against (json-c replaced yajl in 1.28).
CRUN_JSON_C_FROM = "1.28"
CRUN_JSON_PACKAGES = {"json-c": "libjson-c-dev", "yajl": "libyajl-dev"}

# k3s: containerd config version 3 (containerd 2) from these releases per minor (and every later minor),
# and {{ template "base" . }} from these (the Sept 2023 releases).
K3S_CONFIG_V3_FROM = {31: (1, 31, 6), 32: (1, 32, 2)}
K3S_CONFIG_V3_MINOR = 33
K3S_BASE_FROM = {24: (1, 24, 17), 25: (1, 25, 13), 26: (1, 26, 8), 27: (1, 27, 5), 28: (1, 28, 1)}
K3S_BASE_MINOR = 29
K3S_BASE_MINIMUM = "v1.28.1+k3s1 (or v1.27.5+k3s1, v1.26.8+k3s1, v1.25.13+k3s1 on older minors)"

_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+\Z")
_K3S_VERSION = re.compile(r"^v([0-9]+)\.([0-9]+)\.([0-9]+)\+k3s[0-9]+\Z")
_BUILD = re.compile(r"^b[0-9]{4,5}\Z")


def version_key(version):
    return tuple(int(part) for part in version.split("."))


def build_number(build):
    """The llama.cpp build number of "bNNNN", or None."""
    return int(str(build)[1:]) if _BUILD.match(str(build)) else None


def registry_build_exists(version, build):
    """Whether the plugin registry has ``build`` for WasmEdge ``version`` (ranges per the registry's README)."""
    number = build_number(build)
    if number is None or build in BAD_BUILDS:
        return False
    for entry in (wasmedge_release(version) or {}).get("registry_builds", ()):
        if isinstance(entry, tuple):
            if build_number(entry[0]) <= number <= build_number(entry[1]):
                return True
        elif entry == build:
            return True
    return False


def registry_builds_text(version):
    """The registry builds of a version for a message: "b3651, b4273-b6343 (not b4067, b4242)"."""
    entries = (wasmedge_release(version) or {}).get("registry_builds", ())
    return ", ".join("%s-%s" % entry if isinstance(entry, tuple) else entry for entry in entries)


def plugin_build(version, build="release"):
    """The llama.cpp build of the GGML plugin installed as (WasmEdge version, wasi_nn_ggml_build)."""
    if build == "release":
        return (wasmedge_release(version) or {}).get("ggml_build", "")
    return str(build)


def wasi_nn_abi(version, build="release"):
    """What a WASI-NN guest meets in the GGML plugin of (WasmEdge version, build): the tensor type numbering
    and the codes it accepts, and whether llama.cpp's own loader errors reach stderr."""
    llama = build_number(plugin_build(version, build)) or 0
    new = version_key(str(version)) >= (0, 15, 0) or llama >= NEW_TENSOR_TYPES_FROM_BUILD
    types = TENSOR_TYPES_NEW if new else TENSOR_TYPES_OLD
    return {
        "numbering": "new" if new else "old",
        "tensor_types": dict(types),
        "accepted": sorted(types[name] for name in TENSOR_TYPES_ACCEPTED),
        "probe_tensor_type": PROBE_TENSOR_TYPE,
        "llama_build": plugin_build(version, build),
        "llama_log_to_stderr": 0 < llama < LLAMA_LOG_CALLBACK_FROM_BUILD,
    }


def vulnerabilities(version):
    """The known vulnerabilities WasmEdge ``version`` has (not fixed in it), each with the releases that fix it."""
    key = version_key(str(version))
    found = []
    for entry in VULNERABILITIES:
        fixes = [version_key(v) for v in entry["fixed"]]
        # Fixed when a fixing release of the same minor line is not newer, or a fixing line is older.
        fixed = any(key[:2] == fix[:2] and key >= fix for fix in fixes) or any(
            key[:2] > fix[:2] for fix in fixes
        )
        if not fixed:
            found.append(dict(entry))
    return found


def vulnerability_warnings(version, variable="wasmedge_version"):
    return [
        "%s=%s has %s (%s), fixed in %s: choose one of those (or later)"
        % (variable, version, v["id"], v["summary"], " and ".join(v["fixed"]))
        for v in vulnerabilities(version)
    ]


def runwasi_pairing(runwasi_version, wasmedge_version, wasi_nn=True):
    """Whether the runwasi shim <runwasi_version> can serve WASI-NN with plugins of WasmEdge <wasmedge_version>.

    The shim embeds its own WasmEdge (its wasmedge-sys pin): a plugin of another plugin API is rejected with
    only a debug log (pods then fail with "unknown import"). Returns {"errors", "warnings", "embedded"}.
    """
    out = {"errors": [], "warnings": [], "embedded": ""}
    entry = RUNWASI.get(str(runwasi_version))
    release = wasmedge_release(wasmedge_version)
    if entry is None or release is None or not wasi_nn:
        return out
    embedded = entry["wasmedge_static"]
    out["embedded"] = embedded
    if not entry["preload"]:
        out["errors"].append(
            "runwasi_version=%s cannot serve WASI-NN models: its shim never applies WASMEDGE_WASINN_PRELOAD (only "
            'v0.6.0 does), so llama-api-server\'s load_by_name("default") fails; use runwasi_version=0.6.0 (or '
            "runwasi_wasi_nn: false for plain WASI pods)" % runwasi_version
        )
        return out
    embedded_api = (wasmedge_release(embedded) or {}).get("plugin_api", _PLUGIN_API_BEFORE_0_14)
    if release["plugin_api"] != embedded_api:
        out["errors"].append(
            "WasmEdge %s plugins (plugin API %s) cannot load in the runwasi %s shim, which embeds WasmEdge %s "
            '(plugin API %s): its pods would fail with "unknown import"; use wasmedge_version 0.14.1-0.16.x with '
            "this shim, or serve these backends with crun (runtime_class crun-wasm)"
            % (wasmedge_version, release["plugin_api"], runwasi_version, embedded, embedded_api)
        )
    elif str(wasmedge_version) != embedded:
        out["warnings"].append(
            "the runwasi %s shim embeds WasmEdge %s: the WasmEdge %s plugin loads in it (same plugin API %s) but "
            "was built against other internals; pods on the shim's RuntimeClass run WasmEdge %s whatever "
            "wasmedge_version says (crun-wasm pods run the node's %s)"
            % (runwasi_version, embedded, wasmedge_version, embedded_api, embedded, wasmedge_version)
        )
    return out


def wasmedge_versions():
    return sorted(WASMEDGE, key=version_key)


def _known_versions():
    return ", ".join(wasmedge_versions())


def wasmedge_release(version):
    """The catalog entry of a WasmEdge release, or None."""
    return WASMEDGE.get(str(version))


def wasmedge_asset(version, dist, arch):
    return "WasmEdge-%s-%s_%s.tar.gz" % (version, dist, arch)


def wasmedge_static_asset(version, arch):
    """The static archive wasmedge-sys downloads for a glibc build (its ``static`` feature)."""
    return "WasmEdge-%s-debian11_%s_static.tar.gz" % (version, arch)


def ggml_asset(version, variant, dist, arch):
    return "WasmEdge-plugin-wasi_nn-ggml%s-%s-%s_%s.tar.gz" % (
        GGML_VARIANTS[variant]["infix"],
        version,
        dist,
        arch,
    )


def release_path(version, asset):
    return "%s/%s" % (version, asset)


def checksum_file(version):
    return release_path(version, CHECKSUM_FILE)


def llamaedge_server(version):
    """Where a LlamaEdge release's llama-api-server.wasm is and what verifies it: {errors, path,
    checksum_file, known}. Versions the catalog does not list are allowed (their SHA256SUM still verifies
    them); a malformed one is an error. The release paths share the mirror with WasmEdge's, whose versions
    (0.1x) and LlamaEdge's (0.2x) do not meet (tests/unit: test_release_catalog)."""
    if not _VERSION.match(str(version or "")):
        return {
            "errors": [
                "llama_backends_server_version=%r must be a LlamaEdge release such as %s"
                % (version, DEFAULT_LLAMAEDGE)
            ],
            "path": "",
            "checksum_file": "",
            "known": False,
        }
    return {
        "errors": [],
        "path": release_path(version, LLAMAEDGE_SERVER_ASSET),
        "checksum_file": release_path(version, LLAMAEDGE_CHECKSUM_FILE),
        "known": version in LLAMAEDGE_RELEASES,
    }


def glibc_fits(glibc, dist):
    return glibc is not None and version_key(str(glibc)) >= version_key(DIST_MIN_GLIBC[dist])


def missing_cpu_flags(machine, cpu):
    """CPU features the default (cpu) GGML build needs that the node lacks (x86_64 only)."""
    if machine != "x86_64":
        return []
    return [flag for flag in CPU_VARIANT_X86_FLAGS if not (cpu or {}).get(flag)]


def cuda_usable(machine, cuda):
    """The CUDA variants whose driver and runtime the node has, best first."""
    runtimes = (cuda or {}).get("runtimes") or {}
    driver = (cuda or {}).get("driver_present")
    return [
        variant
        for variant, major in (("cuda-12", "12"), ("cuda-11", "11"))
        if driver
        and (runtimes.get(major) or {}).get("complete")
        and machine in GGML_VARIANTS[variant]["arches"]
    ]


def auto_variant(machine, cpu, cuda, version=None):
    """The variant auto picks: a CUDA build the node can run and (given a version) upstream publishes for it,
    else noavx on an x86_64 CPU lacking what the cpu build is described as needing, else cpu."""
    for variant in cuda_usable(machine, cuda):
        if version is None or ggml_dists(version, machine, variant):
            return variant
    return "noavx" if missing_cpu_flags(machine, cpu) else "cpu"


def ggml_variants(version, dist, arch):
    """Variants upstream publishes for a (version, dist, arch), per the catalog."""
    release = wasmedge_release(version) or {}
    return list(release.get("ggml_assets", {}).get((dist, arch), ()))


def ggml_dists(version, arch, variant):
    """(dist) for which the catalog has evidence of this variant."""
    release = wasmedge_release(version) or {}
    return [d for d in release.get("dists", ()) if variant in release["ggml_assets"].get((d, arch), ())]


def _vouched(path, vouched):
    return path in (vouched or ()) or path.rsplit("/", 1)[-1] in (vouched or ())


def ggml_plugin(version, build, variant, dist, arch, vouched=()):
    """Where the plugin asset of (WasmEdge version, build, variant, dist, arch) comes from, with errors.

    Returns {"errors", "source" (release|registry), "tag", "asset", "path", "checksum_file" (or "")}.
    """
    errors = []
    release = wasmedge_release(version)
    result = {
        "source": "release",
        "tag": str(version),
        "asset": "",
        "path": "",
        "checksum_file": "",
        "errors": errors,
    }
    if release is None:
        errors.append("WasmEdge %s is not in the release catalog (known: %s)" % (version, _known_versions()))
        return result
    if variant not in GGML_VARIANTS:
        errors.append("GGML plugin variant %r is not one of %s" % (variant, ", ".join(GGML_VARIANTS)))
        return result
    if build != "release":
        if not _BUILD.match(str(build)) or build in BAD_BUILDS:
            errors.append(
                "wasi_nn_ggml_build=%s must be 'release' or a plugin registry build bNNNN (not %s, marked do-not-use)"
                % (build, ", ".join(BAD_BUILDS))
            )
            return result
        if not registry_build_exists(version, build):
            errors.append(
                "the plugin registry has no build %s for WasmEdge %s: builds for %s are %s"
                % (
                    build,
                    version,
                    version,
                    registry_builds_text(version) or "none (use wasi_nn_ggml_build=release)",
                )
            )
            return result
        result.update(source="registry", tag=build)
    asset = ggml_asset(version, variant, dist, arch)
    path = release_path(result["tag"], asset)
    result.update(asset=asset, path=path, checksum_file=checksum_file(version) if build == "release" else "")
    if arch not in GGML_VARIANTS[variant]["arches"]:
        errors.append(
            "the %s plugin variant exists for %s only, not %s"
            % (variant, ", ".join(GGML_VARIANTS[variant]["arches"]), arch)
        )
    elif variant not in ggml_variants(version, dist, arch) and not _vouched(path, vouched):
        known = ["%s %s_%s" % (", ".join(v), d, a) for (d, a), v in sorted(release["ggml_assets"].items())]
        errors.append(
            "no evidence that WasmEdge %s publishes %s (the catalog knows the GGML plugin for %s only): choose "
            "another variant or dist, or, if your mirror has that file, list %s in edgewasm_vouched_assets"
            % (version, asset, "; ".join(known), path)
        )
    return result


def _dist_errors(version, release, dist, glibc):
    if dist not in release["dists"]:
        return [
            "preflight_wasmedge_dist=%s is not released for WasmEdge %s: use one of %s or auto"
            % (dist, version, ", ".join(release["dists"]))
        ]
    if not glibc_fits(glibc, dist):
        return [
            "preflight_wasmedge_dist=%s needs glibc >= %s, the node has %s: set it to auto"
            % (dist, DIST_MIN_GLIBC[dist], glibc)
        ]
    return []


def _variant_errors(variant, machine, cpu, cuda):
    spec = GGML_VARIANTS.get(variant)
    if spec is None:
        return ["preflight_ggml_variant=%s is not one of auto, %s" % (variant, ", ".join(GGML_VARIANTS))]
    if machine not in spec["arches"]:
        return [
            "preflight_ggml_variant=%s exists for %s only; the node is %s: use auto or cpu"
            % (variant, ", ".join(spec["arches"]), machine)
        ]
    missing = missing_cpu_flags(machine, cpu) if variant == "cpu" else []
    if missing:
        return [
            "preflight_ggml_variant=cpu needs %s, which the node's CPU lacks (%s): the plugin would crash with "
            "SIGILL; use noavx or auto"
            % ("/".join(f.upper() for f in CPU_VARIANT_X86_FLAGS), ", ".join(missing))
        ]
    return _cuda_errors(variant, spec["cuda"], cuda) if spec["cuda"] else []


def _cuda_errors(variant, major, cuda):
    runtime = ((cuda or {}).get("runtimes") or {}).get(major) or {}
    if not (cuda or {}).get("driver_present"):
        return [
            "preflight_ggml_variant=%s needs the NVIDIA driver (/proc/driver/nvidia/version is missing): install it or use a cpu variant (auto picks one)"
            % variant
        ]
    if not runtime.get("complete"):
        return [
            "preflight_ggml_variant=%s needs %s in the linker cache: install the CUDA runtime or use a cpu variant (auto picks one)"
            % (variant, ", ".join(runtime.get("missing") or []))
        ]
    return []


def platform(version, node, dist="auto", variant="auto", vouched=()):
    """Preflight's decision for a node: WasmEdge dist and GGML variant, or the errors that prevent one.

    ``node`` is what the node_info module returned (machine, glibc_version, cpu, cuda).
    """
    machine = node.get("machine")
    glibc = node.get("glibc_version")
    out = {
        "errors": [],
        "warnings": [],
        "machine": machine,
        "wasmedge_version": str(version),
        "glibc_version": glibc,
    }
    errors = out["errors"]
    release = wasmedge_release(version)
    if not _VERSION.match(str(version)) or release is None:
        errors.append(
            "preflight_wasmedge_version=%s is not in the release catalog (known: %s)"
            % (version, _known_versions())
        )
        return out
    if machine not in ARCHES:
        errors.append(
            "the node is %s: upstream releases are used for %s only" % (machine, " and ".join(ARCHES))
        )
        return out
    arch = ARCHES[machine]
    out.update(
        arch=arch["wasmedge"], k3s_arch=arch["k3s"], k3s_binary=arch["k3s_binary"], layout=release["layout"]
    )
    chosen_variant = (
        auto_variant(machine, node.get("cpu"), node.get("cuda"), version) if variant == "auto" else variant
    )
    out["warnings"] = vulnerability_warnings(version, "preflight_wasmedge_version")
    unused = [v for v in cuda_usable(machine, node.get("cuda")) if not ggml_dists(version, machine, v)]
    if variant == "auto" and unused and not chosen_variant.startswith("cuda"):
        out["warnings"].append(
            "the node has the NVIDIA driver and CUDA runtime, but WasmEdge %s publishes no CUDA build of the GGML "
            "plugin (%s): using the %s build (0.14.1 has CUDA builds)"
            % (version, ", ".join(unused), chosen_variant)
        )
    errors.extend(_variant_errors(chosen_variant, machine, node.get("cpu"), node.get("cuda")))
    if dist == "auto":
        fitting = [d for d in release["dists"] if glibc_fits(glibc, d)]
        with_plugin = [
            d
            for d in fitting
            if chosen_variant in GGML_VARIANTS
            and (
                chosen_variant in ggml_variants(version, d, machine)
                or _vouched(release_path(version, ggml_asset(version, chosen_variant, d, machine)), vouched)
            )
        ]
        chosen_dist = (with_plugin or fitting or [""])[0]
        if not fitting:
            errors.append(
                "glibc %s is older than every dist WasmEdge %s is released for (%s)"
                % (glibc, version, ", ".join(release["dists"]))
            )
    else:
        chosen_dist = dist
        errors.extend(_dist_errors(version, release, dist, glibc))
    out.update(dist=chosen_dist, variant=chosen_variant, platform="%s_%s" % (chosen_dist, arch["wasmedge"]))
    if chosen_dist and not errors:
        plugin = ggml_plugin(version, "release", chosen_variant, chosen_dist, arch["wasmedge"], vouched)
        errors.extend(plugin["errors"])
    return out


def wasmedge_core(version, dist, arch):
    """The WasmEdge archive of (version, dist, arch): release path, checksum file and expected layout."""
    release = wasmedge_release(version)
    errors = []
    if release is None:
        errors.append(
            "wasmedge_version=%s is not in the release catalog (known: %s)" % (version, _known_versions())
        )
        return {"errors": errors}
    if dist not in release["dists"]:
        errors.append(
            "wasmedge_dist=%s is not released for WasmEdge %s (one of %s)"
            % (dist, version, ", ".join(release["dists"]))
        )
    if arch not in [a["wasmedge"] for a in ARCHES.values()]:
        errors.append(
            "wasmedge_arch=%s is not one of %s" % (arch, ", ".join(a["wasmedge"] for a in ARCHES.values()))
        )
    asset = wasmedge_asset(version, dist, arch)
    return {
        "errors": errors,
        "version": str(version),
        "dist": dist,
        "arch": arch,
        "asset": asset,
        "path": release_path(version, asset),
        "checksum_file": checksum_file(version),
        "layout": release["layout"],
        "roots": wasmedge_roots(version),
    }


def member_root(listing, anchor, roots):
    """Where ``anchor`` (a member such as bin/wasmedge) sits in an archive, from its member list (tar -t).

    Only the directories of ``roots`` are accepted ("" for the archive's top), so a member of the same
    name deeper in the archive is never taken for it. Returns {"root", "strip", "error"}.
    """
    names = [n[2:] if n.startswith("./") else n for n in listing if n and n not in (".", "./")]
    for root in roots:
        prefix = (root.strip("/") + "/") if root.strip("/") else ""
        if any(n == prefix + anchor or n.startswith(prefix + anchor + "/") for n in names):
            strip = len([part for part in root.split("/") if part])
            return {"root": root.strip("/"), "strip": strip, "error": ""}
    wanted = [(root.strip("/") + "/" if root.strip("/") else "") + anchor for root in roots]
    if len(wanted) == 1:
        error = "the archive has no %s" % wanted[0]
    else:
        error = "the archive has neither %s" % " nor ".join(wanted)
    return {"root": "", "strip": 0, "error": error}


def wasmedge_roots(version):
    """The directories a WasmEdge archive may hold bin/ in: its top (0.15.0+) or WasmEdge-<V>-Linux (older)."""
    return ["", "WasmEdge-%s-Linux" % version]


def archive_root(listing, version):
    """The directory of a WasmEdge archive that holds bin/, from the archive's member list (tar -t).

    Returns {"root": "" (flat) or "WasmEdge-<V>-Linux", "strip": 0 or 1, "layout", "error"}.
    The listing decides, not the version: a mirror may repackage.
    """
    found = member_root(listing, "bin/wasmedge", wasmedge_roots(version))
    if found["error"]:
        found["error"] += " (0.15.0+ and older layouts)"
        found["layout"] = ""
    else:
        found["layout"] = TOPDIR if found["strip"] else FLAT
    return found


_CHECKSUM_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *]?(\S.*)\Z")


def checksum_file_problem(text):
    """Why ``text`` is not a sha256sum-format file (``<64 hex>  <name>`` or ``<64 hex> *<name>`` lines, blank
    lines allowed), or "" when it is one."""
    for number, line in enumerate((text or "").splitlines(), 1):
        if line.strip() and not _CHECKSUM_LINE.match(line.rstrip("\r")):
            shown = line if len(line) <= 80 else line[:80] + "..."
            return "line %d is not '<sha256> <name>': %r" % (number, shown)
    return ""


def parse_checksums(text, asset):
    """The sha256 of ``asset`` in a sha256sum-format file (``<hex>  <name>`` or ``<hex> *<name>``), or ""."""
    for line in (text or "").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2 or not re.match(r"^[0-9a-fA-F]{64}\Z", parts[0]):
            continue
        name = parts[1].strip()
        name = name[1:] if name.startswith("*") else name
        if name.startswith("./"):
            name = name[2:]
        if name == asset:
            return parts[0].lower()
    return ""


def k3s_binary(k3s_arch):
    """The k3s release binary of a k3s architecture name (amd64 -> k3s), or "" when there is none."""
    for names in ARCHES.values():
        if names["k3s"] == k3s_arch:
            return names["k3s_binary"]
    return ""


def _k3s_parts(version):
    match = _K3S_VERSION.match(str(version))
    return tuple(int(p) for p in match.groups()) if match else None


def _at_least(parts, per_minor, minor_from):
    major, minor, _patch = parts
    if major != 1:
        return major > 1
    if minor >= minor_from:
        return True
    floor = per_minor.get(minor)
    return floor is not None and parts >= floor


def k3s_containerd(version):
    """What k3s <version> does with containerd templates: config version and the "base" template."""
    parts = _k3s_parts(version)
    if parts is None:
        return {
            "errors": ["k3s version %r must look like v1.31.6+k3s1" % (version,)],
            "config_version": "",
            "base": False,
            "base_minimum": K3S_BASE_MINIMUM,
        }
    v3 = _at_least(parts, K3S_CONFIG_V3_FROM, K3S_CONFIG_V3_MINOR)
    return {
        "errors": [],
        "config_version": "3" if v3 else "2",
        "base": _at_least(parts, K3S_BASE_FROM, K3S_BASE_MINOR),
        "base_minimum": K3S_BASE_MINIMUM,
    }


def runwasi_build(version, arch):
    """runwasi build facts: the WASI-NN cargo feature and the static WasmEdge archive to build against."""
    entry = RUNWASI.get(str(version))
    if entry is None:
        return {
            "errors": [
                "runwasi_version=%s is not in the release catalog (known: %s)"
                % (version, ", ".join(sorted(RUNWASI)))
            ]
        }
    static = entry["wasmedge_static"]
    asset = wasmedge_static_asset(static, arch)
    return {
        "errors": [],
        "preload": entry["preload"],
        "toolchain": entry["toolchain"],
        "nn_feature": entry["nn_feature"],
        "wasmedge_static_version": static,
        "static_asset": asset,
        "static_path": release_path(static, asset),
        "checksum_file": checksum_file(static),
    }


def crun_json_package(version):
    """The Debian/Ubuntu development package of the JSON library crun <version> builds against."""
    parts = version_key(str(version))[:2]
    library = "json-c" if parts >= version_key(CRUN_JSON_C_FROM) else "yajl"
    return CRUN_JSON_PACKAGES[library]
