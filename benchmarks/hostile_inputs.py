"""The modules' work on hostile input, this tree against an earlier one, in one run: seconds and peak RSS.

    python benchmarks/hostile_inputs.py [--baseline REF] [--limit SECONDS]

Each case runs in a process of its own (peak RSS is its VmHWM, sampled by the parent, so a case killed at
the time limit still has a figure), once with this working tree's collection and once with the collection
as it was at REF (default: the commit before the hardening, ef59eec), extracted with git archive:

- ld.so.conf include loop (s1 -> ., s2 -> ., a.conf: include s1/*.conf s2/*.conf): wasmedge_plugin_deps'
  resolver reads the loader configuration;
- a GGUF whose general.name is 100 MiB of NULs, and a 4 GiB GGUF declaring 330 M metadata entries (both
  sparse): gguf_info;
- a 300 MB SHA256SUM in a mirror directory, and an endless HTTP body on 127.0.0.1: fetch_artifacts (its
  default limits).

A case that runs past --limit is killed and reported as ">LIMIT". Files go to a temporary directory
(sparse: a few MB of disk, but the 300 MB checksum file and the endless body are real bytes, removed after).
"""

from __future__ import annotations

import argparse
import http.server
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fuzzseeds import (  # noqa: E402
    ld_so_conf_include_loop,
    sparse_gguf_with_long_name,
    sparse_gguf_with_many_entries,
)

BASELINE = "ef59eec"
# What each case runs, with the collection on sys.path and argv[1] = the case's input.
CASES = {
    "ld.so.conf include loop": """
from ansible_collections.edgewasm.llamaedge.plugins.module_utils import elf
try:
    print(len(elf.Resolver(root=ARG).conf_dirs()), "directories")
except elf.ResolverError as exc:
    print("refused:", exc)
""",
    "gguf: 100 MiB name": """
from ansible_collections.edgewasm.llamaedge.plugins.modules import gguf_info
import json
try:
    print(len(json.dumps(gguf_info.inspect(ARG))), "bytes of result")
except gguf_info.gguf_header.NotGGUF as exc:
    print("refused:", str(exc)[-80:])
""",
    "gguf: 330 M entries": """
from ansible_collections.edgewasm.llamaedge.plugins.modules import gguf_info
try:
    print(gguf_info.inspect(ARG)["metadata_keys"], "keys")
except gguf_info.gguf_header.NotGGUF as exc:
    print("refused:", str(exc)[-80:])
""",
    "fetch: 300 MB SHA256SUM": """
import json, os
from ansible_collections.edgewasm.llamaedge.plugins.module_utils import release_fetch
from ansible.module_utils.urls import open_url
mirror, work = ARG.split(",")
params = {name: spec.get("default") for name, spec in release_fetch.ARGUMENT_SPEC.items()}
params.update(items=["0.15.1/a.tar.gz"], checksum_files={"0.15.1/a.tar.gz": "0.15.1/SHA256SUM"}, mirror=mirror,
              cache_dir=work + "/cache", lock_file=work + "/lock.json")
try:
    release_fetch.run(params, open_url, check_mode=False)
    print("fetched")
except release_fetch.FetchError as exc:
    print("refused:", str(exc)[:90])
""",
    "fetch: endless body": """
from ansible_collections.edgewasm.llamaedge.plugins.module_utils import release_fetch
from ansible.module_utils.urls import open_url
url, work = ARG.split(",")
params = {name: spec.get("default") for name, spec in release_fetch.ARGUMENT_SPEC.items()}
params.update(items=["endless.tar.gz"], sha256={"endless.tar.gz": "0" * 64}, mirror=url, cache_dir=work + "/cache",
              lock_file=work + "/lock.json")
try:
    release_fetch.run(params, open_url, check_mode=False)
    print("fetched")
except release_fetch.FetchError as exc:
    print("refused:", str(exc)[:90])
""",
}
# The endless body is capped here so the benchmark ends by itself (the old code writes all of it).
ENDLESS_BYTES = 6 << 30


class Endless(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        block = b"\0" * (1 << 20)
        try:
            for _block in range(ENDLESS_BYTES >> 20):
                self.wfile.write(block)
        except OSError:
            pass

    def log_message(self, *_args: object) -> None:
        pass


def extract(ref: str, into: Path) -> Path:
    """The collection as it was at ref, laid out as ansible_collections/edgewasm/llamaedge."""
    root = into / "ansible_collections" / "edgewasm" / "llamaedge"
    root.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "plugins"], capture_output=True, check=True
    )
    tar_path = into / "plugins.tar"
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(root, filter="data")
    return into


def peak_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(status.split("VmHWM:")[1].split()[0]) if "VmHWM:" in status else 0


def run_case(code: str, arg: str, collections: Path, limit: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(collections))
    script = f"ARG = {arg!r}\n" + code
    start = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    peak, killed = 0, False
    while child.poll() is None:
        peak = max(peak, peak_kib(child.pid))
        if time.monotonic() - start > limit:
            child.kill()
            killed = True
            break
        time.sleep(0.05)
    out = child.communicate()[0].decode(errors="replace").strip().splitlines()
    return {
        "seconds": time.monotonic() - start,
        "peak_mib": peak / 1024,
        "killed": killed,
        "said": out[-1] if out else "",
    }


def inputs(work: Path, server: str) -> dict[str, str]:
    loop = ld_so_conf_include_loop(work / "loop")
    sparse_gguf_with_long_name(work / "name.gguf")
    sparse_gguf_with_many_entries(work / "entries.gguf")
    mirror = work / "mirror" / "0.15.1"
    mirror.mkdir(parents=True)
    (mirror / "a.tar.gz").write_bytes(b"archive")
    with (mirror / "SHA256SUM").open("w") as sums:
        line = "%s  filler.tar.gz\n" % ("0" * 64)
        sums.write(line * (300_000_000 // len(line)))
    return {
        "ld.so.conf include loop": str(loop),
        "gguf: 100 MiB name": str(work / "name.gguf"),
        "gguf: 330 M entries": str(work / "entries.gguf"),
        "fetch: 300 MB SHA256SUM": f"{work / 'mirror'},{work / 'fetch-sums'}",
        "fetch: endless body": f"{server},{work / 'fetch-endless'}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", default=BASELINE, help="git ref of the collection to compare with")
    parser.add_argument("--limit", type=float, default=60.0, help="seconds before a case is killed")
    args = parser.parse_args()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    current = Path(os.environ.get("EDGEWASM_COLLECTIONS", REPO / ".cache" / "collections"))
    with tempfile.TemporaryDirectory(prefix="edgewasm-hostile-") as tmp:
        work = Path(tmp)
        baseline = extract(args.baseline, work / "baseline")
        cases = inputs(work, f"http://127.0.0.1:{httpd.server_address[1]}")
        print(f"{'case':26} {'tree':9} {'seconds':>9} {'peak MiB':>9}  outcome")
        for name, code in CASES.items():
            for label, collections in (("baseline", baseline), ("now", current)):
                for leftover in work.glob("fetch-*"):
                    subprocess.run(["rm", "-rf", str(leftover)], check=True)
                out = run_case(code, cases[name], collections, args.limit)
                seconds = f">{args.limit:.0f}" if out["killed"] else f"{out['seconds']:.2f}"
                said = "killed at the limit" if out["killed"] else out["said"][:70]
                print(f"{name:26} {label:9} {seconds:>9} {out['peak_mib']:9.0f}  {said}", flush=True)
    httpd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
