# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A WebAssembly OCI image from one .wasm file, built without docker, buildah or a registry.

The image: one uncompressed layer holding the wasm at ``/<entrypoint>``, a config with ``os: wasip1``,
``architecture: wasm`` and ``Entrypoint: [<entrypoint>]`` (what runwasi's shims and crun's WasmEdge
handler run), written as an OCI image layout in a tar archive that ``ctr images import`` reads.

Deterministic: every byte is chosen here (tar headers with fixed owner, mode and mtime 0, files in a
fixed order, canonical JSON, no compression, so no zlib version can change a digest): the same wasm and
settings give the same manifest digest on every run and machine.

The wasm is checked before anything is written: a core module (magic and version 1), well-formed
sections, bounded size; its imports are read so the image can say what the runtime must provide
(``wasi:logging``, which runwasi's WasmEdge shim does not, and ``wasi_ephemeral_nn``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
# containerd's import names an image from this annotation of its index entry (client/import.go imageName).
CONTAINERD_NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"
# crun runs an image's entrypoint with its WasmEdge handler when this reaches it (podman and buildah copy it
# from the image; on Kubernetes the pod annotation of the same name does, which llama_backend sets).
CRUN_VARIANT = "module.wasm.image/variant"
WASI_LOGGING = "io.edgewasm.llamaedge.wasi-logging"
WASI_NN = "io.edgewasm.llamaedge.wasi-nn"

MAX_WASM_BYTES = 256 << 20  # llama-api-server.wasm is about 10-30 MB; the image is built in memory
MAX_IMPORTS = 100000
MAX_NAME_BYTES = 64 << 10
WASM_MAGIC = b"\0asm"
CORE_VERSION = b"\x01\0\0\0"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(r"^%s(?::[0-9]+)?(?:/%s)*\Z" % (_COMPONENT, _COMPONENT))
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_ENTRYPOINT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}\.wasm\Z")


class WasmError(Exception):
    """The wasm file cannot be put in an image (the message names the file and what is wrong)."""


# -- the wasm --------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, data, path):
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, what):
        raise WasmError("%s is not a valid WebAssembly module: %s at byte %d" % (self.path, what, self.pos))

    def byte(self):
        if self.pos >= len(self.data):
            self.fail("unexpected end")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uleb(self, bits=32):
        result = shift = 0
        while True:
            value = self.byte()
            result |= (value & 0x7F) << shift
            shift += 7
            if not value & 0x80:
                break
            if shift >= bits + 7:
                self.fail("LEB128 integer too long")
        if result >> bits:
            self.fail("LEB128 integer out of range")
        return result

    def take(self, size):
        if size > len(self.data) - self.pos:
            self.fail("a length of %d runs past the end" % size)
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def name(self):
        size = self.uleb()
        if size > MAX_NAME_BYTES:
            self.fail("a name of %d bytes" % size)
        try:
            return self.take(size).decode("utf-8")
        except UnicodeDecodeError:
            self.fail("a name that is not UTF-8")

    def limits(self):
        flags = self.byte()
        if flags > 0x07:
            self.fail("limits flags 0x%02x" % flags)
        bits = 64 if flags & 0x04 else 32
        self.uleb(bits)
        if flags & 0x01:
            self.uleb(bits)


def _import_desc(reader):
    kind = reader.byte()
    if kind == 0x00:  # function: type index
        reader.uleb()
    elif kind == 0x01:  # table: reference type, limits
        reader.byte()
        reader.limits()
    elif kind == 0x02:  # memory
        reader.limits()
    elif kind == 0x03:  # global: value type, mutability
        reader.byte()
        if reader.byte() > 1:
            reader.fail("global mutability")
    elif kind == 0x04:  # tag (exception handling): attribute, type index
        reader.byte()
        reader.uleb()
    else:
        reader.fail("import kind 0x%02x" % kind)


def _imports(section, path):
    reader = _Reader(section, path)
    count = reader.uleb()
    if count > MAX_IMPORTS:
        reader.fail("%d imports" % count)
    modules = []
    for _index in range(count):
        module = reader.name()
        reader.name()
        _import_desc(reader)
        if module not in modules:
            modules.append(module)
    if reader.pos != len(section):
        reader.fail("%d stray bytes after the imports" % (len(section) - reader.pos))
    return modules


def wasm_imports(data, path="the wasm"):
    """The module names a core WebAssembly module imports from, in order; WasmError when it is not one."""
    if data[:4] != WASM_MAGIC:
        raise WasmError("%s is not a WebAssembly module (it does not start with \\0asm)" % path)
    if data[4:8] != CORE_VERSION:
        raise WasmError(
            "%s is not a core WebAssembly module (version bytes %s, a component or another format): "
            "llama-api-server.wasm is a wasm32-wasip1 core module" % (path, data[4:8].hex() or "missing")
        )
    reader = _Reader(data, path)
    reader.pos = 8
    modules = []
    while reader.pos < len(data):
        section_id = reader.byte()
        size = reader.uleb()
        body = reader.take(size)
        if section_id > 13:
            reader.fail("section id %d" % section_id)
        if section_id == 2:
            modules.extend(m for m in _imports(body, path) if m not in modules)
    return modules


