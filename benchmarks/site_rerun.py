"""A rerun of playbooks/site.yml against its first converge, on fresh lab nodes, in one run.

    make bench-rerun        (or: python benchmarks/site_rerun.py [--reruns N] [--keep])

Creates a lab of its own (scripts/lab.sh nodes + artifacts under the name edgewasm-bench-lab, subnet
10.89.243, directory .cache/bench-lab: a developer's lab is never touched), converges site.yml once,
then reruns it, each run timed with the ansible.posix timer and profile_tasks callbacks. Prints each
run's wall time and changed count, the rerun/first ratio (a rerun has nothing to do: the target is
<= 30 %), and the ten slowest tasks of the first converge and of the last rerun. The lab is destroyed
at the end unless --keep.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("EDGEWASM_CACHE", REPO / ".cache"))
LAB = {
    "EDGEWASM_LAB_NAME": "edgewasm-bench-lab",
    "EDGEWASM_LAB_SUBNET": "10.89.243",
    "EDGEWASM_LAB_DIR": str(CACHE / "bench-lab"),
}
TASK_LINE = re.compile(r"^(?P<task>.+?) -+ (?P<seconds>\d+\.\d+)s$")


@dataclass
class Run:
    seconds: float
    changed: int
    tasks: list[tuple[str, float]]


def lab(command: str, env: dict[str, str]) -> None:
    subprocess.run(
        [str(REPO / "scripts" / "lab.sh"), command], env=env, check=True, stdout=subprocess.DEVNULL
    )


def parse(output: str) -> tuple[int, list[tuple[str, float]]]:
    changed = sum(int(n) for n in re.findall(r"\bchanged=(\d+)", output))
    recap = output.split("TASKS RECAP", 1)[-1].split("PLAYBOOK RECAP", 1)[0]
    tasks = [(m["task"], float(m["seconds"])) for m in map(TASK_LINE.match, recap.splitlines()) if m]
    return changed, tasks


def converge(env: dict[str, str], log: Path) -> Run:
    inventory = Path(LAB["EDGEWASM_LAB_DIR"]) / "inventory" / "hosts.yml"
    start = time.perf_counter()
    result = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / "site.yml")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    log.write_text(result.stdout + result.stderr)
    changed, tasks = parse(result.stdout)
    if result.returncode != 0:
        sys.exit(f"site.yml failed (rc={result.returncode}); its output is in {log}")
    return Run(seconds, changed, tasks)


def slowest(title: str, run: Run) -> None:
    print(f"\n{title}")
    for task, seconds in run.tasks[:10]:
        print(f"  {seconds:6.2f} s  {task}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reruns", type=int, default=1, help="reruns after the first converge (default 1)")
    parser.add_argument("--keep", action="store_true", help="leave the benchmark's lab running")
    args = parser.parse_args()
    env = dict(
        os.environ,
        **LAB,
        ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks,ansible.posix.timer",
        PROFILE_TASKS_TASK_OUTPUT_LIMIT="10",
    )
    logs = Path(LAB["EDGEWASM_LAB_DIR"]).with_name("bench-rerun-logs")
    logs.mkdir(parents=True, exist_ok=True)
    lab("destroy", env)
    try:
        lab("nodes", env)
        lab("artifacts", env)
        runs = [converge(env, logs / "converge-1.log")]
        runs += [converge(env, logs / f"converge-{n + 2}.log") for n in range(args.reruns)]
    finally:
        if not args.keep:
            lab("destroy", env)
    first = runs[0]
    print(f"{'run':<10} {'seconds':>8} {'changed':>8} {'of first':>9}")
    for n, run in enumerate(runs):
        name = "first" if n == 0 else f"rerun {n}"
        print(f"{name:<10} {run.seconds:8.1f} {run.changed:8d} {run.seconds / first.seconds:9.0%}")
    slowest("ten slowest tasks, first converge:", first)
    slowest("ten slowest tasks, last rerun:", runs[-1])
    print(f"\nlogs: {logs}")


if __name__ == "__main__":
    main()
