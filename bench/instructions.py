"""
Instructions per call in the proxy core, counted by valgrind's callgrind: the call flow of
bench/routescript.py with sbc's own policy, run twice (a short and a long run) so that
start-up cancels out.  Unlike wall-clock timings the count does not move with the load on
the machine, so two versions of the code can be compared while other work runs.

    .venv/bin/python bench/instructions.py [--calls 1000]

Needs valgrind (apt-get install valgrind).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WARM_UP = 300

_RUN = f"""
import sys
sys.path.insert(0, {HERE!r}); sys.path.insert(0, {ROOT!r})
from routescript import run
from sbc.core import routes_default
run(routes_default, int(sys.argv[1]))
"""


def instructions(calls: int) -> int:
    """Instructions callgrind counts for a process that runs C{calls} calls."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
            + [sys.executable, "-c", _RUN, str(calls)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with open(out) as f:
            found = re.search(r"^summary: (\d+)", f.read(), re.MULTILINE)
    if found is None:
        raise SystemExit("no summary line in callgrind's output")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    short = instructions(WARM_UP)
    long = instructions(WARM_UP + args.calls)
    print(f"{(long - short) / args.calls / 1e6:.3f} M instructions per call")


if __name__ == "__main__":
    main()
