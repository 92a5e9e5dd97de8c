"""Fixtures shared by the system tests."""

from __future__ import annotations

import pytest

from tests.system.netns import NatLab


@pytest.fixture(params=["cone", "symmetric"])
def lab(request):  # type: ignore[no-untyped-def]
    """Three namespaces with a cone or a symmetric NAT between them (torn down after)."""
    NatLab.check()
    with NatLab(symmetric=request.param == "symmetric") as built:
        yield built
