# -*- test-case-name: tests.app.test_ctl -*-
"""
C{sbcctl}: the operator's command line (what C{kamcmd}/C{kamctl} are to Kamailio).  It runs
one of the manhole's scriptable commands over SSH with the system's C{ssh} client and prints
the answer as JSON or as a table::

    sbcctl stats                      # every counter
    sbcctl registrations              # also: sbcctl ul.dump
    sbcctl --table dialogs            # also: sbcctl dlg.list
    sbcctl reload                     # also: sbcctl cfg.reload
    sbcctl tls.reload
    sbcctl stats.get_statistics all

The manhole's port is read from C{--config} ([manhole] listen) unless C{--port} is given.
Exit status: 0 done, 1 the command failed (its error printed), 255 SSH failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from typing import Any, Optional

__all__ = ["main", "table", "manhole_port"]

DEFAULT_PORT = 2222


def manhole_port(config: Optional[str]) -> int:
    """The manhole's TCP port from a configuration file's [manhole] listen."""
    if not config:
        return DEFAULT_PORT
    from sbc.app.config import load

    listen = load(config).manhole.listen
    m = re.match(r"tcp6?:(\d+)", listen)
    return int(m.group(1)) if m else DEFAULT_PORT


def _cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return "" if value is None else str(value)


def table(data: Any) -> str:
    """A list of records as columns, a mapping as name/value lines, anything else as is."""
    if isinstance(data, dict):
        if not data:
            return ""
        width = max(len(str(k)) for k in data)
        return "\n".join(f"{str(k).ljust(width)}  {_cell(v)}" for k, v in data.items())
    if isinstance(data, list) and data and all(isinstance(row, dict) for row in data):
        columns: list[str] = []
        for row in data:
            columns += [k for k in row if k not in columns]
        cells = [[_cell(row.get(c)) for c in columns] for row in data]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
        lines += [
            "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
            for row in cells
        ]
        return "\n".join(lines)
    if isinstance(data, list):
        return "\n".join(_cell(item) for item in data)
    return _cell(data)


def _arguments(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sbcctl", description="Run an sbc admin command over the SSH manhole."
    )
    parser.add_argument("command", nargs="+", help="e.g. stats, ul.dump, dlg.list, reload")
    parser.add_argument("-c", "--config", help="sbc's INI file (for the manhole port)")
    parser.add_argument("-H", "--host", default="127.0.0.1", help="manhole host")
    parser.add_argument("-p", "--port", type=int, help=f"manhole port (default {DEFAULT_PORT})")
    parser.add_argument("-u", "--user", default="admin", help="SSH user name")
    parser.add_argument("-i", "--identity", help="SSH private key file")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON (the default)")
    output.add_argument("-t", "--table", action="store_true", help="print a table")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    """The console script."""
    args = _arguments(argv)
    port = args.port or manhole_port(args.config)
    ssh = [
        os.environ.get("SBCCTL_SSH", "ssh"),
        "-p", str(port),
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=10",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip
    if args.identity:
        ssh += ["-i", args.identity, "-o", "IdentitiesOnly=yes"]
    if os.environ.get("SBCCTL_INSECURE") == "1":  # tests: throw-away host keys
        ssh += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    ssh += [f"{args.user}@{args.host}", " ".join(args.command)]
    try:
        result = subprocess.run(
            ssh, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        sys.stderr.write(f"sbcctl: {error}\n")
        return 255
    if result.returncode == 255 or not result.stdout.strip():
        sys.stderr.write(result.stderr or f"sbcctl: ssh exited with {result.returncode}\n")
        return 255 if result.returncode else 1
    try:
        data = json.loads(result.stdout)
    except ValueError:
        sys.stdout.write(result.stdout)
        return result.returncode
    if isinstance(data, dict) and set(data) == {"error"}:
        sys.stderr.write(f"sbcctl: {data['error']}\n")
        return 1
    text = table(data) if args.table else json.dumps(data, indent=2, default=str)
    sys.stdout.write(text + ("\n" if text else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
