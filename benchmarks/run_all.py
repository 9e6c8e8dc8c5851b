"""Run every benchmark in this folder, one after another, and print each one's numbers.

    .venv/bin/python benchmarks/run_all.py [NAME ...]     # e.g. stun_server check_speed

Each benchmark is a standalone script; they run sequentially so they do not compete for the 2 cores.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name)
    if argv:
        scripts = [p for p in scripts if p.stem in argv]
    failed = 0
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        start = time.monotonic()
        rc = subprocess.call([sys.executable, str(script)])
        print(f"--- {script.stem}: exit {rc} in {time.monotonic() - start:.1f} s", flush=True)
        failed += rc != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
