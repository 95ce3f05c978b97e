"""The built collection artifact, as a Galaxy user gets it: installed with ansible-galaxy into an empty
path, every role's, module's and filter's documentation reads with ansible-doc from there, and every
relative link in its Markdown resolves inside it (links to files it does not ship would be dead)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from archives import extract

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
        extract(tar, root)
    return root


@pytest.fixture(scope="module")
def installed(tmp_path_factory, artifact) -> Path:
    """The tarball installed with ansible-galaxy into an empty collections path (no dependencies to fetch)."""
    tarball = next(artifact.parent.glob("edgewasm-llamaedge-*.tar.gz"))
    path = tmp_path_factory.mktemp("collections")
    galaxy = Path(sys.executable).with_name("ansible-galaxy")
    subprocess.run(
        [str(galaxy), "collection", "install", "--offline", "-p", str(path), str(tarball)],
        check=True,
        capture_output=True,
        text=True,
        # Only the empty path: the working tree, linked on the suite's collections path, is not "installed".
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(path)},
    )
    return path


def _ansible_doc(installed: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(installed), "ANSIBLE_NOCOLOR": "1"}
    doc = Path(sys.executable).with_name("ansible-doc")
    return subprocess.run(
        [str(doc), *args], capture_output=True, text=True, env=env, check=False, cwd=installed, timeout=300
    )


@pytest.mark.parametrize(
    ("kind", "folder"), [("role", "roles"), ("module", "plugins/modules"), ("filter", None)]
)
def test_installed_collection_documents_every_role_module_and_filter(installed, kind, folder):
    root = installed / "ansible_collections" / "edgewasm" / "llamaedge"
    assert (root / "MANIFEST.json").is_file()
    listed = _ansible_doc(installed, "-t", kind, "--list", "--json", "edgewasm.llamaedge")
    assert listed.returncode == 0, listed.stderr
    names = sorted(json.loads(listed.stdout))
    if folder == "roles":
        expected = sorted(f"edgewasm.llamaedge.{d.name}" for d in (root / folder).iterdir())
    elif folder:
        expected = sorted(f"edgewasm.llamaedge.{f.stem}" for f in (root / folder).glob("*.py"))
    else:
        expected = sorted(f"edgewasm.llamaedge.{f.stem}" for f in (root / "plugins" / "filter").glob("*.yml"))
    assert names == expected
    shown = _ansible_doc(installed, "-t", kind, "--json", *names)
    assert shown.returncode == 0, shown.stderr
    docs = json.loads(shown.stdout)
    assert sorted(docs) == names
    for name, doc in docs.items():
        body = doc.get("doc") or doc.get("entry_points", {}).get("main", {})
        assert body.get("short_description"), f"{name}: no short_description in the installed collection"


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
