"""The balancer's Python packages, built as PyPI users and packagers get them.

The sdist and the wheel are built from a copy of balancer/ through setuptools' PEP 517 hooks (the
backend pyproject.toml names), without network or build isolation: the venv's pinned setuptools is
the one pyproject.toml asks for. Then the sdist's own tests run from the unpacked sdist, and the
wheel's console script is installed and asked for --help.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from archives import extract

REPO = Path(__file__).resolve().parents[2]
BALANCER = REPO / "balancer"
TEST_DOUBLES = ("conftest.py", "fake_kube.py", "hostile.py", "standin_backend.py")

pytestmark = pytest.mark.slow


def _hook(source: Path, hook: str, out: Path) -> Path:
    code = f"import setuptools.build_meta as b; print(b.{hook}({str(out)!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=source, capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("balancer-dist")
    source = work / "source"
    shutil.copytree(BALANCER, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    out = work / "dist"
    out.mkdir()
    return {
        "sdist": _hook(source, "build_sdist", out),
        "wheel": _hook(source, "build_wheel", out),
        "work": work,
    }


def _metadata(text: str) -> email.message.Message:
    return email.parser.Parser().parsestr(text)


def test_license_copy_is_the_collections_license():
    assert (BALANCER / "LICENSE").read_bytes() == (REPO / "LICENSE").read_bytes()


def test_build_requires_the_setuptools_that_understands_spdx_licenses():
    text = (BALANCER / "pyproject.toml").read_text()
    assert 'requires = ["setuptools>=77"]' in text


def test_sdist_carries_license_metadata_and_the_whole_test_suite(built):
    with tarfile.open(built["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
        top = sdist.getnames()[0].split("/", 1)[0]
        pkg_info = sdist.extractfile(f"{top}/PKG-INFO").read().decode()
    assert "LICENSE" in names
    for double in TEST_DOUBLES:
        assert f"tests/{double}" in names, f"tests/{double} missing from the sdist"
    assert not [name for name in names if "__pycache__" in name]
    meta = _metadata(pkg_info)
    assert meta["License-Expression"] == "GPL-3.0-or-later"
    assert meta.get_all("License-File") == ["LICENSE"]


def test_wheel_carries_the_license_file(built):
    with zipfile.ZipFile(built["wheel"]) as wheel:
        names = wheel.namelist()
        dist_info = next(name.split("/")[0] for name in names if name.split("/")[0].endswith(".dist-info"))
        meta = _metadata(wheel.read(f"{dist_info}/METADATA").decode())
        assert wheel.read(f"{dist_info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
    assert meta["License-Expression"] == "GPL-3.0-or-later"
    assert not [name for name in names if name.startswith("tests/")], "tests must not be installed"


def test_tests_run_from_the_unpacked_sdist(built):
    unpacked = built["work"] / "unpacked"
    with tarfile.open(built["sdist"]) as sdist:
        extract(sdist, unpacked)
    (root,) = unpacked.iterdir()
    # Two of the suite's files, which need conftest.py and the doubles: enough to prove the sdist is
    # self-contained (the whole suite is the balancer stage's job).
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "tests/test_pool.py", "tests/test_operations.py"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout


def test_console_script_names_itself_in_help(built):
    prefix = built["work"] / "prefix"
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-index",
    ]
    subprocess.run(
        [*pip, "--prefix", str(prefix), str(built["wheel"])],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (site,) = prefix.glob("lib/python3*/site-packages")
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [str(prefix / "bin" / "edgewasm-balancer"), "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("usage: edgewasm-balancer "), done.stdout[:200]
    module = subprocess.run(
        [sys.executable, "-m", "edgewasm_balancer", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert module.stdout.startswith("usage: python -m edgewasm_balancer "), module.stdout[:200]
