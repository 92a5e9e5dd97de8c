"""
Under C{CI=true} a skipped test is a failed test.

Locally a test whose tool (sipp, rtpengine, ip, iptables, stun, ssh, openssl) or privilege
(root, network namespaces) is missing skips with a reason naming it, so that a developer
without them can still run the rest.  On CI, where C{scripts/install-test-deps} ran as
root, such a skip would hide a test that never ran behind a green build; this plugin turns
every skip, whether raised by C{pytest.skip}, a C{skipif} mark or at collection, into a
failure with the same reason.

The only skips left alone are those whose reason starts with L{NOT_A_MISSING_TOOL}: a build
feature the installed package lacks (Debian's SIPp has no TLS) or a host property no
install can provide.  Use L{skip_not_a_tool} for those, with a comment saying why.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any, NoReturn

import pytest

NOT_A_MISSING_TOOL = "not a missing tool: "


def in_ci() -> bool:
    """Whether this run is CI's (C{CI=true}, as GitHub, GitLab and .ci/run set it)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def skip_not_a_tool(reason: str) -> NoReturn:
    """Skip, even under CI: for a reason that installing the test tools cannot remove."""
    __tracebackhide__ = True  # report the caller's line, not this one
    pytest.skip(NOT_A_MISSING_TOOL + reason)


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skipped report carries (its longrepr is (path, line, reason))."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_if_skipped(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Turn a skipped report into a failed one with the same reason, under CI only."""
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report).removeprefix("Skipped: ")
    if reason.startswith(NOT_A_MISSING_TOOL):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true, which counts as a failure: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[Any]:
    """Skips in setup (fixtures, skipif marks), the test itself or teardown."""
    outcome = yield
    _fail_if_skipped(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[Any]:
    """Module-level skips (C{pytest.skip(..., allow_module_level=True)}, importorskip)."""
    outcome = yield
    _fail_if_skipped(outcome.get_result())
