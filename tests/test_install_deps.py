"""scripts/install-test-deps: exit 0 only when the tests' tools are there or may skip."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "install-test-deps")
COMMANDS = (
    "sipp",
    "ip",
    "iptables",
    "openssl",
    "stun",
    "ssh",
    "rtpengine",
    "baresip",
    "tshark",
    "initdb",
    "chromium",
    "npm",
)


def fake_bin(tmp_path: Path, uid: int, apt_installs: bool) -> Path:
    """A PATH holding none of the tools, an C{id} saying C{uid} and a fake C{apt-get}."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for real in ("find", "head"):
        found = shutil.which(real)
        assert found is not None
        (bin_dir / real).symlink_to(found)
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    if apt_installs:
        made = "".join(f'printf "#!/bin/sh\\n" > "{bin_dir}/{c}"; ' for c in COMMANDS)
        chmod = " ".join(f'"{bin_dir}/{c}"' for c in COMMANDS)
        apt = f'#!/bin/sh\n[ "$1" = install ] || exit 0\n{made}\nchmod +x {chmod}\n'
    else:
        apt = "#!/bin/sh\necho 'E: Unable to locate package' >&2\nexit 100\n"
    (bin_dir / "apt-get").write_text(apt)
    for script in ("id", "apt-get"):
        (bin_dir / script).chmod(0o755)
    return bin_dir


def run(bin_dir: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    """The script under bash with only C{bin_dir} on PATH."""
    env = {"PATH": str(bin_dir), "HOME": str(bin_dir)}
    if ci:
        env["CI"] = "true"
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run(
        [bash, SCRIPT], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_not_root_outside_ci_says_what_is_missing_and_exits_0(tmp_path: Path) -> None:
    """A developer without root runs the rest; the missing tools' tests skip."""
    result = run(fake_bin(tmp_path, 1000, apt_installs=False), ci=False)
    assert result.returncode == 0
    assert "sip-tester" in result.stderr and "rtpengine-daemon" in result.stderr


def test_not_root_under_ci_fails(tmp_path: Path) -> None:
    """Under CI=true a tool that cannot be installed is an error, not a skip."""
    result = run(fake_bin(tmp_path, 1000, apt_installs=False), ci=True)
    assert result.returncode == 1
    assert "CI=true" in result.stderr
    assert "sipp:sip-tester" in result.stderr


@pytest.mark.parametrize("ci", [False, True])
def test_root_whose_install_fails_exits_1(tmp_path: Path, ci: bool) -> None:
    """Root could install; when apt-get fails the script names what is still missing."""
    result = run(fake_bin(tmp_path, 0, apt_installs=False), ci=ci)
    assert result.returncode == 1
    assert "still missing after the install" in result.stderr
    assert "rtpengine:rtpengine-daemon" in result.stderr


def test_root_whose_install_works_exits_0(tmp_path: Path) -> None:
    """Once every command is on PATH after apt-get, the script succeeds."""
    result = run(fake_bin(tmp_path, 0, apt_installs=True), ci=True)
    assert result.returncode == 0, result.stderr
