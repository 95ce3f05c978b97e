"""Install collections offline from the ``ansible`` bundle wheel on PyPI.

Galaxy is not reachable from our machines, but the ``ansible`` package on PyPI
ships every collection of the community bundle under ``ansible_collections/``.
This extracts only the collections named in a requirements file (and the
dependencies galaxy.yml declares) into ``<dest>/ansible_collections/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import yaml


def wanted_collections(requirements: Path, galaxy: Path | None) -> set[str]:
    names: set[str] = set()
    data = yaml.safe_load(requirements.read_text()) or {}
    for entry in data.get("collections", []):
        names.add(entry["name"] if isinstance(entry, dict) else str(entry))
    if galaxy and galaxy.exists():
        names.update((yaml.safe_load(galaxy.read_text()) or {}).get("dependencies") or {})
    return names


def extract(wheel: Path, names: set[str], dest: Path) -> dict[str, str]:
    prefixes = {f"ansible_collections/{n.replace('.', '/')}/": n for n in names}
    found: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            for prefix, name in prefixes.items():
                if info.filename.startswith(prefix):
                    zf.extract(info, dest)
                    if info.filename == prefix + "MANIFEST.json":
                        manifest = json.loads(zf.read(info))
                        found[name] = manifest["collection_info"]["version"]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wheel", type=Path, required=True)
    parser.add_argument("--requirements", type=Path, required=True)
    parser.add_argument("--galaxy", type=Path, default=Path(__file__).resolve().parents[1] / "galaxy.yml")
    parser.add_argument("--dest", type=Path, required=True)
    args = parser.parse_args()
    names = wanted_collections(args.requirements, args.galaxy)
    found = extract(args.wheel, names, args.dest)
    for name in sorted(found):
        print(f"[setup] collection {name} {found[name]}")
    missing = sorted(names - set(found))
    if missing:
        print(f"[setup] not in {args.wheel.name}: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
