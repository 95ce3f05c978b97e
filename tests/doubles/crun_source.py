"""STAND-IN crun source release (not crun): the configure / make / make install interface only.

crun's release tarball is `crun-<V>.tar.gz` with a generated `configure`. This stand-in has the
same top directory, a POSIX-sh `configure` that accepts crun's options and, with
`--with-wasmedge`, checks like crun's does that `wasmedge/wasmedge.h` compiles and that
`-lwasmedge` links (it fails with crun's messages otherwise), and a Makefile that builds a small C
program answering `crun --version` in crun's format, with `+WASM:wasmedge` only when configured
with WasmEdge. It lets the crun_wasmedge role's build path run where crun's real build
dependencies (and a real WasmEdge to build against) are not available.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

MARKER = "edgewasm stand-in, not crun"

CONFIGURE = r"""#!/bin/sh
# __MARKER__: crun's configure interface, nothing else.
prefix=/usr/local
wasmedge=no
for arg in "$@"; do
  case "$arg" in
    --prefix=*) prefix=${arg#--prefix=} ;;
    --with-wasmedge) wasmedge=yes ;;
    --without-wasmedge) wasmedge=no ;;
    --with-*|--without-*|--enable-*|--disable-*) ;;
    *=*) export "$arg" ;;
    *) echo "configure: error: unrecognized option: $arg" >&2; exit 1 ;;
  esac
done
CC=${CC:-cc}
features="+SYSTEMD +SELINUX +APPARMOR +CAP +SECCOMP +EBPF"
: > config.log
if [ "$wasmedge" = yes ]; then
  printf '#include <wasmedge/wasmedge.h>\nint main(void) { return 0; }\n' > conftest.c
  echo "checking for wasmedge/wasmedge.h"
  if ! $CC $CPPFLAGS -c conftest.c -o conftest.o >>config.log 2>&1; then
    echo "configure: error: *** Missing wasmedge headers" >&2; exit 1
  fi
  printf 'int WasmEdge_VersionGetMajor(void);\nint main(void) { return WasmEdge_VersionGetMajor(); }\n' > conftest.c
  echo "checking for library containing WasmEdge_VersionGetMajor"
  if ! $CC $CPPFLAGS conftest.c -o conftest $LDFLAGS -lwasmedge >>config.log 2>&1; then
    echo "configure: error: *** Missing wasmedge library" >&2; exit 1
  fi
  rm -f conftest conftest.c conftest.o
  features="$features +WASM:wasmedge"
fi
cat > Makefile <<MAKEFILE
prefix = $prefix
CC = $CC
all: crun
crun: crun.c
__TAB__\$(CC) -O2 -DCRUN_VERSION='"__VERSION__"' -DCRUN_FEATURES='"$features +YAJL"' -o crun crun.c
install: crun
__TAB__install -D -m 0755 crun \$(DESTDIR)\$(prefix)/bin/crun
MAKEFILE
echo "config.status: creating Makefile"
"""

CRUN_C = r"""/* __MARKER__ */
#include <stdio.h>
#include <string.h>
const char *edgewasm_standin = "__MARKER__";
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("crun version %s\ncommit: __MARKER__\nrundir: /run/crun\nspec: 1.0.0\n%s\n",
               CRUN_VERSION, CRUN_FEATURES);
        return 0;
    }
    fprintf(stderr, "crun: __MARKER__: only --version is implemented\n");
    return 1;
}
"""


def _add(tar: tarfile.TarFile, name: str, text: str, mode: int) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def build(mirror: Path, version: str) -> Path:
    """Write <mirror>/<version>/crun-<version>.tar.gz and return its path."""
    archive = mirror / version / f"crun-{version}.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    top = f"crun-{version}"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text, mode in (
            ("configure", CONFIGURE, 0o755),
            ("crun.c", CRUN_C, 0o644),
            ("README.edgewasm", f"{MARKER}\n", 0o644),
        ):
            body = text.replace("__MARKER__", MARKER).replace("__VERSION__", version)
            body = body.replace("__TAB__", "\t")  # make recipes start with a tab
            _add(tar, f"{top}/{name}", body, mode)
    return archive
