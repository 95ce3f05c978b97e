"""STAND-IN models for the lab and the deploy tests (edgewasm stand-in, not the seed's Llama/Qwen weights).

The lab deploys the seed's three backends (inventories/lab/group_vars/all.yml); their model files are
tiny but valid GGUF files (one 2x2 zero tensor, the upstream file's name in general.name), written
with PyPI's gguf (llama.cpp's writer) where the models role's `src:` entries point. The models role
checks them as it checks real ones (GGUF header, tensor data within the file).

    python tests/doubles/lab_models.py --dir DIR NAME.gguf [NAME.gguf ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gguf
import numpy as np


def write(path: Path) -> None:
    """One GGUF model file at path (rewritten only when missing: its bytes never change)."""
    if path.exists():
        return
    partial = path.with_suffix(".partial")
    writer = gguf.GGUFWriter(str(partial), "llama")
    writer.add_name(f"edgewasm stand-in for {path.stem}")
    writer.add_context_length(4096)
    writer.add_tensor("w", np.zeros((2, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
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
