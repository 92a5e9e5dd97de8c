# -*- test-case-name: tests.core.test_routescript -*-
"""
What the routing-script contexts (L{sbc.core.routescript}) may ask of the proxy that hosts
them: answer, relay, branch again, answer a failure, find next hops, release media, and
read the settings, registrar and keepalive state.  The proxy implements it; the contexts
depend on this interface only, so nothing in the core imports upwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Protocol, Union

from sbc.core.address import Address
from sbc.core.message import Request
from sbc.core.relaypolicy import Verdict
from sbc.core.uri import SipUri

if TYPE_CHECKING:  # pragma: no cover
    from sbc.core.auth import DigestAuth
    from sbc.core.identity import LocalIdentity
    from sbc.core.keepalive import KeepaliveTable

__all__ = ["ScriptHost"]


class ScriptHost(Protocol):
    """The proxy as the routing script sees it."""

    identity: LocalIdentity
    settings: Any  # ProxySettings, read-only
    auth: Optional[DigestAuth]
    keepalive: Optional[KeepaliveTable]
    anchors_media: bool

    @property
    def media_calls(self) -> dict: ...

    # -- answers -------------------------------------------------------------------------
    def reply_to(self, ctx: Any, code: int, reason: Optional[str], headers: Any = ()) -> list: ...

    def options_reply(self, ctx: Any) -> list: ...

    def forget(self, ctx: Any) -> None: ...

    def reply_peer(self, request: Request, source: Address) -> Address: ...

    # -- forwarding ------------------------------------------------------------------------
    def relay(self, ctx: Any) -> bool: ...

    def relay_again(self, ctx: Any, uri: SipUri) -> bool: ...

    def reply_failure(self, ctx: Any, code: int, reason: Optional[str]) -> list: ...

    def hop_target(self, uri: SipUri) -> Union[Address, SipUri, None]: ...

    def path_target(self, consumed: tuple) -> Optional[Address]: ...

    def own_socket(self, text: str) -> Optional[Address]: ...

    def release_media(self, call_id: str) -> list: ...

    # -- location --------------------------------------------------------------------------
    def save_location(self, ctx: Any) -> int: ...

    def lookup_location(self, ctx: Any) -> Optional[list]: ...

    # -- who may do what -------------------------------------------------------------------
    def is_trusted(self, source: Address) -> bool: ...

    def needs_auth(self, request: Request, source: Address) -> bool: ...

    def auth_answer(
        self, request: Request, status: int, stale: bool, now: float
    ) -> tuple[int, Optional[str], list]: ...

    def refuse_relay(
        self, request: Request, source: Address, verdict: Verdict
    ) -> tuple[int, str]: ...

    def routed_by_us(
        self, request: Request, consumed: tuple, now: float, routed: Optional[Request] = None
    ) -> bool: ...

    def known_dialog(self, request: Request, routed: Optional[Request] = None) -> bool: ...
