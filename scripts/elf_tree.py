"""Print the shared-library tree of ELF files as glibc's loader would resolve it (no ldd, nothing run).

    python scripts/elf_tree.py [--root DIR] [--ld-library-path A:B] [--exclude SONAME] [--hwcaps LEVEL] FILE...

A developer's view of what wasmedge_plugin_deps resolves on a node (the same resolver); exit 1 when a
library is missing, 2 on a bad input file. Kept out of module_utils: modules never ship it.
"""

from __future__ import annotations

import argparse
import sys

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import elf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/elf_tree.py",
        description="Print the shared-library tree of ELF files as glibc's loader would resolve it (no ldd).",
    )
    parser.add_argument("files", nargs="+", help="ELF files (paths inside --root)")
    parser.add_argument("--root", default="/", help="resolve inside this filesystem tree")
    parser.add_argument("--ld-library-path", default="", help="colon-separated LD_LIBRARY_PATH to model")
    parser.add_argument("--exclude", action="append", default=[], help="soname the process already provides")
    parser.add_argument("--hwcaps", action="append", default=[], help="glibc-hwcaps level to search first")
    args = parser.parse_args(argv)
    try:
        resolver = elf.Resolver(
            root=args.root,
            ld_library_path=args.ld_library_path.split(":"),
            preloaded=args.exclude,
            hwcaps=args.hwcaps,
        )
        status = 0
        for path in args.files:
            resolution = resolver.resolve(path)
            sys.stdout.write(elf.format_tree(resolution) + "\n")
            status = status or (1 if resolution.missing else 0)
    except elf.ResolverError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
