# -*- test-case-name: tests.net.test_hep -*-
"""
HEP capture (Kamailio's C{siptrace} with C{hep_mode_on}): every SIP message sbc receives or
sends, and every RTCP report its built-in relay passes on, is copied as a HEP3 packet over
UDP to C{[siptrace] duplicate_uri}, with the addresses the message really travelled
between and the time it did.  RTCP reports carry the call's Call-ID as correlation id, so
Homer ties them to the call even when the phone is behind NAT (the relay knows which call a
port belongs to; a capture agent on the wire would only see addresses).

Capture never blocks or breaks signalling: a non-blocking socket, errors counted.
"""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING, Optional

from sbc.core.hep import PROTO_RTCP, PROTO_SIP, HepPacket, SiptraceSettings, encode
from sbc.core.rtcp import reports
from sbc.core.stats import Statistics
from sbc.core.wire import Wire, tap_while
from sbc.net.log import logger

if TYPE_CHECKING:  # pragma: no cover
    from sbc.net.engine import WireTap

__all__ = ["HepSender"]

log = logger(__name__)


class HepSender:
    """
    Sends HEP3 copies to the capture server; a L{sbc.net.engine.WireTap} for SIP and the
    relay's RTCP listener.

    @ivar settings: the C{[siptrace]} settings in force (replaced live by L{configure}).
    """

    def __init__(
        self,
        settings: SiptraceSettings,
        stats: Optional[Statistics] = None,
        taps: Optional[list[WireTap]] = None,
    ) -> None:
        """
        @param taps: the engine's wire taps: this sender is one of them while capture is on.
        """
        self.stats = stats if stats is not None else Statistics()
        self.settings = SiptraceSettings()
        self._socket: Optional[socket.socket] = None
        self._taps = taps
        self.configure(settings)

    def configure(self, settings: SiptraceSettings) -> None:
        """New settings (a reload): another capture server, capture id, or on/off."""
        target = settings.duplicate_uri
        old = self.settings.duplicate_uri
        if self._socket is not None and (target is None or old is None or
                                         target.family != old.family):  # fmt: skip
            self._socket.close()
            self._socket = None
        if target is not None and self._socket is None:
            family = socket.AF_INET6 if target.family == 6 else socket.AF_INET
            self._socket = socket.socket(family, socket.SOCK_DGRAM)
            self._socket.setblocking(False)
        self.settings = settings
        if self._taps is not None:
            tap_while(self._taps, self, settings.enabled)
        if settings.enabled:
            log.info(
                "siptrace: HEP3 capture to {target}, capture id {capture_id}",
                target=str(target),
                capture_id=settings.hep_capture_id,
            )

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, packet: HepPacket) -> None:
        settings = self.settings
        if not settings.enabled or self._socket is None:
            return
        target = settings.duplicate_uri
        assert target is not None
        try:
            data = encode(packet)
            self._socket.sendto(data, (target.host, target.port))
        except (OSError, ValueError) as error:
            self.stats.incr("siptrace_errors")
            log.debug("HEP send failed: {error}", error=error)
            return
        self.stats.incr("siptrace_sent")

    def wire(self, record: Wire) -> None:
        """One SIP message received or sent (the engine's tap)."""
        if not self.settings.enabled:
            return
        self._send(
            HepPacket(
                proto_type=PROTO_SIP,
                transport=record.transport,
                source=record.source,
                destination=record.destination,
                time=record.time,
                capture_id=self.settings.hep_capture_id,
                payload=record.data,
                correlation_id=None,
            )
        )

    def rtcp(
        self,
        call_id: str,
        data: bytes,
        source: tuple[str, int],
        destination: tuple[str, int],
        time: float,
    ) -> None:
        """An RTCP packet the relay received for call C{call_id}: its first SR/RR as
        Homer's RTCP JSON, correlated by the Call-ID."""
        if not self.settings.enabled:
            return
        report = reports(data)
        if report is None:
            return
        self._send(
            HepPacket(
                proto_type=PROTO_RTCP,
                transport="udp",
                source=source,
                destination=destination,
                time=time,
                capture_id=self.settings.hep_capture_id,
                payload=json.dumps(report, separators=(",", ":")).encode(),
                correlation_id=call_id,
            )
        )
