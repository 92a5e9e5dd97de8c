"""Under CI=true a skip for a missing tool fails; locally it still skips (tests.ci_skips)."""

from __future__ import annotations

import pytest

EXAMPLE = """
import shutil

import pytest

from tests.ci_skips import skip_not_a_tool


@pytest.fixture
def tool():
    pytest.skip("frobnicator is not installed")


def test_missing_tool_in_call():
    if shutil.which("no-such-tool-sbc") is None:
        pytest.skip("no-such-tool-sbc is not installed")


def test_missing_tool_in_fixture(tool):
    pass


@pytest.mark.skipif(True, reason="needs root")
def test_missing_privilege_mark():
    pass


def test_build_feature():
    skip_not_a_tool("this SIPp was built without TLS")


def test_passes():
    pass
"""

MODULE_SKIP = """
import pytest

pytest.skip("sipp is not installed", allow_module_level=True)


def test_never_collected():
    pass
"""


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None, source: str):
    """Run C{source} as a test file in a fresh pytest with the plugin and CI set or not."""
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makepyfile(test_example=source)
    return pytester.runpytest_subprocess("-p", "tests.ci_skips", "-rA")


def test_skips_for_missing_tools_fail_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skips from the test, a fixture and a skipif mark fail, each with its own reason."""
    result = run(pytester, monkeypatch, "true", EXAMPLE)
    result.assert_outcomes(passed=1, failed=1, errors=2, skipped=1)
    for line in (
        "FAILED *::test_missing_tool_in_call - skipped under CI=true, which counts as a "
        "failure: no-such-tool-sbc is not installed",
        "ERROR *::test_missing_tool_in_fixture - skipped under CI=true*frobnicator is not*",
        "ERROR *::test_missing_privilege_mark - skipped under CI=true*needs root",
        "SKIPPED*not a missing tool: this SIPp was built without TLS",
    ):
        result.stdout.fnmatch_lines([line])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_module_level_skip_fails_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole module skipped at import is a collection error under CI."""
    result = run(pytester, monkeypatch, "true", MODULE_SKIP)
    result.stdout.fnmatch_lines(["*skipped under CI=true*sipp is not installed*"])
    assert result.ret != pytest.ExitCode.OK


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_skips_stay_skips_outside_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    """Without CI=true the same file skips four tests and passes one."""
    result = run(pytester, monkeypatch, ci, EXAMPLE)
    result.assert_outcomes(passed=1, skipped=4)
    assert result.ret == pytest.ExitCode.OK


TRIAL_SKIP = """
from twisted.trial.unittest import SkipTest, SynchronousTestCase


class ToolTests(SynchronousTestCase):
    def test_needs_tool(self):
        raise SkipTest("stun is not installed")
"""


def test_trial_skip_fails_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial test case raising SkipTest (as the net tests could) fails under CI too."""
    result = run(pytester, monkeypatch, "true", TRIAL_SKIP)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*skipped under CI=true*stun is not installed*"])
