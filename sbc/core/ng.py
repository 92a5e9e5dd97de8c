# -*- test-case-name: tests.core.test_ng -*-
"""
rtpengine's ng control protocol: C{<cookie> <bencoded dictionary>} per
message, replies echo the cookie.  Bencode: C{<len>:<bytes>}, C{i<n>e}, C{l...e},
C{d...e} with byte-string keys.  Strings decode to C{str} where they are UTF-8 (SDP,
command names), else stay C{bytes}.  Pure codec: the adapter does the sockets and retries.

The command dictionaries are built as Kamailio's rtpengine module builds them (flags,
tag orientation): L{parse_flags} turns a flag string (C{"replace-origin ICE=remove
trust-address"}) into dictionary entries, L{offer_command}, L{answer_command},
L{delete_command}, L{query_command} and L{ping_command} add the call's identity.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Optional, Union

from sbc.core.syntax import is_digits

__all__ = [
    "NgError",
    "bencode",
    "bdecode",
    "encode_message",
    "decode_message",
    "parse_ng_url",
    "parse_flags",
    "ice_flags",
    "webrtc_flags",
    "ping_command",
    "offer_command",
    "answer_command",
    "delete_command",
    "query_command",
]

Value = Union[int, str, bytes, list, dict]


class NgError(ValueError):
    """A malformed ng message (dropped and counted by the adapter)."""


def bencode(value: Any) -> bytes:
    """Encode ints, strings/bytes, lists and dicts (keys sorted, as bencode asks)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return b"%d:%s" % (len(value), bytes(value))
    if isinstance(value, (list, tuple)):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


_MAX_DEPTH = 32


def _decode(data: bytes, at: int, depth: int) -> tuple[Value, int]:
    if depth > _MAX_DEPTH:
        raise NgError("bencode nested too deeply")
    if at >= len(data):
        raise NgError("bencode ends early")
    c = data[at : at + 1]
    if c == b"i":
        end = data.find(b"e", at)
        if end < 0:
            raise NgError("unterminated integer")
        text = data[at + 1 : end]
        digits = text[1:] if text.startswith(b"-") else text
        if not digits.isdigit() or (digits.startswith(b"0") and text != b"0"):
            raise NgError("bad integer")  # no sign alone, no leading zeros, no -0
        return int(text), end + 1
    if c == b"l":
        at += 1
        items = []
        while data[at : at + 1] != b"e":
            item, at = _decode(data, at, depth + 1)
            items.append(item)
        return items, at + 1
    if c == b"d":
        at += 1
        out: dict[str, Value] = {}
        while data[at : at + 1] != b"e":
            key, at = _decode(data, at, depth + 1)
            if not isinstance(key, (str, bytes)):
                raise NgError("dictionary key is not a string")
            value, at = _decode(data, at, depth + 1)
            out[key if isinstance(key, str) else key.decode("latin-1")] = value
        return out, at + 1
    if c.isdigit():
        colon = data.find(b":", at)
        if colon < 0 or not data[at:colon].isdigit():
            raise NgError("bad string length")
        length = int(data[at:colon])
        end = colon + 1 + length
        if end > len(data):
            raise NgError("string longer than the message")
        raw = data[colon + 1 : end]
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError:
            return raw, end
    raise NgError("not bencode")


def bdecode(data: bytes) -> Value:
    """Decode exactly one value.

    @raise NgError: malformed or trailing bytes."""
    try:
        value, end = _decode(data, 0, 0)
    except RecursionError:
        raise NgError("bencode nested too deeply") from None
    if end != len(data):
        raise NgError("bytes after the bencoded value")
    return value


def encode_message(cookie: str, message: dict) -> bytes:
    """C{<cookie> <bencoded dict>}."""
    return cookie.encode() + b" " + bencode(message)


