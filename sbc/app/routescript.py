# -*- test-case-name: tests.app.test_routescript -*-
"""
Loading routing scripts (C{[core] route_script}): a Python file with C{request_route(msg)}
and optionally C{reply_route(msg)} (see L{sbc.core.routescript} for what C{msg} offers).
A script that does not import, or lacks C{request_route}, is refused with one line naming
the file and line, so start-up stops and a reload keeps the script that runs.
"""

from __future__ import annotations

import importlib.util
import itertools
import traceback
from types import ModuleType

__all__ = ["ScriptLoadError", "load_script"]

_names = itertools.count(1)


class ScriptLoadError(Exception):
    """The script cannot be used; C{str()} is one line with file and line."""


def load_script(path: str) -> ModuleType:
    """Import the routing script at C{path} as a fresh module (each call a new one, so a
    reload sees the file as it is now)."""
    spec = importlib.util.spec_from_file_location(f"sbc_route_script_{next(_names)}", path)
    if spec is None or spec.loader is None:
        raise ScriptLoadError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ScriptLoadError(
            f"{error.filename or path}:{error.lineno}: SyntaxError: {error.msg}"
        ) from None
    except Exception as error:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == path]
        line = frames[-1].lineno if frames else 0
        raise ScriptLoadError(f"{path}:{line}: {type(error).__name__}: {error}") from None
    if not callable(getattr(module, "request_route", None)):
        raise ScriptLoadError(f"{path}:0: expected a function request_route(msg), got none")
    for name in ("reply_route", "failure_route"):
        if hasattr(module, name) and not callable(getattr(module, name)):
            raise ScriptLoadError(f"{path}:0: expected {name} to be a function")
    return module
