"""Lab build and teardown time per scenario (median of N rounds, interleaved so load spikes hit all alike).

    sudo .venv/bin/python benchmarks/lab_build.py [--rounds 7] [--scenario NAME ...]

Prints one line per scenario: build and teardown medians (and min) in seconds. Needs root.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from nodereach.lab import SCENARIOS, Lab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--scenario", action="append", default=None)
    args = parser.parse_args(argv)
    names = args.scenario or list(SCENARIOS)
    builds: dict[str, list[float]] = {n: [] for n in names}
    downs: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(max(1, min(args.rounds, 50))):
        for name in names:
            lab = Lab(name)
            t0 = time.perf_counter()
            lab.build()
            t1 = time.perf_counter()
            lab.teardown()
            t2 = time.perf_counter()
            builds[name].append(t1 - t0)
            downs[name].append(t2 - t1)
    print(f"{'scenario':<18} {'build med':>9} {'min':>6} {'down med':>9} {'min':>6}")
    for name in names:
        b, d = builds[name], downs[name]
        print(f"{name:<18} {statistics.median(b):9.3f} {min(b):6.3f} {statistics.median(d):9.3f} {min(d):6.3f}")
    allb = [x for n in names for x in builds[n]]
    alld = [x for n in names for x in downs[n]]
    print(f"{'all':<18} {statistics.median(allb):9.3f} {min(allb):6.3f} {statistics.median(alld):9.3f} "
          f"{min(alld):6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
