"""Build small ELF fixtures with gcc for the resolver's tests and the stand-ins.

Every fixture is a real shared library or executable produced by the system
toolchain, so ``ldd`` can be used as the reference on the same files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

EM_AARCH64 = 183
EM_X86_64 = 62


def shared_lib(
    out: Path,
    soname: str | None = None,
    needed: list[Path | str] = (),
    rpath: str | None = None,
    runpath: str | None = None,
    symbol: str | None = None,
    extra_flags: list[str] = (),
) -> Path:
    """gcc-build a shared library; ``needed`` entries become DT_NEEDED in order."""
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(out.suffix + ".c")
    fn = symbol or "fn_" + "".join(c if c.isalnum() else "_" for c in out.name)
    src.write_text(f"int {fn}(void) {{ return 42; }}\n")
    cmd = ["gcc", "-shared", "-fPIC", "-o", str(out), str(src), "-Wl,--no-as-needed"]
    if soname:
        cmd.append(f"-Wl,-soname,{soname}")
    cmd += _path_flags(rpath, runpath)
    cmd += [str(n) for n in needed]
    cmd += list(extra_flags)
    subprocess.run(cmd, check=True, capture_output=True)
    src.unlink()
    return out


def executable(
    out: Path, needed: list[Path | str] = (), rpath: str | None = None, runpath: str | None = None
) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".c")
    src.write_text("int main(void) { return 0; }\n")
    cmd = ["gcc", "-o", str(out), str(src), "-Wl,--no-as-needed"]
    cmd += _path_flags(rpath, runpath)
    cmd += [str(n) for n in needed]
    subprocess.run(cmd, check=True, capture_output=True)
    src.unlink()
    return out


def _path_flags(rpath: str | None, runpath: str | None) -> list[str]:
    if rpath is not None and runpath is not None:
        raise ValueError("gcc writes either RPATH or RUNPATH")
    if rpath is not None:
        return ["-Wl,--disable-new-dtags", f"-Wl,-rpath,{rpath}"]
    if runpath is not None:
        return ["-Wl,--enable-new-dtags", f"-Wl,-rpath,{runpath}"]
    return []


def retarget(src: Path, dest: Path, machine: int | None = None, elfclass: int | None = None) -> Path:
    """Copy an ELF file, changing its e_machine or EI_CLASS byte: a foreign or
    wrong-class candidate as the loader sees it (header checks come first)."""
    data = bytearray(src.read_bytes())
    if elfclass is not None:
        data[4] = {32: 1, 64: 2}[elfclass]
    if machine is not None:
        data[18:20] = machine.to_bytes(2, "little")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(bytes(data))
    return dest


def symlink_chain(target: Path, *names: str) -> list[Path]:
    """names[0] -> names[1] -> ... -> target, all relative links in target's directory."""
    links = []
    previous = target.name
    for name in reversed(names):
        link = target.parent / name
        link.symlink_to(previous)
        links.append(link)
        previous = name
    return list(reversed(links))
