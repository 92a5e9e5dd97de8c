"""The layering rule as a test: core imports no I/O, net never imports app."""

from __future__ import annotations

import ast
import os
import re

import pytest

from tests.helpers import ROOT

FORBIDDEN_IN_CORE = {"twisted", "socket", "time", "threading", "asyncio", "select", "selectors"}


def modules(package: str) -> list[str]:
    folder = os.path.join(ROOT, "sbc", package)
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".py"))


def imports(path: str) -> list[tuple[str, list[str]]]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


@pytest.mark.parametrize("path", modules("core"), ids=os.path.basename)
def test_core_is_pure(path: str) -> None:
    """sbc/core imports no twisted/socket/time/threading and not the global random."""
    for module, names in imports(path):
        top = module.split(".")[0]
        assert top not in FORBIDDEN_IN_CORE, f"{path} imports {module}"
        assert not module.startswith(("sbc.net", "sbc.app")), f"{path} imports {module}"
        if top == "random":
            assert names == ["Random"], f"{path} uses the global random ({module} {names})"


@pytest.mark.parametrize("path", modules("net"), ids=os.path.basename)
def test_net_does_not_import_app(path: str) -> None:
    """sbc/net never imports sbc/app."""
    for module, _ in imports(path):
        assert not module.startswith("sbc.app"), f"{path} imports {module}"


def test_plugin_is_one_service_maker() -> None:
    """The plugin file only declares the ServiceMaker (cheap plugin discovery)."""
    path = os.path.join(ROOT, "twisted", "plugins", "sbc_plugin.py")
    assert [m for m, _ in imports(path)] == ["twisted.application.service"]
    assert not os.path.exists(os.path.join(ROOT, "twisted", "__init__.py"))
    assert not os.path.exists(os.path.join(ROOT, "twisted", "plugins", "__init__.py"))


def _reactor_fallbacks(path: str) -> list[str]:
    """Where C{path} reaches the global reactor: imports it, or defaults a reactor argument."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "twisted.internet":
            if any(alias.name == "reactor" for alias in node.names):
                found.append(f"line {node.lineno}: from twisted.internet import reactor")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("twisted.internet.") and alias.name.endswith("reactor"):
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            defaulted = positional[len(positional) - len(args.defaults) :]
            defaulted += [
                a for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None
            ]
            for arg in defaulted:
                if arg.arg in ("reactor", "clock"):
                    found.append(f"line {node.lineno}: {node.name}() defaults {arg.arg}")
    return found


@pytest.mark.parametrize("path", modules("net"), ids=os.path.basename)
def test_net_takes_the_reactor(path: str) -> None:
    """sbc/net never falls back to the global reactor: adapters take it as a required
    argument (twisted.names.srvconnect style), and only sbc/app picks the global one."""
    assert _reactor_fallbacks(path) == [], f"{path}: {_reactor_fallbacks(path)}"


def test_reactor_fallback_check_sees_each_form() -> None:
    """The check above finds an import, a positional default and a keyword-only default."""
    import tempfile

    source = (
        "from twisted.internet import reactor\n"
        "import twisted.internet.reactor\n"
        "def a(x, reactor=None): pass\n"
        "def b(*, clock=None, reactor): pass\n"
        "def c(reactor, *, clock): pass\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    try:
        found = _reactor_fallbacks(f.name)
    finally:
        os.unlink(f.name)
    assert [line.split(":")[0] for line in found] == ["line 1", "line 2", "line 3", "line 4"]


def _core_graph() -> dict[str, set[str]]:
    """sbc.core module -> the sbc.core modules it imports (TYPE_CHECKING imports too)."""
    graph: dict[str, set[str]] = {}
    for path in modules("core"):
        name = "sbc.core." + os.path.basename(path)[:-3]
        targets = set()
        for module, names in imports(path):
            if module == "sbc.core":
                targets |= {f"sbc.core.{n}" for n in names}
            elif module.startswith("sbc.core."):
                targets.add(module)
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of C{graph} (the modules in order, the first repeated), or []."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return []
        for target in sorted(graph.get(node, ())):
            cycle = visit(target, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return []

    for node in sorted(graph):
        cycle = visit(node, [])
        if cycle:
            return cycle
    return []


def test_no_import_cycle_in_core() -> None:
    """Imports inside sbc/core point one way (TYPE_CHECKING imports count too)."""
    assert find_cycle(_core_graph()) == []


def test_cycle_check_sees_a_cycle() -> None:
    """The cycle check itself: a loop through three modules is reported."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("path", modules("core"), ids=os.path.basename)
def test_core_modules_stay_small(path: str) -> None:
    """One module, one job: no module in sbc/core over 600 lines."""
    with open(path, encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    assert lines <= 600, f"{path} has {lines} lines"


#: A requirement tag pointing into a document outside the repository ("K: TM-13", "SEC-03",
#: "TV-14", "SPEC §3", "issue #6"): comments cite RFC sections and Kamailio modules instead.
REQUIREMENT_TAG = re.compile(
    r"\bK: ?[A-Za-z]|SPEC §|\bissue #\d|\bSBC-REC\b"
    r"|\b(?:TM|RR|BL|DNS|RTP|SEC|PING|KA|FIX|NATD|TV|SIP|OPS|PERF|DISC|PV|STUN|DLG|REG|NAT"
    r"|DEF|RPC|STAT)-\d{1,2}\b"
)


def _tag_scanned_files() -> list[str]:
    skip = {os.path.join(ROOT, "tests", "data"), os.path.abspath(__file__)}
    found = [os.path.join(ROOT, "README.md")]
    for top in ("sbc", "tests", "bench", "etc"):
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
            paths = [os.path.join(folder, n) for n in files if not n.endswith(".pyc")]
            found += [path for path in paths if path not in skip]
    return sorted(found)


def test_no_requirement_tags() -> None:
    """No comment, docstring, README or config text cites a requirement tag of a document
    outside the repository; the tags this looks for are caught."""
    for sample in ("K: TM-13", "(K: RTP-04)", "BL-01..09", "TV-14's", "SPEC §3", "issue #6"):
        assert REQUIREMENT_TAG.search(sample), sample
    assert not REQUIREMENT_TAG.search("RFC 3261 §16.6, Kamailio tm fr_timer, test_tv14, UTF-8")
    hits = []
    for path in _tag_scanned_files():
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if REQUIREMENT_TAG.search(line):
                hits.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    assert not hits, "requirement tags left:\n" + "\n".join(hits)
