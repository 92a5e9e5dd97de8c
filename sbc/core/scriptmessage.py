# -*- test-case-name: tests.core.test_routescript -*-
"""
What every routing-script context shares, request or reply (see L{sbc.core.routescript}):
the source pseudo-variables ($si, $sp, $pr), the NAT tests and fixes of Kamailio's
nathelper and nat_traversal modules, and header edits; and Kamailio's C{exit}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

from sbc.core.address import Address
from sbc.core.message import Message
from sbc.core.nat import NatPolicy, client_nat_test, is_rfc1918, nat_uac_test
from sbc.core.natfix import (
    add_contact_alias,
    add_rcv_param,
    fix_nated_contact,
    set_contact_alias,
    source_uri,
)
from sbc.core.sdp import SdpError, fix_nated_sdp
from sbc.core.uri import SipUri, parse_uri

if TYPE_CHECKING:  # pragma: no cover
    from sbc.core.scripthost import ScriptHost

__all__ = ["ScriptExit", "MessageContext", "script_uri"]


class ScriptExit(Exception):  # noqa: N818 - Kamailio's exit, not an error
    """Raised by L{RequestContext.exit}: stop the route here (Kamailio's C{exit})."""


def script_uri(value: Union[str, SipUri]) -> SipUri:
    uri = parse_uri(value) if isinstance(value, str) else value
    if not isinstance(uri, SipUri):
        raise ValueError(f"not a SIP URI: {value!r}")
    return uri


class MessageContext:
    """What request and reply contexts share: source pseudo-variables, NAT tests and
    fixes, header edits."""

    def __init__(self, proxy: ScriptHost, message: Message, source: Address) -> None:
        self._proxy = proxy
        self.message = message
        self._source = source

    # -- pseudo-variables ------------------------------------------------------------------
    @property
    def si(self) -> str:
        """$si: the source IP address."""
        return self._source.host

    @property
    def sp(self) -> int:
        """$sp: the source port."""
        return self._source.port

    @property
    def pr(self) -> str:
        """$pr: the transport it came over (udp, tcp, tls)."""
        return self._source.transport

    @property
    def source_uri(self) -> str:
        """$source_uri (nat_traversal): sip:ip:port[;transport=x] of the source."""
        return source_uri(self._source)

    @property
    def nat_policy(self) -> NatPolicy:
        """The [nat] policy in force (read-only)."""
        return self._proxy.settings.nat

    @property
    def rr_count(self) -> int:
        """$rr_count: Record-Route entries in the message."""
        return len(self.message.record_routes)

    @property
    def rr_top_count(self) -> int:
        """nathelper's $rr_top_count: 2 when the topmost Record-Route URI has a non-empty
        C{r2} parameter (one proxy's double Record-Route), 1 otherwise, 0 without any."""
        routes = self.message.record_routes
        if not routes:
            return 0
        uri = routes[0].uri
        return 2 if isinstance(uri, SipUri) and uri.param("r2") else 1

    @property
    def has_body(self) -> bool:
        return bool(self.message.body)

    def get_header(self, name: str) -> Optional[str]:
        """$hdr(name): the first value of header C{name} (None if absent)."""
        return self.message.get(name)

    # -- NAT tests (nathelper) -----------------------------------------------------------
    def nat_uac_test(self, flags: Union[int, str]) -> bool:
        """nathelper's nat_uac_test(flags)."""
        return nat_uac_test(self.message, self._source, int(flags), self.nat_policy.ranges)

    def client_nat_test(self, flags: Union[int, str]) -> bool:
        """nat_traversal's client_nat_test(flags)."""
        return client_nat_test(self.message, self._source, int(flags), self.nat_policy.ranges)

    @staticmethod
    def is_rfc1918(address: str) -> bool:
        """nathelper's is_rfc1918(ip): a private address (RFC 1918, RFC 6598, ...)."""
        return is_rfc1918(address)

    # -- fixes (nathelper) ----------------------------------------------------------------
    def fix_nated_contact(self) -> bool:
        """Rewrite the first Contact's host and port to the source address."""
        self.message = fix_nated_contact(self.message, self._source)
        return True

    def fix_contact(self) -> bool:
        """nat_traversal's fix_contact(): the same rewrite as fix_nated_contact."""
        return self.fix_nated_contact()

    def add_contact_alias(self) -> bool:
        """Add C{;alias=ip~port~proto} of the source to the first Contact."""
        self.message = add_contact_alias(self.message, self._source)
        return True

    def set_contact_alias(self, trim: bool = False) -> bool:
        """The alias inside the Contact URI (nathelper's set_contact_alias)."""
        self.message = set_contact_alias(self.message, self._source, trim)
        return True

    def fix_nated_sdp(self, flags: Union[int, str], ip: Optional[str] = None) -> bool:
        """nathelper's fix_nated_sdp(flags[, ip]): False when the body is not SDP sbc can
        change."""
        if not self.message.body:
            return False
        try:
            body, changed = fix_nated_sdp(self.message.body, int(flags), ip or self._source.host)
        except SdpError:
            return False
        self.message = self.message.with_body(body)
        return changed

    def add_rcv_param(self, uri_param: bool = False) -> bool:
        """Add C{;received="sip:ip:port"} to each Contact (or inside the URI)."""
        self.message = add_rcv_param(self.message, self._source, uri_param)
        return True

    # -- headers ---------------------------------------------------------------------------
    def append_hf(self, text: str) -> bool:
        """Append a header line C{Name: value} (a trailing CRLF is allowed)."""
        name, colon, value = text.strip().partition(":")
        if not colon or not name.strip():
            raise ValueError(f"append_hf: expected 'Name: value', got {text!r}")
        self.message = self.message.with_header_appended(name.strip(), value.strip())
        return True

    def remove_hf(self, name: str) -> int:
        """Remove every header C{name}; how many there were."""
        count = len(self.message.get_all(name))
        if count:
            self.message = self.message.without(name)
        return count

    def is_present_hf(self, name: str) -> bool:
        return self.message.has(name)
