"""Resolver vs ldd vs pax-utils' lddtree on the same real files, in one run.

    make bench-resolver        (or: python benchmarks/resolver.py [--repeat N])

Prints per-file times for the slowest files, totals and ratios. ldd runs once
per file (it cannot take several). lddtree runs once over the whole list
(it caches nothing between files either way). Our resolver runs cold (a new
Resolver per file, like a module run on one plugin) and warm (one Resolver for
the whole list, sharing parsed files, like one module call with many plugins).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, os.environ.get("EDGEWASM_COLLECTIONS", str(REPO / ".cache" / "collections")))

from doubles import elf_corpus as corpus  # noqa: E402

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import elf  # noqa: E402

LDDTREE = ["/usr/bin/python3", "/usr/bin/lddtree"]


def time_ldd(files: list[Path]) -> tuple[float, dict[Path, float]]:
    per_file = {}
    for f in files:
        start = time.perf_counter()
        subprocess.run(["ldd", str(f)], capture_output=True, check=False)
        per_file[f] = time.perf_counter() - start
    return sum(per_file.values()), per_file


def time_lddtree(files: list[Path]) -> float:
    start = time.perf_counter()
    subprocess.run([*LDDTREE, "-l", *map(str, files)], capture_output=True, check=False)
    return time.perf_counter() - start


def time_resolver_cold(files: list[Path]) -> tuple[float, dict[Path, float]]:
    per_file = {}
    for f in files:
        start = time.perf_counter()
        elf.Resolver().resolve(str(f))
        per_file[f] = time.perf_counter() - start
    return sum(per_file.values()), per_file


def time_resolver_warm(files: list[Path]) -> float:
    start = time.perf_counter()
    resolver = elf.Resolver()
    for f in files:
        resolver.resolve(str(f))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool; the best is reported")
    args = parser.parse_args()
    if not shutil.which("ldd") or not Path(LDDTREE[1]).exists():
        print("needs ldd and pax-utils' lddtree (apt-get install pax-utils python3-pyelftools)")
        return 2
    files = [f for f in corpus.build() if corpus.ldd(f) is not None]
    print(
        f"corpus: {len(files)} files ({len(corpus.origin_users(files))} with $ORIGIN), best of {args.repeat} runs"
    )
    ldd_runs = [time_ldd(files) for _run in range(args.repeat)]
    ldd_total, ldd_per = min(ldd_runs, key=lambda r: r[0])
    lddtree_total = min(time_lddtree(files) for _run in range(args.repeat))
    cold_runs = [time_resolver_cold(files) for _run in range(args.repeat)]
    cold_total, cold_per = min(cold_runs, key=lambda r: r[0])
    warm_total = min(time_resolver_warm(files) for _run in range(args.repeat))

    print("\nslowest files for the resolver (cold), ms:  resolver   ldd")
    for f in sorted(files, key=lambda p: -cold_per[p])[:10]:
        print(f"  {str(f)[-60:]:60} {cold_per[f] * 1000:8.2f} {ldd_per[f] * 1000:6.2f}")
    print("\ntotals over the corpus:")
    rows = [
        ("ldd (one process per file)", ldd_total),
        ("lddtree (one process, all files)", lddtree_total),
        ("resolver cold (new Resolver per file)", cold_total),
        ("resolver warm (one Resolver, all files)", warm_total),
    ]
    for name, total in rows:
        print(f"  {name:42} {total:7.3f} s  {total / len(files) * 1000:7.2f} ms/file")
    print("\nratios (>1 means the resolver is faster):")
    print(f"  lddtree / resolver cold  {lddtree_total / cold_total:6.2f}")
    print(f"  lddtree / resolver warm  {lddtree_total / warm_total:6.2f}")
    print(f"  ldd / resolver cold      {ldd_total / cold_total:6.2f}")
    print(f"  ldd / resolver warm      {ldd_total / warm_total:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