def decode_message(data: bytes) -> tuple[str, dict]:
    """Split a datagram into its cookie and dictionary.

    @raise NgError: no cookie, or the rest is not a bencoded dictionary."""
    cookie, space, rest = data.partition(b" ")
    if not space or not cookie:
        raise NgError("no cookie")
    value = bdecode(rest)
    if not isinstance(value, dict):
        raise NgError("not a dictionary")
    return cookie.decode("latin-1"), value


# -- rtpengine_sock and command dictionaries ------------------------------------------------------


def parse_ng_url(url: str) -> tuple[str, int]:
    """
    One Kamailio C{rtpengine_sock} URL: C{udp:127.0.0.1:2223}, C{udp6:[::1]:2223} (or
    C{udp6:::1:2223}); a C{=weight} suffix is ignored.

    @return: (host, port), the host bare.
    @raise ValueError: another scheme (ws, wss), or not an IP address and a port.
    """
    url = url.strip().split("=", 1)[0]
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in ("udp", "udp6"):
        raise ValueError(f"rtpengine_sock {url!r}: udp:IP:port or udp6:[IP]:port expected")
    host, colon, port_text = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"rtpengine_sock {url!r}: the host must be an IP address") from None
    if not colon or not is_digits(port_text) or not 0 < int(port_text) <= 65535:
        raise ValueError(f"rtpengine_sock {url!r}: a port 1..65535 expected")
    if (ip.version == 6) != (scheme == "udp6"):
        raise ValueError(f"rtpengine_sock {url!r}: udp is for IPv4, udp6 for IPv6")
    return ip.compressed, int(port_text)


#: Flag tokens that pick the C{transport-protocol}, combined into one value.
_TRANSPORT_TOKENS = frozenset({"RTP", "SRTP", "AVP", "AVPF", "DTLS"})
#: C{k=v} flags whose value is an integer.
_INTEGER_KEYS = frozenset({"TOS", "repacketize", "delete-delay"})
#: C{codec-X=Y} flags that go into the C{codec} dictionary.
_CODEC_KEYS = frozenset(
    {"transcode", "strip", "offer", "mask", "set", "except", "accept", "consume"}
)


def _received_from(address: str) -> list[str]:
    return ["IP6" if ":" in address else "IP4", address]


def parse_flags(flags: str) -> dict[str, Any]:
    """
    A Kamailio flag string as dictionary entries: C{replace-X} → C{replace}
    list, C{direction=X} (twice: sender side then receiver side), C{internal}, C{external} →
    C{direction} list, C{ICE=X} and other C{k=v} → C{k: v}, C{rtcp-mux-X}, C{SDES-X},
    C{T.38=X} → lists, C{codec-X=Y} → C{codec} dictionary, C{RTP SRTP AVP AVPF DTLS} (or an
    explicit profile with a slash) → C{transport-protocol}, C{TOS=n}, C{repacketize=n},
    C{delete-delay=n} → integers, C{received-from=IP} → C{["IP4"|"IP6", IP]}, any other bare
    token → C{flags} list.  C{to-tag}, C{to-tag=X}, C{from-tag=X}, C{call-id=X} and
    C{force-answer} are returned under those keys for the command builders.

    @raise ValueError: an integer flag whose value is not one.
    """
    out: dict[str, Any] = {}
    transport: set[str] = set()

    def append(key: str, value: str) -> None:
        out.setdefault(key, []).append(value)

    for token in flags.split():
        key, eq, value = token.partition("=")
        if not eq:
            if token.startswith("replace-") and len(token) > 8:
                append("replace", token[8:])
            elif token in ("internal", "external"):
                append("direction", token)
            elif token.startswith("rtcp-mux-") and len(token) > 9:
                append("rtcp-mux", token[9:])
            elif token.startswith("SDES-") and len(token) > 5:
                append("SDES", token[5:])
            elif token in _TRANSPORT_TOKENS:
                transport.add(token)
            elif "/" in token:
                out["transport-protocol"] = token
            elif token in ("to-tag", "force-answer"):
                out[token] = True
            else:
                append("flags", token)
        elif key == "direction":
            append("direction", value)
        elif key in ("rtcp-mux", "SDES", "T.38"):
            append(key, value)
        elif key.startswith("codec-") and key[6:] in _CODEC_KEYS:
            out.setdefault("codec", {}).setdefault(key[6:], []).append(value)
        elif key in _INTEGER_KEYS:
            if not value.lstrip("-").isdigit():
                raise ValueError(f"flag {key} wants an integer, not {value!r}")
            out[key] = int(value)
        elif key == "received-from":
            out["received-from"] = _received_from(value)
        else:
            out[key] = value
    if transport:
        secure = "S" if transport & {"SRTP", "DTLS"} else ""
        profile = f"RTP/{secure}AVPF" if "AVPF" in transport else f"RTP/{secure}AVP"
        out["transport-protocol"] = f"UDP/TLS/{profile}" if "DTLS" in transport else profile
    return out


