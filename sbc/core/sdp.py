# -*- test-case-name: tests.core.test_sdp -*-
"""
SDP (RFC 4566) as lines: just enough structure to find and rewrite addresses, with every
line sbc does not touch kept byte for byte.

An SDP body is a session part (up to the first C{m=}) and media sections.  The NAT code
reads C{c=}/C{o=} addresses (L{session_connection}, L{media_connections}) and rewrites
them with L{fix_nated_sdp} (Kamailio nathelper's function of that name).

Media anchoring (RFC 3264) reads every stream with L{media_streams} and points it at a relay
with L{anchor_sdp}: C{m=} ports, C{c=} and C{a=rtcp} (RFC 3605) rewritten, the peer's ICE
(RFC 8839) removed, or replaced by the relay as an ICE-lite agent towards a side that
speaks ICE, the C{o=} version bumped when anything changed (RFC 3264 §8).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

from sbc.core.ice import IceCredentials, candidate_line
from sbc.core.syntax import is_digits

__all__ = [
    "SdpLines",
    "parse_sdp",
    "session_connection",
    "media_connections",
    "connection_address",
    "fix_nated_sdp",
    "MediaStream",
    "media_streams",
    "anchor_sdp",
    "sdp_has_ice",
    "sdp_is_dtls",
    "DTLS_PROFILES",
    "ICE_ATTRIBUTES",
    "SdpError",
]


class SdpError(ValueError):
    """The body is not SDP sbc can change safely."""


@dataclass(frozen=True)
class SdpLines:
    """
    An SDP body split into lines (without line ends).

    @ivar eol: the line end the body uses (CRLF normally).
    @ivar media_starts: index of every C{m=} line.
    """

    lines: tuple[str, ...]
    eol: str
    media_starts: tuple[int, ...]

    def serialise(self) -> bytes:
        """The body again, every line ended with C{eol}."""
        return "".join(line + self.eol for line in self.lines).encode("utf-8", "surrogateescape")


def parse_sdp(body: bytes) -> SdpLines:
    """Split C{body} into lines; trailing empty lines are dropped."""
    text = body.decode("utf-8", "surrogateescape")
    eol = "\r\n" if "\r\n" in text else "\n"
    lines = text.split(eol)
    while lines and lines[-1] == "":
        lines.pop()
    if not lines or not lines[0].startswith("v="):
        raise SdpError("not SDP: no v= line first")
    starts = tuple(i for i, line in enumerate(lines) if line.startswith("m="))
    return SdpLines(tuple(lines), eol, starts)


def connection_address(line: str) -> Optional[tuple[str, str]]:
    """(address type, address) of a C{c=} line (TTL/count suffix dropped), or L{None}."""
    parts = line[2:].split()
    if len(parts) < 3 or parts[0] != "IN":
        return None
    return parts[1], parts[2].split("/")[0]


def session_connection(sdp: SdpLines) -> Optional[str]:
    """The session-level C{c=} address, or L{None}."""
    end = sdp.media_starts[0] if sdp.media_starts else len(sdp.lines)
    for line in sdp.lines[:end]:
        if line.startswith("c="):
            parsed = connection_address(line)
            return parsed[1] if parsed else None
    return None


def media_connections(sdp: SdpLines) -> list[Optional[str]]:
    """For each media section, its effective address: its own C{c=}, else the session's."""
    session = session_connection(sdp)
    out: list[Optional[str]] = []
    bounds = list(sdp.media_starts) + [len(sdp.lines)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        address = session
        for line in sdp.lines[start:end]:
            if line.startswith("c="):
                parsed = connection_address(line)
                address = parsed[1] if parsed else None
        out.append(address)
    return out


def _is_null(address: str) -> bool:
    if address == "0.0.0.0":
        return True
    return ":" in address and set(address) <= {"0", ":"}


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def fix_nated_sdp(
    body: bytes,
    flags: int,
    address: str,
    *,
    nortpproxy_str: str = "a=nortpproxy:yes",
    append_oldmediaip: bool = True,
) -> tuple[bytes, bool]:
    """
    Kamailio nathelper's C{fix_nated_sdp(flags, address)}.

    0x01 adds C{a=direction:active} to every media section; 0x02 rewrites every C{c=}
    address; 0x04 appends C{nortpproxy_str}; 0x08 rewrites every C{o=} address; with 0x02
    or 0x08, C{a=rtcp:port IN IP4 addr} lines are rewritten too.  Null addresses (on hold)
    and addresses already equal to C{address} are left alone; each rewritten line adds an
    C{a=oldmediaip} line at the end (RTCP lines first, then c=, then o=).
    @return: the new body and whether any address was replaced.
    @raise SdpError: mixed address families among c= (or o=) lines, or a line without one.
    """
    sdp = parse_sdp(body)
    lines = list(sdp.lines)
    if flags & 0x01:
        for start in reversed([*sdp.media_starts[1:], len(lines)] if sdp.media_starts else []):
            lines.insert(start, "a=direction:active")
    old_lines: list[str] = []
    rewrite_addresses = flags & (0x02 | 0x08)
    for prefix, wanted in (
        ("a=rtcp:", rewrite_addresses),
        ("c=", flags & 0x02),
        ("o=", flags & 0x08),
    ):
        if not wanted:
            continue
        families = set()
        for i, line in enumerate(lines):
            if not line.startswith(prefix):
                continue
            parts = line.split(" ")
            if prefix == "a=rtcp:":
                if len(parts) < 4 or parts[1] != "IN":
                    continue  # a=rtcp without an address
                family_index, address_index = 2, 3
            elif prefix == "c=":
                parts = line[2:].split(" ")
                if len(parts) < 3 or parts[1] not in ("IP4", "IP6"):
                    raise SdpError("c= line without IP4/IP6")
                family_index, address_index = 1, 2
            else:
                parts = line[2:].split(" ")
                if len(parts) < 6 or parts[4] not in ("IP4", "IP6"):
                    raise SdpError("o= line without IP4/IP6")
                family_index, address_index = 4, 5
            families.add(parts[family_index])
            old = parts[address_index].split("/")[0]
            if _is_null(old) or _same_address(old, address):
                continue
            suffix = parts[address_index][len(old) :]
            parts[address_index] = address + suffix
            head = "" if prefix == "a=rtcp:" else prefix
            lines[i] = head + " ".join(parts)
            tag = "a=oldmediaip6:" if ":" in old else "a=oldmediaip:"
            old_lines.append(tag + old)
        if len(families) > 1:
            raise SdpError(f"mixed address families in {prefix} lines")
    if flags & 0x04 and nortpproxy_str:
        lines.append(nortpproxy_str)
    if append_oldmediaip:
        lines.extend(old_lines)
    new = SdpLines(tuple(lines), sdp.eol, sdp.media_starts)
    return new.serialise(), bool(old_lines)


# -- media anchoring (RFC 3264) -----------------------------------------------------------------

#: The ICE attributes (RFC 8839 §5) removed when media is anchored: the relay is the only
#: candidate, as rtpengine's C{ICE: remove}.
ICE_ATTRIBUTES = frozenset(
    {
        "candidate",
        "ice-ufrag",
        "ice-pwd",
        "ice-options",
        "ice-lite",
        "ice-mismatch",
        "remote-candidates",
        "end-of-candidates",
    }
)
_DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
#: The attributes that say a side speaks ICE (RFC 8839 §5.1, §5.4).
_ICE_SIGNS = frozenset({"candidate", "ice-ufrag", "ice-pwd"})


@dataclass(frozen=True)
class MediaStream:
    """
    One C{m=} section as the relay sees it.

    @ivar index: position among the C{m=} lines (0-based).
    @ivar media: C{audio}, C{video}, ...
    @ivar port: the RTP port; 0 means the stream is disabled (RFC 3264 §6).
    @ivar port_count: the C{/n} of C{m=audio 4000/2 ...} (1 without it).
    @ivar protocol: C{RTP/AVP}, C{RTP/SAVPF}, ...
    @ivar address: the media C{c=} address, else the session one (L{None} without either).
    @ivar rtcp_port: from C{a=rtcp} (RFC 3605), else C{port + 1}.
    @ivar rtcp_address: the address of C{a=rtcp}, else L{address}.
    @ivar direction: C{sendrecv}, C{sendonly}, C{recvonly} or C{inactive} (media level,
        else session level, else C{sendrecv}).
    @ivar rtcp_mux: C{a=rtcp-mux} (RFC 5761) is present.
    @ivar ice: the stream (or the session) has C{a=ice-ufrag}, C{a=ice-pwd} or
        C{a=candidate}: the side speaks ICE (RFC 8839).
    @ivar ice_ufrag: its C{a=ice-ufrag} (media level, else session level).
    @ivar ice_pwd: ... and C{a=ice-pwd}.
    """

    index: int
    media: str
    port: int
    port_count: int
    protocol: str
    address: Optional[str]
    rtcp_port: int
    rtcp_address: Optional[str]
    direction: str
    rtcp_mux: bool
    ice: bool = False
    ice_ufrag: Optional[str] = None
    ice_pwd: Optional[str] = None

    @property
    def disabled(self) -> bool:
        """Port 0: rejected or removed (RFC 3264 §6, §8.2)."""
        return self.port == 0

    @property
    def held(self) -> bool:
        """This SDP puts the stream on hold: a null connection address (RFC 2543 style),
        C{a=sendonly} or C{a=inactive} (RFC 3264 §8.4), media or session level."""
        null = self.address is not None and _is_null(self.address)
        return null or self.direction in ("sendonly", "inactive")


def _number(text: str, top: int = 65535) -> int:
    if not is_digits(text) or len(text) > 5 or int(text) > top:
        raise SdpError(f"not a port number: {text[:20]!r}")
    return int(text)


def _media_line(line: str) -> tuple[list[str], int, Optional[int]]:
    """The parts of an C{m=} line, its port and its port count (L{None} without C{/n})."""
    parts = line[2:].split(" ")
    if len(parts) < 3 or not parts[0] or not parts[2]:
        raise SdpError("m= line without media, port and protocol")
    port_text, slash, count_text = parts[1].partition("/")
    port = _number(port_text)
    count = _number(count_text) if slash else None
    return parts, port, count


def _attribute(line: str) -> str:
    """The name of an C{a=} line."""
    return line[2:].split(":", 1)[0]


def _split_sections(sdp: SdpLines) -> list[tuple[int, int]]:
    bounds = [*sdp.media_starts, len(sdp.lines)]
    return list(zip(bounds, bounds[1:], strict=False))


def media_streams(body: bytes) -> list[MediaStream]:
    """
    Every C{m=} section of C{body}, in order.

    @raise SdpError: not SDP, or an C{m=} line whose port is not a number.
    """
    sdp = parse_sdp(body)
    lines = sdp.lines
    session_end = sdp.media_starts[0] if sdp.media_starts else len(lines)
    session_address = session_connection(sdp)
    session_direction = "sendrecv"
    session_ice: dict[str, str] = {}
    for line in lines[:session_end]:
        if line.startswith("a=") and line[2:] in _DIRECTIONS:
            session_direction = line[2:]
        elif line.startswith("a=") and _attribute(line) in _ICE_SIGNS:
            session_ice.setdefault(_attribute(line), line[2:].partition(":")[2].strip())
    streams = []
    for index, (start, end) in enumerate(_split_sections(sdp)):
        parts, port, count = _media_line(lines[start])
        address = session_address
        media_address: Optional[str] = None
        rtcp: Optional[tuple[int, Optional[str]]] = None
        direction = session_direction
        mux = False
        ice = dict(session_ice)
        for line in lines[start + 1 : end]:
            if line.startswith("c=") and media_address is None:
                parsed = connection_address(line)
                if parsed:
                    media_address = address = parsed[1]
            elif line.startswith("a="):
                name = _attribute(line)
                if name in _DIRECTIONS and line[2:] == name:
                    direction = name
                elif name == "rtcp-mux":
                    mux = True
                elif name in _ICE_SIGNS:
                    ice[name] = line[2:].partition(":")[2].strip()
                elif name == "rtcp" and rtcp is None:
                    fields = line[7:].split(" ")
                    rtcp_port = _number(fields[0])
                    rtcp_host = fields[3] if len(fields) >= 4 and fields[1] == "IN" else None
                    rtcp = (rtcp_port, rtcp_host)
        if rtcp is None:
            rtcp = (port + 1 if port else 0, None)
        streams.append(
            MediaStream(
                index=index,
                media=parts[0],
                port=port,
                port_count=count or 1,
                protocol=parts[2],
                address=address,
                rtcp_port=rtcp[0],
                rtcp_address=rtcp[1] or address,
                direction=direction,
                rtcp_mux=mux,
                ice=bool(ice),
                ice_ufrag=ice.get("ice-ufrag") or None,
                ice_pwd=ice.get("ice-pwd") or None,
            )
        )
    return streams


def _connection_parts(line: str) -> list[str]:
    parts = line[2:].split(" ")
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6") or not parts[2]:
        raise SdpError("c= line is not IN IP4|IP6 <address>")
    if "/" in parts[2]:
        raise SdpError("multicast c= line cannot be anchored")
    return parts


def _family(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"the relay address must be an IP address, not {address!r}") from None
    return "IP6" if ip.version == 6 else "IP4"


def anchor_sdp(
    body: bytes,
    address: str,
    ports: list[Optional[int]],
    *,
    nortpproxy: str = "",
    replace_origin: bool = False,
    ice: Optional[IceCredentials] = None,
) -> bytes:
    """
    Point every stream of C{body} at a relay.

    Stream C{i} gets C{ports[i]} in its C{m=} line and C{address} in its C{c=} lines (the
    session one included; C{IN IP4} or C{IN IP6} after the address); C{a=rtcp} becomes
    C{ports[i] + 1} at C{address}.  A stream whose port is L{None}, or that was disabled
    (port 0), is left as it is (it gets its own C{c=} with the old address if it relied on a
    session C{c=} that changed).  Null addresses (C{0.0.0.0}, C{::}: hold) are kept.  ICE
    attributes (L{ICE_ATTRIBUTES}) are removed; every other line is kept byte for byte.
    C{nortpproxy} (C{a=nortpproxy:yes}, say) is added to the session part unless there
    already; C{replace_origin} also puts C{address} into C{o=} (rtpengine's C{replace-origin}).
    With C{ice} (the side receiving this SDP speaks ICE) the relay presents itself as an
    ICE-lite agent instead (RFC 8445 §2.5): session-level C{a=ice-lite}, C{a=ice-ufrag} and
    C{a=ice-pwd} from C{ice}, and in each anchored stream one host candidate per component,
    C{address} with the stream's relay port (component 2, RTCP, unless C{a=rtcp-mux}).
    When the result differs from C{body}, the C{o=} session version goes up by one (RFC 3264
    §8).

    @param ports: one entry per C{m=} line.
    @raise SdpError: not SDP, mixed line ends, an C{m=}, C{c=} or C{o=} line sbc cannot
        read, a multicast or multi-port (C{/n}) stream, or a stream without an address.
    @raise ValueError: C{address} is not an IP address, or C{ports} has the wrong length.
    """
    family = _family(address)
    sdp = parse_sdp(body)
    lines = sdp.lines
    for line in lines:
        if "\r" in line or "\n" in line:
            raise SdpError("mixed line ends")
    if len(ports) != len(sdp.media_starts):
        raise ValueError(f"{len(ports)} ports for {len(sdp.media_starts)} streams")
    new_connection = f"c=IN {family} {address}"
    out: list[str] = []
    origin_at: Optional[int] = None
    session_line: Optional[str] = None  # the session c= line as it was
    session_changed = False
    session_end = sdp.media_starts[0] if sdp.media_starts else len(lines)
    for line in lines[:session_end]:
        if line.startswith("a="):
            if _attribute(line) in ICE_ATTRIBUTES:
                continue
        elif line.startswith("c="):
            parts = _connection_parts(line)
            session_line = line
            if not _is_null(parts[2]):
                session_changed = line != new_connection
                line = new_connection
        elif line.startswith("o="):
            origin_at = len(out)
        out.append(line)
    if nortpproxy:
        extra = nortpproxy if nortpproxy.startswith("a=") else "a=" + nortpproxy
        if extra not in out:
            out.append(extra)
    if ice is not None:
        out += ["a=ice-lite", f"a=ice-ufrag:{ice.ufrag}", f"a=ice-pwd:{ice.pwd}"]
    for index, (start, end) in enumerate(_split_sections(sdp)):
        parts, port, count = _media_line(lines[start])
        relay = ports[index]
        if relay is None or port == 0:
            out.append(lines[start])
            section = [line for line in lines[start + 1 : end] if not _is_ice(line)]
            if port and session_changed and not any(x.startswith("c=") for x in section):
                assert session_line is not None
                at = 1 if section and section[0].startswith("i=") else 0
                section.insert(at, session_line)
            out.extend(section)
            continue
        if not 0 < relay <= 65535:
            raise ValueError(f"relay port out of range: {relay}")
        if count is not None and count != 1:
            raise SdpError("a stream with several ports cannot be anchored")
        parts[1] = str(relay)
        out.append("m=" + " ".join(parts))
        section = lines[start + 1 : end]
        connection = next((x for x in section if x.startswith("c=")), session_line)
        if connection is None:
            raise SdpError(f"stream {index} has no connection address")
        held = _is_null(_connection_parts(connection)[2])
        for line in section:
            if line.startswith("c="):
                if not _is_null(_connection_parts(line)[2]):
                    line = new_connection
            elif line.startswith("a="):
                name = _attribute(line)
                if name in ICE_ATTRIBUTES:
                    continue
                if name == "rtcp":
                    line = _rtcp_line(line, relay + 1, None if held else f"IN {family} {address}")
            out.append(line)
        if ice is not None:
            out.append(candidate_line(address, relay, 1))
            if not any(line == "a=rtcp-mux" for line in section):
                out.append(candidate_line(address, relay + 1, 2))
    if replace_origin and origin_at is not None:
        out[origin_at] = _origin(out[origin_at], family, address, bump=False)
    if out != list(lines):
        if origin_at is None:
            raise SdpError("no o= line to bump")
        out[origin_at] = _origin(out[origin_at], family, address, bump=True)
    return SdpLines(tuple(out), sdp.eol, ()).serialise()


def sdp_has_ice(body: bytes) -> bool:
    """Does C{body} carry ICE (C{a=ice-ufrag}, C{a=ice-pwd} or C{a=candidate}, RFC 8839)?
    L{False} for a body that is not SDP."""
    try:
        return any(stream.ice for stream in media_streams(body))
    except SdpError:
        return False


def _is_ice(line: str) -> bool:
    return line.startswith("a=") and _attribute(line) in ICE_ATTRIBUTES


def _rtcp_line(line: str, port: int, target: Optional[str]) -> str:
    """C{a=rtcp:<port> <target>}; without a target (hold) the old address stays."""
    fields = line[7:].split(" ")
    _number(fields[0])
    if target is None or (len(fields) >= 4 and _is_null(fields[3])):
        return "a=rtcp:" + " ".join([str(port), *fields[1:]])
    return f"a=rtcp:{port} {target}"


def _origin(line: str, family: str, address: str, *, bump: bool) -> str:
    """The C{o=} line with its version one higher (C{bump}) or with C{address} in it."""
    parts = line[2:].split(" ")
    if len(parts) != 6:
        raise SdpError("o= line without six fields")
    if bump:
        version = parts[2]
        if not (version.isascii() and is_digits(version)) or len(version) > 20:
            raise SdpError("o= session version is not a number")
        parts[2] = str(int(version) + 1)
    else:
        parts[4], parts[5] = family, address
    return "o=" + " ".join(parts)


#: Transport profiles of DTLS-SRTP media (RFC 5764 §8), what WebRTC speaks (RFC 8827).
DTLS_PROFILES = (b"UDP/TLS/RTP/SAVPF", b"UDP/TLS/RTP/SAVP")


def sdp_is_dtls(sdp: bytes) -> bool:
    """Does an SDP offer or answer media over DTLS-SRTP (an C{m=} line with a
    C{UDP/TLS/RTP/SAVP(F)} profile)?"""
    for line in sdp.splitlines():
        if line.startswith(b"m=") and any(p in line.upper() for p in DTLS_PROFILES):
            return True
    return False
