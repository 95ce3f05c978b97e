"""STAND-IN models for the lab and the deploy tests (edgewasm stand-in, not the seed's Llama/Qwen weights).

The lab deploys the seed's three backends (inventories/lab/hosts.yml) on the upstream files' names; each is a
tiny but real llama model that llama.cpp loads and runs (the shape of the wasi_nn_ggml role's self-test model,
scripts/build_self_test_assets.py, about 0.5 MB: two layers, a byte-level vocabulary), with random weights
seeded by the file's name, so the backends answer differently; general.name says what it stands for. The
models role checks them as it checks real ones (GGUF header, tensor data within the file).

    python tests/doubles/lab_models.py --dir DIR NAME.gguf [NAME.gguf ...]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

ASSETS_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_self_test_assets.py"


def _assets():
    """scripts/build_self_test_assets.py, loaded from its file (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("edgewasm_self_test_assets", ASSETS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(path: Path) -> None:
    """One GGUF model file at path (rewritten only when missing: its bytes never change)."""
    if path.exists():
        return
    partial = path.with_suffix(".partial")
    seed = int.from_bytes(hashlib.sha256(path.name.encode()).digest()[:8], "little")
    _assets().tiny_llama(partial, name=f"edgewasm stand-in for {path.stem} (random weights)", seed=seed)
    partial.rename(path)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        write(args.dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