def ice_flags(flags: str, towards_ice: Optional[bool]) -> str:
    """
    C{flags} with the C{ICE=} rtpengine should apply to the SDP it sends on: C{ICE=force}
    when the side receiving it signalled ICE in its own SDP (rtpengine then stands in as its
    ICE peer), C{ICE=remove} when it did not or is not known yet (RFC 8445 §5.4: an agent
    only uses ICE when both SDPs carry it).  An operator's own C{ICE=} other than
    C{remove} is left alone.
    """
    tokens = flags.split()
    chosen = [t for t in tokens if t.startswith("ICE=")]
    if any(t != "ICE=remove" for t in chosen):
        return flags
    kept = [t for t in tokens if not t.startswith("ICE=")]
    return " ".join([*kept, "ICE=force" if towards_ice else "ICE=remove"])


#: Flag tokens this module chooses per side; an operator's own ones are dropped.
_PROFILE_TOKENS = ("ICE=", "DTLS=", "SDES-", "rtcp-mux-", "address-family=")


def webrtc_flags(
    flags: str, op: str, towards_webrtc: bool, towards_family: Optional[int] = None
) -> str:
    """
    C{flags} with what rtpengine needs to bridge a WebRTC side and a plain RTP side, for
    the side that receives the SDP rtpengine writes: towards a WebRTC client, DTLS-SRTP
    with AVPF feedback, ICE, no SDES, RTCP multiplexed (C{rtcp-mux-offer} in an offer,
    C{rtcp-mux-accept} in an answer; RFC 8834 §4.5, RFC 8827 §6.5).  In an answer
    rtpengine takes the DTLS client role (C{a=setup:active}, RFC 5763 §5): it starts the
    handshake on the ICE pair it selected, which works even when the browser nominates
    another pair of its own (a browser on several interfaces); as the passive side it would
    wait for a handshake that arrives on a pair it does not use.  Towards a plain
    phone, C{RTP/AVP} without ICE, DTLS or SDES and RTCP on its own port
    (C{rtcp-mux-demux}).  C{towards_family} (4 or 6) adds C{address-family}.  This is
    Kamailio's usual C{rtpengine_manage} flag set for WebRTC gateways.
    """
    kept = [
        t
        for t in flags.split()
        if not t.startswith(_PROFILE_TOKENS) and "/" not in t and t not in _TRANSPORT_TOKENS
    ]
    if towards_webrtc:
        mux = "rtcp-mux-offer" if op == "offer" else "rtcp-mux-accept"
        dtls = "DTLS=passive" if op == "offer" else "DTLS=active"
        kept += ["UDP/TLS/RTP/SAVPF", "ICE=force", dtls, "SDES-off", mux]
    else:
        kept += ["RTP/AVP", "ICE=remove", "DTLS=off", "SDES-off", "rtcp-mux-demux"]
    if towards_family in (4, 6):
        kept.append(f"address-family=IP{towards_family}")
    return " ".join(kept)


