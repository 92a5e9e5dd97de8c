# -*- test-case-name: tests.core.test_natfix -*-
"""
Fixing messages from clients behind NAT (Kamailio nathelper): Contact aliasing (the RFC-friendly
way: C{;alias=ip~port~proto} on the way in, resolved from the Request-URI on the way back),
Contact rewriting, and the source URI registrars store as C{received}.

Every function takes the message and explicit addresses and returns a new message; none is
applied twice (an alias already present, ours or a stale one from elsewhere, is replaced).
"""

from __future__ import annotations

from typing import Optional

from sbc.core.address import TRANSPORTS, Address, normalise_host
from sbc.core.message import Message, Request
from sbc.core.syntax import is_digits
from sbc.core.uri import NameAddr, SipUri, format_host, is_ip_literal

__all__ = [
    "PROTO_DIGITS",
    "source_uri",
    "alias_value",
    "add_contact_alias",
    "add_contact_alias_to",
    "set_contact_alias",
    "alias_to_uri",
    "add_rcv_param",
    "handle_ruri_alias",
    "decode_alias",
    "fix_nated_contact",
    "with_first_contact",
    "AliasError",
]

#: Kamailio's transport numbers used in alias values (C{enum sip_protos}).
PROTO_DIGITS = {"udp": 1, "tcp": 2, "tls": 3, "sctp": 4, "ws": 5, "wss": 6}
_DIGIT_NAMES = {1: "udp", 2: "tcp", 3: "tls", 4: "sctp", 5: "ws", 6: "wss"}


class AliasError(ValueError):
    """An alias parameter that cannot be decoded (Kamailio's -1)."""


def source_uri(source: Address) -> str:
    """The source URI: C{sip:ip:port}, plus C{;transport=} unless UDP (what registrars store)."""
    uri = f"sip:{format_host(source.host)}:{source.port}"
    if source.transport != "udp":
        uri += f";transport={source.transport}"
    return uri


def alias_value(source: Address) -> str:
    """The alias value: C{ip~port~digit}, IPv6 in brackets."""
    return f"{format_host(source.host)}~{source.port}~{PROTO_DIGITS[source.transport]}"


def with_first_contact(message: Message, contact: NameAddr) -> Message:
    """Return C{message} with its first Contact element replaced by C{contact}."""
    return message.with_first_value("Contact", str(contact))


def _first_contact(message: Message) -> Optional[NameAddr]:
    if message.contact_star or not message.contacts:
        return None
    contact = message.contacts[0]
    return contact if isinstance(contact.uri, SipUri) else None


def add_contact_alias(message: Message, source: Address) -> Message:
    """
    C{add_contact_alias()}: add C{;alias=<source>} right after host[:port] of the
    first Contact URI, unless that URI already names the source exactly (IP, port, and
    transport, a missing C{;transport=} counting as UDP, unlike Kamailio).  An alias
    already there is removed first, so the function is idempotent.
    """
    contact = _first_contact(message)
    if contact is None:
        return message
    uri = contact.uri
    assert isinstance(uri, SipUri)
    params = tuple((k, v) for k, v in uri.params if k != "alias")
    same = (
        is_ip_literal(uri.host)
        and normalise_host(uri.host) == normalise_host(source.host)
        and (uri.port or 5060) == source.port
        and uri.transport == source.transport
    )
    if same:
        if params == uri.params:
            return message
        return with_first_contact(message, contact.evolve(uri=uri.evolve(params=params)))
    new_uri = uri.evolve(params=(("alias", alias_value(source)), *params))
    return with_first_contact(message, contact.evolve(uri=new_uri))


def add_contact_alias_to(message: Message, host: str, port: str, proto: str) -> Message:
    """
    C{add_contact_alias(ip, port, proto)}: always add the given alias (no equality
    check), after host[:port] of the first Contact URI.

    @raise AliasError: ip not an IP address, port outside 1..65535, unknown proto.
    """
    proto = proto.lower()
    if not is_ip_literal(host) or not is_digits(port) or not 0 < int(port) < 65536:
        raise AliasError("bad alias address")
    if proto not in PROTO_DIGITS:
        raise AliasError("bad alias transport")
    contact = _first_contact(message)
    if contact is None:
        return message
    uri = contact.uri
    assert isinstance(uri, SipUri)
    value = f"{format_host(normalise_host(host))}~{int(port)}~{PROTO_DIGITS[proto]}"
    params = tuple((k, v) for k, v in uri.params if k != "alias")
    return with_first_contact(
        message, contact.evolve(uri=uri.evolve(params=(("alias", value), *params)))
    )


