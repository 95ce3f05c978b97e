"""One version everywhere a release names it.

The balancer role's default image is the image released with the collection, so its tag must be the
collection's version; the balancer package (pyproject and __version__) is released with it too.
A release bumps galaxy.yml and this test names every other place that must follow.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _collection_version() -> str:
    return yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]


def test_balancer_package_version_is_the_collections():
    version = _collection_version()
    project = tomllib.loads((REPO / "balancer" / "pyproject.toml").read_text())["project"]
    assert project["version"] == version
    init = (REPO / "balancer" / "src" / "edgewasm_balancer" / "__init__.py").read_text()
    assert re.search(r'^__version__ = "([^"]+)"$', init, re.MULTILINE)[1] == version


def test_default_balancer_image_is_tagged_with_the_collections_version():
    version = _collection_version()
    default = yaml.safe_load((REPO / "roles" / "balancer" / "defaults" / "main.yml").read_text())[
        "balancer_image"
    ]
    spec = yaml.safe_load((REPO / "roles" / "balancer" / "meta" / "argument_specs.yml").read_text())
    documented = spec["argument_specs"]["main"]["options"]["balancer_image"]["default"]
    assert default == documented
    assert default.rsplit(":", 1)[1] == version
    readme = (REPO / "roles" / "balancer" / "README.md").read_text()
    assert f"`{default}`" in readme
    assert not re.search(r"edgewasm-balancer:(?!" + re.escape(version) + r"\b)\d+\.\d+\.\d+", readme)
