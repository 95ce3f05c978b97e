"""Make the collection importable as ansible_collections.edgewasm.llamaedge.

scripts/setup.sh links the repository into $EDGEWASM_COLLECTIONS (default
.cache/collections) as ansible_collections/edgewasm/llamaedge.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLLECTIONS = Path(os.environ.get("EDGEWASM_COLLECTIONS", REPO / ".cache" / "collections"))

if not (COLLECTIONS / "ansible_collections" / "edgewasm" / "llamaedge").exists():
    raise RuntimeError(
        f"{COLLECTIONS}/ansible_collections/edgewasm/llamaedge is missing: run scripts/setup.sh first"
    )
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))
