"""Tests for loading routing scripts (L{sbc.app.routescript}), the [core] route_script
key, and reloading: a good script replaces the running one, a broken one is refused with
its file and line while the old one keeps running."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock

from sbc.app.config import ConfigError, load
from sbc.app.routescript import ScriptLoadError, load_script
from sbc.app.service import build_service
from sbc.core import routes_default
from tests.helpers import ROOT

GOOD = "def request_route(msg):\n    msg.sl_send_reply(403)\n"


def test_load_good_and_the_shipped_scripts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "routes.py"
    path.write_text(GOOD)
    assert callable(load_script(str(path)).request_route)
    for name in ("routes_default.py", "routes_nat_recipes.py"):
        module = load_script(f"{ROOT}/etc/{name}")
        assert callable(module.request_route) and callable(module.reply_route)


@pytest.mark.parametrize(
    "text, message",
    [
        ("def request_route(msg):\n    if\n", "routes.py:2: SyntaxError: invalid syntax"),
        ("import os\nx = 1 / 0\n", "routes.py:2: ZeroDivisionError: division by zero"),
        ("def reply_route(msg):\n    pass\n", "routes.py:0: expected a function request_route"),
    ],
)
def test_broken_scripts_are_refused_with_file_and_line(tmp_path, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "routes.py"
    path.write_text(text)
    with pytest.raises(ScriptLoadError) as info:
        load_script(str(path))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_broken_script_stops_start_up_with_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "routes.py").write_text("def request_route(msg)\n")
    config = tmp_path / "sbc.ini"
    config.write_text("[core]\nlisten = udp:127.0.0.1:5060\nroute_script = routes.py\n")
    with pytest.raises(ConfigError) as info:
        load(str(config))
    text = str(info.value)
    assert text.startswith(f"{config}:3: [core] route_script: expected a routing script")
    assert "routes.py:1: SyntaxError" in text


def test_reload_swaps_a_good_script_and_keeps_the_old_one_when_broken(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "routes.py"
    script.write_text(GOOD)
    config = tmp_path / "sbc.ini"
    config.write_text("[core]\nlisten = udp:127.0.0.1:5060\nroute_script = routes.py\n")
    service = build_service(load(str(config)), MemoryReactorClock())
    first = service.proxy.router
    assert first is not routes_default
    script.write_text(GOOD.replace("403", "404"))
    result = service.reload()
    assert result["reloaded"] and "[core] route_script" in result["changed"]
    second = service.proxy.router
    assert second is not first
    script.write_text("def request_route(msg):\n    return (\n")
    result = service.reload()
    assert not result["reloaded"] and "routes.py:2: SyntaxError" in result["reason"]
    assert service.proxy.router is second
    config.write_text("[core]\nlisten = udp:127.0.0.1:5060\n")
    assert service.reload()["reloaded"] and service.proxy.router is routes_default
