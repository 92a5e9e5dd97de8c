"""etc/sbc.ini documents every key sbc knows."""

from __future__ import annotations

import os
import re

from sbc.app.config import _SCHEMA
from tests.helpers import ROOT


def test_every_key_is_in_the_example_config() -> None:
    """Each section and key of the schema appears in etc/sbc.ini (with its comment)."""
    with open(os.path.join(ROOT, "etc", "sbc.ini"), encoding="utf-8") as f:
        text = f.read()
    present: dict[str, set[str]] = {}
    section = ""
    for line in text.splitlines():
        header = re.match(r"\[(\w+)\]", line)
        if header:
            section = header.group(1)
            continue
        key = re.match(r"(\w+)\s*=", line)
        if key:
            present.setdefault(section, set()).add(key.group(1))
    for name, (_, keys) in _SCHEMA.items():
        assert set(keys) <= present.get(name, set()), (name, set(keys) - present.get(name, set()))
