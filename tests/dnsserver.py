"""
A small authoritative DNS server on twisted.names, for tests that want real DNS on the wire.

Run as C{python -m tests.dnsserver --zone ZONEFILE --listen 127.0.0.1:0}: it serves the zone
over UDP and TCP on one port and prints C{ready HOST PORT} once listening.  The zone file is
Python (L{twisted.names.authority.PySourceAuthority}): C{zone = [SOA(...), A(...), ...]} with
every C{Record_*} type of L{twisted.names.dns} by its short name, first argument the owner;
NAPTR flags, service and regexp may be given as text.  As BIND does, the addresses of SRV
targets known to the zone come along in the additional section (C{--no-additional}: not).
With C{--log PATH} every query is appended to PATH as C{name TYPE} before it is answered.

L{dns_server} runs one in a subprocess for the length of a C{with} block.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import IO, Any, Optional

from twisted.names import authority, dns, server

__all__ = ["DnsServer", "dns_server", "main"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ZoneAuthority(authority.PySourceAuthority):
    """A Python-source zone whose SRV answers carry their targets' addresses (optional)."""

    def __init__(self, filename: str, additional: bool = True) -> None:
        self.srv_additional = additional
        super().__init__(filename)

    def setupConfigNamespace(self) -> dict[str, Any]:  # noqa: N802 - Twisted's name
        namespace = super().setupConfigNamespace()
        plain = namespace["NAPTR"]

        def naptr(name: str, *args: Any, **kwargs: Any) -> Any:
            args = tuple(
                a.encode() if isinstance(a, str) and i in (2, 3, 4) else a
                for i, a in enumerate(args)
            )
            for key in ("flags", "service", "regexp"):
                if isinstance(kwargs.get(key), str):
                    kwargs[key] = kwargs[key].encode()
            return plain(name, *args, **kwargs)

        namespace["NAPTR"] = naptr
        return namespace

    def _additionalRecords(self, answer: Any, authority: Any, ttl: int) -> Iterator[Any]:  # noqa: N802
        yield from super()._additionalRecords(answer, authority, ttl)
        if not self.srv_additional:
            return
        for record in answer:
            if record.type != dns.SRV:
                continue
            target = record.payload.target.name
            for rec in self.records.get(target.lower(), ()):
                if rec.TYPE in self._ADDRESS_TYPES:
                    yield dns.RRHeader(target, rec.TYPE, dns.IN, rec.ttl or ttl, rec, auth=True)


class QueryLoggingFactory(server.DNSServerFactory):
    """A DNS server factory that writes each query to a log file before answering it."""

    def __init__(self, authorities: list[Any], log: Optional[IO[str]] = None) -> None:
        super().__init__(authorities=authorities)
        self.log = log

    def handleQuery(self, message: Any, protocol: Any, address: Any) -> Any:  # noqa: N802
        if self.log is not None:
            for query in message.queries:
                kind = dns.QUERY_TYPES.get(query.type, str(query.type))
                self.log.write(f"{query.name.name.decode('ascii', 'replace')} {kind}\n")
            self.log.flush()
        return super().handleQuery(message, protocol, address)


def _split_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: Optional[list[str]] = None) -> int:
    """Serve a zone until terminated."""
    parser = argparse.ArgumentParser(prog="python -m tests.dnsserver", description=__doc__)
    parser.add_argument("--zone", required=True, help="a PySourceAuthority zone file")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any)")
    parser.add_argument("--log", help="append every query to this file")
    parser.add_argument("--no-additional", action="store_true", help="no SRV target glue")
    args = parser.parse_args(argv)

    from twisted.internet import reactor
    from twisted.internet.error import CannotListenError

    zone = ZoneAuthority(args.zone, additional=not args.no_additional)
    log = open(args.log, "a", encoding="utf-8") if args.log else None
    factory = QueryLoggingFactory([zone], log)
    host, port = _split_listen(args.listen)
    for _ in range(50):
        udp = reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface=host)
        bound = udp.getHost().port
        try:
            reactor.listenTCP(bound, factory, interface=host)
        except CannotListenError:
            udp.stopListening()
            if port:
                raise
            continue
        break
    else:
        raise SystemExit("no port free for both UDP and TCP")
    print(f"ready {host} {bound}", flush=True)
    reactor.run()
    return 0


class DnsServer:
    """
    A running L{main} in a subprocess; unpacks as C{(host, port)}.

    @ivar host: the address it listens on.
    @ivar port: the UDP and TCP port.
    @ivar log_path: the file its queries are written to.
    """

    def __init__(self, host: str, port: int, log_path: str) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path

    def __iter__(self) -> Iterator[Any]:
        return iter((self.host, self.port))

    def queries(self) -> list[tuple[str, str]]:
        """Every (name, TYPE) asked so far, oldest first (written before each answer)."""
        with open(self.log_path, encoding="utf-8") as f:
            return [tuple(line.split()) for line in f if line.strip()]  # type: ignore[misc]


@contextlib.contextmanager
def dns_server(
    zone_text: str, host: str = "127.0.0.1", *, additional: bool = True, timeout: float = 15.0
) -> Iterator[DnsServer]:
    """
    Serve C{zone_text} (a Python zone file) on C{host} on a free port for the length of the
    block; the server is terminated by PID afterwards.
    """
    folder = tempfile.mkdtemp(prefix="sbc-dns-")
    zone_path = os.path.join(folder, "zone.py")
    log_path = os.path.join(folder, "queries.log")
    with open(zone_path, "w", encoding="utf-8") as f:
        f.write(zone_text)
    open(log_path, "w").close()
    command = [sys.executable, "-m", "tests.dnsserver", "--zone", zone_path]
    command += ["--listen", f"[{host}]:0" if ":" in host else f"{host}:0", "--log", log_path]
    if not additional:
        command.append("--no-additional")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while not line.startswith("ready"):
            left = deadline - time.monotonic()
            readable, _, _ = select.select([process.stdout], [], [], max(left, 0))
            line = process.stdout.readline() if readable else ""
            if not readable or (not line and process.poll() is not None):
                problem = process.stderr.read() if process.poll() is not None else "timeout"
                raise RuntimeError(f"DNS server did not start: {problem}")
        _, bound_host, port = line.split()
        yield DnsServer(bound_host, int(port), log_path)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
