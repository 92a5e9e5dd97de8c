"""
The shipped example configuration, copied where a test may write.

etc/sbc.ini names its files relative to its own folder (C{../var/tls/server.pem},
C{../var/keepalive.state}, C{credentials}, ...).  Tests copy the whole of etc/ into a temporary
folder and write the throw-away certificates into that folder's var/tls, so the file under
test is the shipped one, byte for byte, and nothing is written into the checkout.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sbc.app.devcert import make_certificates
from tests.helpers import ROOT

__all__ = ["example_copy"]


def example_copy(folder: Path) -> tuple[str, dict[str, str]]:
    """
    Copy etc/ into C{folder}/etc and make certificates in C{folder}/var/tls.

    @return: the copied sbc.ini's path and L{make_certificates}' file names.
    """
    shutil.copytree(os.path.join(ROOT, "etc"), folder / "etc")
    certs = make_certificates(str(folder / "var" / "tls"))
    return str(folder / "etc" / "sbc.ini"), certs
