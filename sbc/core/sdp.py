# -*- test-case-name: tests.core.test_sdp -*-
"""
SDP (RFC 4566) as lines: just enough structure to find and rewrite addresses, with every
line sbc does not touch kept byte for byte.

An SDP body is a session part (up to the first C{m=}) and media sections.  The NAT code
reads C{c=}/C{o=} addresses (L{session_connection}, L{media_connections}) and rewrites
them with L{fix_nated_sdp} (Kamailio nathelper's function of that name, K: FIX-04).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

__all__ = [
    "SdpLines",
    "parse_sdp",
    "session_connection",
    "media_connections",
    "connection_address",
    "fix_nated_sdp",
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
    Kamailio's C{fix_nated_sdp(flags, address)} (FIX-04).

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