def set_contact_alias(message: Message, source: Address, trim: bool = False) -> Message:
    """
    C{set_contact_alias([trim])}: append C{;alias=<source>} at the end of the first
    Contact URI, even when the addresses match; with C{trim}, an alias at the end of the URI
    is removed first.
    """
    contact = _first_contact(message)
    if contact is None:
        return message
    uri = contact.uri
    assert isinstance(uri, SipUri)
    params = uri.params
    if trim and params and params[-1][0] == "alias":
        params = params[:-1]
    new_uri = uri.evolve(params=(*params, ("alias", alias_value(source))))
    return with_first_contact(message, contact.evolve(uri=new_uri))


def alias_to_uri(message: Message) -> str:
    """
    C{set_alias_to_pv()}: the alias of the first Contact as a URI,
    C{sip:ip:port;transport=name} (the transport always written, even udp).

    @raise AliasError: no alias, or one that does not decode.
    """
    contact = _first_contact(message)
    value = contact.uri.param("alias") if contact is not None else None  # type: ignore[union-attr]
    if not value:
        raise AliasError("no alias in Contact")
    target = decode_alias(value)
    return f"sip:{format_host(target.host)}:{target.port};transport={target.transport}"


def add_rcv_param(message: Message, source: Address, uri_param: bool = False) -> Message:
    """
    C{add_rcv_param([flag])}, for a REGISTER relayed to another registrar: every
    Contact gets C{;received="<source uri>"} as a header parameter, or (C{uri_param}) an
    unquoted URI parameter, which is allowed over UDP only.

    @raise AliasError: the URI form over a stream transport.
    """
    if uri_param and source.transport != "udp":
        raise AliasError("received as a URI parameter needs UDP")
    if message.contact_star or not message.contacts:
        return message
    value = source_uri(source)
    out = []
    for contact in message.contacts:
        if uri_param and isinstance(contact.uri, SipUri):
            out.append(contact.evolve(uri=contact.uri.with_param("received", value)))
        else:
            out.append(contact.with_param("received", f'"{value}"'))
    return message.with_header("Contact", ", ".join(str(c) for c in out))


def decode_alias(value: str) -> Address:
    """Decode C{ip~port~digit}; transports sbc does not speak are refused too.

    @raise AliasError: malformed value, unknown digit, or a transport sbc lacks."""
    parts = value.split("~")
    if len(parts) != 3:
        raise AliasError("alias is not ip~port~proto")
    host, port_text, digit_text = parts
    if not is_ip_literal(host) or not is_digits(port_text) or not 0 < int(port_text) < 65536:
        raise AliasError("bad alias address")
    if len(digit_text) != 1 or not is_digits(digit_text) or int(digit_text) not in _DIGIT_NAMES:
        raise AliasError("bad alias transport")
    transport = _DIGIT_NAMES[int(digit_text)]
    if transport not in TRANSPORTS:
        raise AliasError(f"alias transport {transport} is not served")
    return Address(transport, normalise_host(host), int(port_text))


def handle_ruri_alias(request: Request, last: bool = False) -> tuple[Request, Optional[Address]]:
    """
    C{handle_ruri_alias([mode])}: take the alias out of the Request-URI and return
    where the request really goes.  Without an alias: the request unchanged and L{None}.

    @raise AliasError: an alias that does not decode (the caller answers 400).
    """
    uri = request.uri
    if not isinstance(uri, SipUri):
        return request, None
    values = [v for k, v in uri.params if k == "alias"]
    if not values:
        return request, None
    target = decode_alias((values[-1] if last else values[0]) or "")
    params = tuple((k, v) for k, v in uri.params if k != "alias")
    return request.with_uri(uri.evolve(params=params)), target


def fix_nated_contact(message: Message, source: Address) -> Message:
    """
    C{fix_nated_contact()}: host:port of the first Contact URI become the source
    address (port always written, IPv6 bracketed, C{maddr} removed); user, other params
    and display name kept.  Idempotent: a Contact already naming the source is left alone.
    """
    contact = _first_contact(message)
    if contact is None:
        return message
    uri = contact.uri
    assert isinstance(uri, SipUri)
    host = format_host(source.host)
    if uri.host == host and uri.port == source.port and not uri.has_param("maddr"):
        return message
    params = tuple((k, v) for k, v in uri.params if k.lower() != "maddr")
    new_uri = uri.evolve(host=host, port=source.port, params=params)
    return with_first_contact(message, contact.evolve(uri=new_uri))