def ping_command() -> dict[str, Any]:
    """C{{command: ping}} (the reply is C{{result: pong}})."""
    return {"command": "ping"}


def _command(
    command: str,
    call_id: str,
    from_tag: Optional[str],
    to_tag: Optional[str],
    *,
    flags: str,
    received_from: Optional[str],
    sip_message_type: Optional[str],
    sdp: Optional[Union[str, bytes]] = None,
) -> dict[str, Any]:
    parsed = parse_flags(flags)
    if parsed.pop("force-answer", False) and command == "offer":
        command = "answer"
    use_to_tag = parsed.pop("to-tag", None)
    if isinstance(use_to_tag, str):
        to_tag = use_to_tag
    call_id = parsed.pop("call-id", call_id)
    from_tag = parsed.pop("from-tag", from_tag)
    message: dict[str, Any] = {"supports": ["load limit"]}
    if sip_message_type is not None:
        message["sip-message-type"] = sip_message_type
    message.update(parsed)
    if received_from is not None and "received-from" not in message:
        message["received-from"] = _received_from(received_from)
    message["command"] = command
    message["call-id"] = call_id
    if from_tag is not None:
        message["from-tag"] = from_tag
    if to_tag is not None and (command != "delete" or use_to_tag):
        message["to-tag"] = to_tag
    if sdp is not None:
        message["sdp"] = sdp
    return message


def offer_command(
    call_id: str,
    from_tag: str,
    sdp: Union[str, bytes],
    *,
    to_tag: Optional[str] = None,
    flags: str = "",
    received_from: Optional[str] = None,
    sip_message_type: Optional[str] = "sip_request",
) -> dict[str, Any]:
    """
    An ng C{offer}: C{from_tag} is the tag of the party that sent the SDP (for a
    late offer in a reply, the To tag; C{to_tag} then the From tag, as Kamailio's rtpengine module).

    @param received_from: the SIP source address (C{received-from}).
    @param sip_message_type: C{sip_request} or C{sip_reply} (L{None}: not sent; rtpengine
        10.5 logs it as an unknown key).
    """
    return _command(
        "offer",
        call_id,
        from_tag,
        to_tag,
        flags=flags,
        received_from=received_from,
        sip_message_type=sip_message_type,
        sdp=sdp,
    )


def answer_command(
    call_id: str,
    from_tag: str,
    to_tag: str,
    sdp: Union[str, bytes],
    *,
    flags: str = "",
    received_from: Optional[str] = None,
    sip_message_type: Optional[str] = "sip_reply",
) -> dict[str, Any]:
    """An ng C{answer}: C{from_tag} is the offerer's tag, C{to_tag} the answerer's."""
    return _command(
        "answer",
        call_id,
        from_tag,
        to_tag,
        flags=flags,
        received_from=received_from,
        sip_message_type=sip_message_type,
        sdp=sdp,
    )


def delete_command(
    call_id: str,
    from_tag: Optional[str] = None,
    *,
    to_tag: Optional[str] = None,
    flags: str = "",
    received_from: Optional[str] = None,
    sip_message_type: Optional[str] = "sip_request",
) -> dict[str, Any]:
    """
    An ng C{delete}: the whole call unless the C{to-tag} flag is given, in which case
    C{to_tag} is sent too; C{from_tag} is the From tag of the BYE (or none: the
    call by its Call-ID).  C{delete-delay=0} in C{flags} frees it at once.
    """
    return _command(
        "delete",
        call_id,
        from_tag,
        to_tag,
        flags=flags,
        received_from=received_from,
        sip_message_type=sip_message_type,
    )


def query_command(
    call_id: str, from_tag: Optional[str] = None, to_tag: Optional[str] = None
) -> dict[str, Any]:
    """An ng C{query}: totals and tags of a call."""
    message: dict[str, Any] = {"command": "query", "call-id": call_id}
    if from_tag is not None:
        message["from-tag"] = from_tag
    if to_tag is not None:
        message["to-tag"] = to_tag
    return message
