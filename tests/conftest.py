"""Plugins for the whole suite: L{tests.ci_skips} makes skips fail under C{CI=true}."""

pytest_plugins = ["pytester", "tests.ci_skips"]
