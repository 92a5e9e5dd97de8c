# -*- test-case-name: tests.net.test_keepalive -*-
"""
The keepalive engine's adapter: a once-a-second L{LoopingCall} over the core table (each
tick handles one slot of endpoints, so the work is spread over the interval), sending what
it says; and the state file, written atomically (temp file, fsync, rename) every few
seconds and at shutdown, read at start.
"""

from __future__ import annotations

import os
from typing import Optional

from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from typing_extensions import override

from sbc.core.keepalive import KeepaliveTable, decode_state, encode_state
from sbc.core.registrar import Registrar
from sbc.net.engine import SipEngine
from sbc.net.log import logger

__all__ = ["KeepaliveService", "write_atomically"]

log = logger(__name__)


def write_atomically(path: str, text: str) -> None:
    """Replace C{path} with C{text} so that a reader sees the old or the new file, never
    a half-written one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = f"{path}.tmp.{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


class KeepaliveService(service.Service):
    """Ticks the keepalive table and keeps its state file."""

    name = "keepalive"

    def __init__(
        self,
        table: KeepaliveTable,
        engine: SipEngine,
        registrar: Registrar,
        clock: IReactorTime,
        state_file: Optional[str] = None,
        save_every: float = 5.0,
    ) -> None:
        self.table = table
        self.engine = engine
        self.registrar = registrar
        self.clock = clock
        self.state_file = state_file
        self.save_every = save_every
        self._tick_loop: Optional[LoopingCall] = None
        self._save_loop: Optional[LoopingCall] = None

    # -- state file ---------------------------------------------------------------------------
    def load(self) -> None:
        """Read the state file, if there is one: live endpoints and bindings come back."""
        if not self.state_file or not os.path.exists(self.state_file):
            return
        try:
            with open(self.state_file, encoding="utf-8") as f:
                text = f.read()
        except OSError as error:
            log.warn("cannot read {path}: {error}", path=self.state_file, error=error)
            return
        now = self.clock.seconds()
        endpoints, bindings, problems = decode_state(text, now)
        for problem in problems:
            log.warn("{path}: {problem} (skipped)", path=self.state_file, problem=problem)
        for endpoint in endpoints:
            self.table.restore(endpoint)
        for aor, binding in bindings:
            self.registrar.restore(aor, binding)
        self.table.restore_contacts(bindings)
        log.info(
            "restored {endpoints} keepalive endpoint(s) and {bindings} registration(s) from {path}",
            endpoints=len(endpoints),
            bindings=len(bindings),
            path=self.state_file,
        )

    def save(self) -> None:
        """Write the state file now (errors are logged, never raised)."""
        if not self.state_file:
            return
        try:
            write_atomically(
                self.state_file,
                encode_state(self.table.endpoints.values(), self.registrar.all_bindings()),
            )
        except OSError as error:
            self.engine.stats.incr("keepalive_state_errors")
            log.warn("cannot write {path}: {error}", path=self.state_file, error=error)

    def enable_ping(self, on: bool) -> None:
        """The runtime switch (Kamailio's nathelper.enable_ping): pause or resume pings;
        endpoints and their conditions are kept either way."""
        self.table.enabled = on
        log.info("keepalive pings {state}", state="enabled" if on else "paused")

    # -- ticking --------------------------------------------------------------------------------
    def tick(self) -> None:
        """Ping this second's slot; never raises (a raising tick would stop the loop)."""
        try:
            now = self.clock.seconds()
            for ping in self.table.tick(now):
                self.engine.send_raw(ping.data, ping.address, ping.local)
            for address in self.table.take_evicted():
                dropped = self.registrar.evict(address, now)
                log.info(
                    "keepalive timeout: {address} stopped answering; {count} binding(s) "
                    "expire within 10 s",
                    address=str(address),
                    count=dropped,
                )
            stats = self.engine.stats
            for name, value in self.table.counts(now).items():
                stats.set(name, value)
            stats.set("keepalive_pings_sent", self.table.sent)
            stats.set("keepalive_replies", self.table.replies)
            stats.set("keepalive_evictions", self.table.evictions)
        except Exception:
            self.engine.stats.incr("internal_errors")
            log.failure("keepalive tick failed")

    @override
    def startService(self) -> None:
        super().startService()
        self.load()
        self._tick_loop = LoopingCall(self.tick)
        self._tick_loop.clock = self.clock
        self._tick_loop.start(1.0, now=False)
        if self.state_file:
            self._save_loop = LoopingCall(self.save)
            self._save_loop.clock = self.clock
            self._save_loop.start(self.save_every, now=False)

    @override
    def stopService(self):  # type: ignore[no-untyped-def]
        for loop in (self._tick_loop, self._save_loop):
            if loop is not None and loop.running:
                loop.stop()
        self.save()
        return super().stopService()
