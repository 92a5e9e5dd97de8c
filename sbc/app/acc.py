# -*- test-case-name: tests.app.test_acc -*-
"""
Call records written where C{[acc]} says (Kamailio's C{acc} module): one JSON line per call
to C{log_file} (reopened at every reload, so logrotate can move it away and send SIGHUP),
and one row per call to a PostgreSQL table (C{db_url}, C{db_table_acc}) through psycopg in a
one-thread pool: the reactor never waits for the database, and rows keep their order.  A
database that is down costs records (counted in C{acc_db_errors}, logged), never calls.
"""

from __future__ import annotations

import json
from typing import IO, TYPE_CHECKING, Any, Optional

from twisted.application import service
from twisted.internet import threads
from twisted.python.threadpool import ThreadPool
from typing_extensions import override

from sbc.core.acc import AccSettings, CallRecord, CallTracker, MediaStats
from sbc.core.dialog import DialogEvent
from sbc.core.stats import Statistics
from sbc.core.wire import Wire, tap_while
from sbc.net.log import logger

if TYPE_CHECKING:  # pragma: no cover
    from sbc.net.engine import WireTap

__all__ = ["CallAccounting", "PostgresWriter", "COLUMNS"]

log = logger(__name__)

#: The columns of the accounting table, in record order (the record's keys).
COLUMNS = (
    ("call_id", "text NOT NULL"),
    ("from", "text"),
    ("to", "text"),
    ("from_tag", "text"),
    ("to_tag", "text"),
    ("source", "text"),
    ("transport", "text"),
    ("start_time", "timestamptz"),
    ("answer_time", "timestamptz"),
    ("end_time", "timestamptz"),
    ("setup_seconds", "double precision"),
    ("duration", "double precision"),
    ("status", "integer"),
    ("reason", "text"),
    ("hung_up", "text"),
    ("legs", "jsonb"),
)


class PostgresWriter:
    """Rows into PostgreSQL with psycopg 3 (blocking calls, run in the accounting thread)."""

    def __init__(self, url: str, table: str) -> None:
        self.url = url
        self.table = table
        self._connection: Any = None

    def _connect(self) -> Any:
        import psycopg
        from psycopg import sql

        connection = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in COLUMNS
        )
        connection.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, {})").format(
                sql.Identifier(self.table), columns
            )
        )
        return connection

    def write(self, record: CallRecord) -> None:
        """Insert one record (connecting, and creating the table, when needed)."""
        from psycopg import sql

        if self._connection is None or self._connection.closed:
            self._connection = self._connect()
        values = [
            json.dumps(record[name]) if name == "legs" else record[name] for name, _ in COLUMNS
        ]
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(self.table),
            sql.SQL(", ").join(sql.Identifier(name) for name, _ in COLUMNS),
            sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)),
        )
        try:
            self._connection.execute(query, values)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:
                pass
            self._connection = None


class CallAccounting(service.Service):
    """
    The C{[acc]} writer: a L{sbc.net.engine.WireTap} and a dialog listener around the pure
    L{CallTracker}.

    @ivar settings: the C{[acc]} settings in force.
    """

    name = "acc"

    def __init__(
        self,
        settings: AccSettings,
        reactor: Any,
        media_stats: Optional[MediaStats] = None,
        stats: Optional[Statistics] = None,
        taps: Optional[list[WireTap]] = None,
    ) -> None:
        """
        @param taps: the engine's wire taps: this writer is one of them while L{active}.
        """
        self.reactor = reactor
        self.tracker = CallTracker(media_stats)
        self.stats = stats if stats is not None else Statistics()
        self.settings = AccSettings()
        self._file: Optional[IO[str]] = None
        self._db: Optional[PostgresWriter] = None
        self._pool: Optional[ThreadPool] = None
        self._taps = taps
        self.configure(settings)

    @property
    def active(self) -> bool:
        """Is there anywhere to write records to?"""
        return bool(self.settings.log_file or self.settings.db_url)

    def configure(self, settings: AccSettings) -> None:
        """New settings (a reload): the log file is reopened (logrotate), the database
        connection made again when its URI or table changed."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if settings.log_file:
            try:
                self._file = open(settings.log_file, "a", encoding="utf-8", buffering=1)
            except OSError as error:
                log.error("acc: cannot open {path}: {error}", path=settings.log_file, error=error)
        old = self.settings
        if (settings.db_url, settings.db_table_acc) != (old.db_url, old.db_table_acc):
            previous = self._db
            self._db = (
                PostgresWriter(settings.db_url, settings.db_table_acc) if settings.db_url else None
            )
            if previous is not None:
                self._in_thread(previous.close)
        self.settings = settings
        if self._taps is not None:
            tap_while(self._taps, self, self.active)

    def _in_thread(self, work: Any, *args: Any) -> Any:
        if self._pool is None:
            self._pool = ThreadPool(1, 1, name="sbc-acc")
            self._pool.start()
        return threads.deferToThreadPool(self.reactor, self._pool, work, *args)

    # -- observers ----------------------------------------------------------------------------
    def wire(self, record: Wire) -> None:
        """One SIP message on the wire (the engine's tap)."""
        if self.active:
            self._write(self.tracker.wire(record))

    def dialog_event(self, event: DialogEvent) -> None:
        """A dialog event (the engine's dialog listener)."""
        if self.active:
            self._write(self.tracker.dialog_event(event, self.reactor.seconds()))

    def _write(self, records: list[CallRecord]) -> None:
        for record in records:
            self.stats.incr("acc_records")
            log.info(
                "acc: call {call_id} ended: {status} {reason}, {duration} s, hung up by {hung_up}",
                call_id=record["call_id"],
                status=record["status"],
                reason=record["reason"],
                duration=record["duration"],
                hung_up=record["hung_up"],
            )
            if self._file is not None:
                try:
                    self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
                except (OSError, ValueError) as error:
                    self.stats.incr("acc_file_errors")
                    log.error("acc: cannot write a record: {error}", error=error)
            if self._db is not None:
                self._in_thread(self._db.write, record).addErrback(self._db_failed, record)

    def _db_failed(self, failure: Any, record: CallRecord) -> None:
        self.stats.incr("acc_db_errors")
        log.error(
            "acc: database write for call {call_id} failed: {error}",
            call_id=record["call_id"],
            error=failure.getErrorMessage(),
        )

    @override
    def stopService(self) -> Any:
        super().stopService()
        if self._file is not None:
            self._file.close()
            self._file = None
        pool, self._pool = self._pool, None
        if pool is None:
            return None
        db = self._db

        def finish() -> None:
            if db is not None:
                db.close()

        # Rows queued before the stop are written first (one thread, in order).
        done = threads.deferToThreadPool(self.reactor, pool, finish)
        done.addBoth(lambda _: pool.stop())
        return done
