"""
A throw-away PostgreSQL server for tests: a cluster made with initdb in a temporary folder,
started with pg_ctl on a loopback port (as the C{postgres} user when the tests run as
root, since PostgreSQL refuses to run as root), stopped and removed in a finally block.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Optional

import pytest

from tests.helpers import free_port


def _tool(name: str) -> Optional[str]:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def require_postgres() -> tuple[str, str]:
    """initdb and pg_ctl, or skip (fail when CI=true) saying why."""
    initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
    if initdb is None or pg_ctl is None:
        message = "PostgreSQL is not installed (Debian package postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return initdb, pg_ctl


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Run a PostgreSQL server; yields its URI (user C{sbc}, trust on loopback)."""
    initdb, pg_ctl = require_postgres()
    folder = tempfile.mkdtemp(prefix="sbc-pg-")
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder, ignore_errors=True)
            pytest.skip("running as root and there is no postgres user to run PostgreSQL")
        os.chown(folder, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(folder, "data")
    port = free_port()
    started = False
    try:
        subprocess.run(
            [*prefix, initdb, "-D", data, "-A", "trust", "-U", "sbc", "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*prefix, pg_ctl, "-D", data, "-o", options, "-l", os.path.join(folder, "log"),
             "-w", "-t", "60", "start"],
            check=True,
            capture_output=True,
            timeout=90,
        )  # fmt: skip
        started = True
        yield f"postgresql://sbc@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(
                [*prefix, pg_ctl, "-D", data, "-m", "fast", "-w", "-t", "30", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(folder, ignore_errors=True)
