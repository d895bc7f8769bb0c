"""Every benchmark, one short round each: CI runs this so that a bench that stops running fails the build.

It checks only that each script runs to its table (exit 0). It asserts no figure: timings on a shared
machine are for people to read, not for a build to judge.
"""

from __future__ import annotations

import subprocess
import sys
import time

RUNS = [
    ["bench.engine", "--rounds", "1"],
    ["bench.media", "--rounds", "1"],
    ["bench.gateway_overhead", "--seconds", "1", "--rounds", "1"],
    ["bench.accounting", "--seconds", "1", "--rounds", "1"],
    ["bench.accounting_cpu", "--blocks", "2", "--requests", "50"],
    ["bench.accounting_cpu", "--blocks", "2", "--requests", "50", "--postgres"],
    ["bench.instructions", "--requests", "20"],
    ["bench.workers", "--seconds", "1", "--rounds", "1"],
    ["bench.metrics", "--seconds", "1", "--rounds", "1"],
    ["bench.web", "--seconds", "1", "--rounds", "1"],
]


def main() -> None:
    failed = []
    for args in RUNS:
        started = time.monotonic()
        print(f"== python -m {' '.join(args)}", flush=True)
        code = subprocess.run([sys.executable, "-m", *args], check=False).returncode
        print(f"== exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(" ".join(args))
    if failed:
        sys.exit("benchmarks that did not run: " + "; ".join(failed))


if __name__ == "__main__":
    main()
