"""STAND-IN k3s air-gap images for the lab (edgewasm stand-in, not k3s's images).

k3s imports every archive in <data-dir>/agent/images when it starts; the k3s role copies the release's
k3s-airgap-images-<arch>.tar.zst there. The lab's nodes reach no registry, so the lab's mirror carries, in
that file, the images its pods run, built here with podman:

- PAUSE    the sandbox ("pause") image: a static C program that sleeps until SIGTERM
           (cri_runtime.PAUSE_C), named by the lab inventory's `pause-image`;
- BALANCER the real balancer/Containerfile, on the stand-in Python base (python_base.py).

The backends' image is not here: it is the collection's serving image (a wasm OCI image, built by the
llama_backends role from the stand-in llama-api-server.wasm and imported on the serving nodes), which the
lab's `wasmedge-nn` runtime class runs through the stand-in runwasi shim.

The archive (one docker-archive of both, zstd-compressed) is cached under CACHE, keyed by a hash of
every file that goes into it: a second `make lab` reuses it.

    python tests/doubles/lab_images.py --cache DIR     # prints the archive's path
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cri_runtime  # noqa: E402 - beside this file (sys.path above)
import python_base  # noqa: E402

REPO = HERE.parents[1]
BALANCER_DIR = REPO / "balancer"
PAUSE = "localhost/edgewasm-standin-pause:1"
BALANCER = "localhost/edgewasm-balancer:lab"


def inputs() -> list[Path]:
    """Every file whose content goes into the archive."""
    balancer = [p for p in sorted(BALANCER_DIR.rglob("*")) if p.is_file() and _in_image(p)]
    return [
        Path(__file__),
        HERE / "cri_runtime.py",
        HERE / "python_base.py",
        *balancer,
    ]


def _in_image(path: Path) -> bool:
    relative = path.relative_to(BALANCER_DIR).parts
    return relative[0] in (
        "src",
        "Containerfile",
        "requirements.lock",
        "pyproject.toml",
        "README.md",
        "LICENSE",
    ) and ("__pycache__" not in relative)


def recipe() -> str:
    digest = hashlib.sha256()
    for path in inputs():
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def podman(*args: str) -> None:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, check=False, timeout=1800)
    if result.returncode:
        raise RuntimeError(f"podman {' '.join(args[:2])} failed: {result.stderr.strip()[-2000:]}")


def dangling() -> set[str]:
    listed = subprocess.run(
        ["podman", "images", "-q", "--no-trunc", "--filter", "dangling=true"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(listed.stdout.split())


def build_images(work: Path) -> Path:
    """Build the images; returns the uncompressed docker-archive holding them."""
    cri_runtime.build_image(work / "pause", PAUSE)
    base = python_base.build()
    before = dangling()
    podman("build", "-q", "--build-arg", f"PYTHON_IMAGE={base}", "-t", BALANCER,
           "-f", str(BALANCER_DIR / "Containerfile"), str(BALANCER_DIR))  # fmt: skip
    leftovers = dangling() - before  # the balancer's build stage: hundreds of MB, untagged
    if leftovers:
        podman("rmi", "-f", *leftovers)
    archive = work / "images.tar"
    podman(
        "save",
        "--multi-image-archive",
        "--format",
        "docker-archive",
        "-o",
        str(archive),
        PAUSE,
        BALANCER,
    )
    return archive


def build(cache: Path) -> Path:
    """The zstd-compressed archive of the lab's images, built unless cached."""
    archive = cache / f"lab-images-{recipe()}.tar.zst"
    if archive.exists():
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        plain = build_images(Path(work))
        partial = archive.with_suffix(".partial")
        subprocess.run(["zstd", "-q", "-f", "-T0", str(plain), "-o", str(partial)], check=True)
        partial.rename(archive)
    for old in cache.glob("lab-images-*.tar.zst"):
        if old != archive:
            old.unlink()
    return archive


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, required=True)
    print(build(parser.parse_args().cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