def read_wasm(path, max_bytes=MAX_WASM_BYTES):
    """The bytes of the wasm at ``path``, bounded and checked; WasmError otherwise."""
    try:
        size = os.stat(path).st_size
    except (IOError, OSError) as exc:
        raise WasmError("cannot read the wasm %s: %s" % (path, exc.strerror or exc)) from None
    if not os.path.isfile(path):
        raise WasmError("the wasm %s is not a regular file" % path)
    if size > max_bytes:
        raise WasmError("the wasm %s has %d bytes, more than max_bytes=%d" % (path, size, max_bytes))
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise WasmError("the wasm %s grew past max_bytes=%d while it was read" % (path, max_bytes))
    return data


def runtime_needs(modules):
    """What a runtime must provide for these imports."""
    return {
        "wasi_logging": any(m.startswith("wasi:logging") or m == "wasi_logging" for m in modules),
        "wasi_nn": "wasi_ephemeral_nn" in modules,
    }


# -- the image -------------------------------------------------------------------------------------
def _json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _descriptor(media_type, blob, annotations=None):
    desc = {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }
    if annotations:
        desc["annotations"] = annotations
    return desc


def _tar_entry(tar, name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _tar_dir(tar, name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info)


def _tar_bytes(entries):
    """A USTAR archive of (name, bytes, mode) entries, byte for byte the same on every run."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, mode in entries:
            if data is None:
                _tar_dir(tar, name)
            else:
                _tar_entry(tar, name, data, mode)
    return out.getvalue()


def settings_errors(repository, tag, entrypoint):
    errors = []
    if not _REPOSITORY.match(repository or ""):
        errors.append(
            "name=%r must be an image repository such as localhost/llamaedge/llama-api-server (lower case, "
            "no tag)" % repository
        )
    if not _TAG.match(tag or ""):
        errors.append("tag=%r must be an image tag: letters, digits, '_', '.' and '-', at most 128" % tag)
    if not _ENTRYPOINT.match(entrypoint or ""):
        errors.append("entrypoint=%r must be a file name ending in .wasm" % entrypoint)
    return errors


def build(wasm, repository, tag, entrypoint="llama-api-server.wasm", annotations=None, path="the wasm"):
    """The image of ``wasm`` (bytes) as an OCI layout archive: a dict with ``archive`` (bytes), ``digest``
    (the manifest's), ``reference`` (repository:tag), ``pinned`` (repository:tag@digest), ``config``,
    ``manifest`` and ``needs`` (wasi_logging, wasi_nn)."""
    modules = wasm_imports(wasm, path)
    needs = runtime_needs(modules)
    layer = _tar_bytes([(entrypoint, wasm, 0o755)])
    config = {
        "architecture": "wasm",
        "os": "wasip1",
        "config": {"Entrypoint": [entrypoint]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    config_blob = _json(config)
    manifest_annotations = {
        CRUN_VARIANT: "compat-smart",
        WASI_LOGGING: "true" if needs["wasi_logging"] else "false",
        WASI_NN: "true" if needs["wasi_nn"] else "false",
        "org.opencontainers.image.title": entrypoint[: -len(".wasm")],
        "org.opencontainers.image.version": tag,
    }
    manifest_annotations.update(annotations or {})
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": _descriptor(MEDIA_CONFIG, config_blob),
        "layers": [_descriptor(MEDIA_LAYER, layer)],
        "annotations": manifest_annotations,
    }
    manifest_blob = _json(manifest)
    reference = "%s:%s" % (repository, tag)
    entry = _descriptor(MEDIA_MANIFEST, manifest_blob, {CONTAINERD_NAME: reference, REF_NAME: tag})
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [entry]}
    blobs = sorted(
        {
            _descriptor("", blob)["digest"][len("sha256:") :]: blob
            for blob in (layer, config_blob, manifest_blob)
        }.items()
    )
    archive = _tar_bytes(
        [
            ("oci-layout", _json({"imageLayoutVersion": "1.0.0"}), 0o644),
            ("index.json", _json(index), 0o644),
            ("blobs", None, 0),
            ("blobs/sha256", None, 0),
        ]
        + [("blobs/sha256/" + name, blob, 0o644) for name, blob in blobs]
    )
    return {
        "archive": archive,
        "digest": entry["digest"],
        "reference": reference,
        "pinned": "%s@%s" % (reference, entry["digest"]),
        "repository": repository,
        "tag": tag,
        "config": config,
        "manifest": manifest,
        "needs": needs,
        "imports": modules,
    }


def archive_sha256(path):
    """The sha256 of a file already there, or None."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except (IOError, OSError):
        return None
    return digest.hexdigest()


def write_atomic(path, data, mode=0o644):
    """``data`` at ``path``, through a temporary file in the same directory and a rename."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    handle, temp = tempfile.mkstemp(prefix=".partial-", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temp, mode)
        os.rename(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
