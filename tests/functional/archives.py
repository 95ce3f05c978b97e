"""Unpacking the archives the tests build themselves (the collection artifact, the balancer's sdist)."""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath


def extract(archive: tarfile.TarFile, root: Path) -> None:
    """Everything in `archive` under `root`, with tarfile's "data" filter where this Python has it (3.11.4 and
    later: Debian 12's python3 is 3.11.2); before that, every member is checked the way the filter would refuse
    the dangerous ones: a path that leaves `root`, a link, a device."""
    if hasattr(tarfile, "data_filter"):
        archive.extractall(root, filter="data")
        return
    for member in archive.getmembers():
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"{member.name!r} would be written outside {root}")
        if not (member.isfile() or member.isdir()):
            raise ValueError(f"{member.name!r} is a link or a special file")
    archive.extractall(root)  # noqa: S202 - every member checked just above
