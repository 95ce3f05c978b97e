"""The built collection artifact, as a Galaxy user gets it: every relative link in its Markdown resolves
inside the artifact (links to files it does not ship would be dead once installed)."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    galaxy = Path(sys.executable).with_name("ansible-galaxy")
    subprocess.run(
        [str(galaxy), "collection", "build", "--output-path", str(out), str(REPO)],
        check=True,
        capture_output=True,
        text=True,
    )
    tarball = next(out.glob("edgewasm-llamaedge-*.tar.gz"))
    root = out / "installed"
    with tarfile.open(tarball) as tar:
        tar.extractall(root, filter="data")
    return root


def test_every_relative_markdown_link_resolves_in_the_artifact(artifact):
    documents = sorted(artifact.rglob("*.md"))
    assert any(d.name == "README.md" and d.parent == artifact for d in documents)
    dead = []
    for doc in documents:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            if not path.exists() or artifact.resolve() not in (path, *path.parents):
                dead.append(f"{doc.relative_to(artifact)} -> {target}")
    assert dead == []
