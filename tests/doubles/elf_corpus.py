"""A corpus of real ELF files on this machine, for comparing resolvers.

Programs and libraries change as packages are installed, so the corpus is
built when a test or benchmark runs, and every tool is compared on the same
list in the same run.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from elftools.elf.elffile import ELFFile

PROGRAM_DIRS = ("/usr/bin", "/usr/sbin")
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu")
# Trees where RUNPATH/RPATH with $ORIGIN is common.
ORIGIN_TREES = ("/usr/lib/jvm", "/usr/lib/libreoffice", "/usr/lib/firefox-esr", "/opt")


def _is_dynamic_elf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(20)
    except OSError:
        return False
    # ET_EXEC (2) or ET_DYN (3)
    return head[:4] == b"\x7fELF" and head[16] in (2, 3)


def _candidates(directory: str, pattern: str) -> list[Path]:
    base = Path(directory)
    if not base.is_dir():
        return []
    return sorted(p for p in base.glob(pattern) if p.is_file() and not p.is_symlink() and _is_dynamic_elf(p))


def _has_origin(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            for seg in ELFFile(handle).iter_segments():
                if seg["p_type"] == "PT_DYNAMIC":
                    for tag in seg.iter_tags():
                        if tag.entry.d_tag in ("DT_RUNPATH", "DT_RPATH") and "ORIGIN" in (
                            getattr(tag, "runpath", "") or getattr(tag, "rpath", "")
                        ):
                            return True
    except Exception:
        return False
    return False


def ldd(path: Path, env: dict | None = None) -> tuple[set[str], set[str]] | None:
    """(real paths, missing names) from ldd, or None when ldd has no list for it."""
    proc = subprocess.run(["ldd", str(path)], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0 or "statically linked" in proc.stdout:
        return None
    found, missing = set(), set()
    for line in proc.stdout.splitlines():
        if "linux-vdso" in line or "linux-gate" in line:
            continue
        if "not found" in line:
            missing.add(line.split()[0])
            continue
        m = re.search(r"=>\s+(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            found.add(os.path.realpath(m.group(1)))
    return found, missing


def build(programs: int = 40, libraries: int = 40, origin: int = 20) -> list[Path]:
    """Deterministic corpus: the first N dynamic programs, libraries and $ORIGIN users."""
    files: list[Path] = []
    for d in PROGRAM_DIRS:
        files += _candidates(d, "*")[: programs // len(PROGRAM_DIRS) + programs % 2]
    libs: list[Path] = []
    for d in LIBRARY_DIRS:
        libs += _candidates(d, "*.so*")
    files += libs[:libraries]
    origin_files: list[Path] = []
    for tree in ORIGIN_TREES:
        for p in _candidates(tree, "**/*.so") + _candidates(tree, "**/bin/*"):
            if len(origin_files) >= origin:
                break
            if _has_origin(p):
                origin_files.append(p)
    files += origin_files
    seen: set[str] = set()
    unique = []
    for p in files:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def origin_users(files: list[Path]) -> list[Path]:
    return [p for p in files if _has_origin(p)]
