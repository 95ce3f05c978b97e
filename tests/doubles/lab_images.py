"""STAND-IN k3s air-gap images for the lab (edgewasm stand-in, not k3s's images).

k3s imports every archive in <data-dir>/agent/images when it starts; the k3s role copies the release's
k3s-airgap-images-<arch>.tar.zst there. The lab's nodes reach no registry, so the lab's mirror carries, in
that file, the images its pods run, built here with podman:

- localhost/edgewasm-standin-pause:1  the sandbox ("pause") image: a static C program that sleeps until
  SIGTERM (cri_runtime.PAUSE_C), named by the lab inventory's `pause-image`.

The archive (docker-archive of all images, zstd-compressed) is cached under CACHE keyed by a hash of its
recipe: a second `make lab` reuses it.

    python tests/doubles/lab_images.py --cache DIR     # prints the archive's path
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cri_runtime

PAUSE = "localhost/edgewasm-standin-pause:1"


def recipe() -> str:
    return hashlib.sha256((Path(__file__).read_text() + cri_runtime.PAUSE_C).encode()).hexdigest()[:16]


def build(cache: Path) -> Path:
    """The zstd-compressed docker-archive of the lab's images, built unless cached."""
    archive = cache / f"lab-images-{recipe()}.tar.zst"
    if archive.exists():
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        plain = cri_runtime.build_image(Path(work) / "pause", PAUSE)
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
