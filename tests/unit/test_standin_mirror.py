"""The stand-in release mirror is generated from the release catalog: it cannot disagree with the roles."""

from __future__ import annotations

import hashlib
import platform
import tarfile
from pathlib import Path

import pytest
from doubles import release_mirror

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import release_catalog as catalog


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    release_mirror.build(root, ["0.14.1", "0.15.0"])
    return root


def test_the_stand_ins_load_the_collections_own_catalog_file():
    assert Path(release_mirror.catalog.__file__).resolve() == Path(catalog.__file__).resolve()


@pytest.mark.parametrize("version", ["0.14.1", "0.15.0"])
def test_every_asset_the_catalog_lists_and_nothing_else(mirror, version):
    arch = catalog.ARCHES[platform.machine()]["wasmedge"]
    release = catalog.wasmedge_release(version)
    expected = {catalog.wasmedge_asset(version, d, arch) for d in release["dists"]}
    expected |= {
        catalog.ggml_asset(version, v, d, arch)
        for d in release["dists"]
        for v in catalog.ggml_variants(version, d, arch)
    }
    if version == catalog.RUNWASI[catalog.DEFAULT_RUNWASI]["wasmedge_static"]:
        expected.add(catalog.wasmedge_static_asset(version, arch))
    expected.add(catalog.CHECKSUM_FILE)
    assert {p.name for p in (mirror / version).iterdir()} == expected


@pytest.mark.parametrize("version", ["0.14.1", "0.15.0"])
def test_sha256sum_lists_every_asset_with_its_checksum(mirror, version):
    text = (mirror / version / catalog.CHECKSUM_FILE).read_text()
    assets = [p for p in (mirror / version).iterdir() if p.name != catalog.CHECKSUM_FILE]
    assert len(text.splitlines()) == len(assets)
    for asset in assets:
        assert catalog.parse_checksums(text, asset.name) == hashlib.sha256(asset.read_bytes()).hexdigest()


@pytest.mark.parametrize(("version", "strip"), [("0.14.1", 1), ("0.15.0", 0)])
def test_archives_have_their_versions_real_layout(mirror, version, strip):
    arch = catalog.ARCHES[platform.machine()]["wasmedge"]
    archive = mirror / version / catalog.wasmedge_asset(version, "manylinux_2_28", arch)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    layout = catalog.archive_root(names, version)
    assert (layout["strip"], layout["error"]) == (strip, "")
    assert layout["layout"] == catalog.wasmedge_release(version)["layout"]
