"""The tests' own unpacking helper (archives.extract) on Pythons without tarfile's "data" filter (before 3.11.4,
Debian 12's 3.11.2): what the filter would refuse is refused by hand."""

from __future__ import annotations

import io
import tarfile

import archives
import pytest


def _archive(*members: tarfile.TarInfo) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size))
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


def _file(name: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.size = 1
    return member


def _link(name: str, target: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = tarfile.SYMTYPE, target
    return member


@pytest.fixture(params=["with the filter", "without it"])
def old_python(request, monkeypatch) -> bool:
    if request.param == "without it":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
        return True
    return False


def test_a_plain_archive_is_unpacked(tmp_path, old_python):
    with _archive(_file("a/b.txt")) as tar:
        archives.extract(tar, tmp_path)
    assert (tmp_path / "a" / "b.txt").read_bytes() == b"x"


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink"])
def test_nothing_is_written_outside_the_root_nor_linked_out_of_it(tmp_path, old_python, kind):
    """The filter refuses these or (a leading slash) strips them into the root; without it they are refused."""
    root = tmp_path / "root"
    outside = tmp_path / "evil"
    member = {
        "parent": _file("../evil"),
        "absolute": _file(str(outside)),  # an absolute path, still inside this test's own directory
        "symlink": _link("a/link", str(outside)),
    }[kind]
    try:
        with _archive(member) as tar:
            archives.extract(tar, root)
    except (ValueError, tarfile.TarError):
        pass
    else:
        assert not old_python, "unpacked without the filter"
    assert not outside.exists()
    assert not (root / "a" / "link").is_symlink()
