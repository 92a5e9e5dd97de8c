# -*- test-case-name: tests.net.test_relay -*-
"""
What the SIP side asks of a media backend: the built-in relay
(L{sbc.net.relay.RtpRelay}) and the rtpengine client (L{sbc.net.rtpengine.RtpengineClient})
both provide L{MediaBackend}, so the engine does not care which one anchors the media.

Tags follow rtpengine's ng protocol: C{from_tag} is always the tag of the party that made the
offer.  Both backends are Twisted services: C{stopService} ends every session and closes
every socket.

Errors come back as errbacks: L{sbc.core.media.MediaError} (no port left, unknown call,
rtpengine error or no reply; answer the SIP request with 500/503) or
L{sbc.core.sdp.SdpError} (the body cannot be anchored; 488 Not Acceptable Here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, Protocol

from twisted.internet.defer import Deferred

from sbc.core.address import Address
from sbc.core.media import MediaError, PortsExhaustedError, UnknownSessionError
from sbc.core.sdp import SdpError

__all__ = [
    "MediaBackend",
    "MediaError",
    "PortsExhaustedError",
    "UnknownSessionError",
    "SdpError",
    "TimeoutCallback",
]

#: Called with the Call-ID of a call whose media died (the engine ends the dialog).
TimeoutCallback = Callable[[str], None]


class MediaBackend(Protocol):
    """A media anchor: SDP in, SDP pointing at the anchor out."""

    #: Called with a Call-ID when a call's media timed out (and was deleted).
    on_timeout: Optional[TimeoutCallback]

    def offer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: Optional[str],
        sdp: bytes,
        source: Address,
        towards: Optional[Address] = None,
    ) -> Deferred[bytes]:
        """An offer from the party tagged C{from_tag} (whose SIP came from C{source}),
        going C{towards} an address when known.  Fires with the SDP to send on to the other
        party."""

    def answer(
        self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, source: Address
    ) -> Deferred[bytes]:
        """The answer, sent by the party tagged C{to_tag}, to the offer from C{from_tag}.
        Fires with the SDP to send on to the offerer."""

    def delete(
        self, call_id: str, from_tag: Optional[str] = None, to_tag: Optional[str] = None
    ) -> Deferred[None]:
        """End the call's media (the whole call with C{call_id} alone)."""

    def sessions(self) -> list[dict[str, Any]]:
        """Every call with media, for the admin C{rtp_sessions} command."""

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        """Open the control socket or get ready to open relay ports."""

    def stopService(self) -> Optional[Deferred[Any]]:  # noqa: N802 - Twisted's name
        """Delete every session and close every socket."""
