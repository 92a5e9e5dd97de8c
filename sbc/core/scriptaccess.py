# -*- test-case-name: tests.core.test_routescript_access -*-
"""
The routing-script functions that decide who may use sbc, with Kamailio's names:
C{allow_source_address} (permissions), C{is_from_local}/C{is_uri_host_local}, C{has_totag},
C{is_known_dlg} (dialog), C{auth_check}/C{auth_challenge}/C{consume_credentials}
(auth_db, auth), and sbc's relay verdict over them (L{sbc.core.relaypolicy}).

L{AccessFunctions} is mixed into the request context of L{sbc.core.routescript}; it reads
the context's request, source and proxy and answers through the context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from sbc.core.message import Header, Request
from sbc.core.relaypolicy import Verdict, in_dialog_verdict, initial_verdict
from sbc.core.uri import SipUri

if TYPE_CHECKING:  # pragma: no cover
    from sbc.core.address import Address
    from sbc.core.auth import AuthResult

__all__ = ["Result", "AccessFunctions"]


class Result(int):
    """A Kamailio-style result code: true when positive."""

    def __bool__(self) -> bool:
        return self > 0


class AccessFunctions:
    """Permissions, authentication and the relay verdict for C{request_route}."""

    # Provided by the request context this is mixed into.
    _proxy: Any
    _source: Address
    _consumed: tuple
    original: Request
    message: Any
    now: float
    effects: list
    done: bool
    #: The user this request authenticated as (auth_check returned 1), else None.
    authenticated: Optional[str] = None
    _auth_result: Optional[AuthResult] = None
    #: Whether loose_route() consumed our signed Route, for the message as it was then
    #: (asked again after the script changed the message, e.g. its Request-URI).
    _signed: Optional[tuple[Any, bool]] = None
    #: allow_source_address()'s answer, once asked (the source does not change).
    _trusted: Optional[bool] = None

    def _reply(self, code: int, reason: Optional[str] = None, headers: Any = ()) -> None:
        raise NotImplementedError

    # -- permissions ------------------------------------------------------------------------
    def allow_source_address(self, group: int = 1) -> bool:
        """permissions' allow_source_address(): did a C{[permissions] trusted} peer send
        this request (its transport, address and port)?  sbc's own sockets count too: a
        request from them is a spiral."""
        trusted = self._trusted
        if trusted is None:
            trusted = self._trusted = bool(self._proxy.is_trusted(self._source))
        return trusted

    @property
    def allow_relay(self) -> bool:
        """[core] allow_relay: the operator opened the relay to anyone."""
        return bool(self._proxy.settings.allow_relay)

    @property
    def auth_enabled(self) -> bool:
        """[auth] is on: our users must authenticate."""
        return self._proxy.auth is not None

    def is_from_local(self) -> bool:
        """Does the From URI name one of our domains or addresses?"""
        uri = self.original.from_.uri
        return isinstance(uri, SipUri) and self._proxy.identity.is_local_domain(uri)

    def is_uri_host_local(self) -> bool:
        """Does the Request-URI's host name one of our domains or addresses?"""
        uri = self.message.uri
        return isinstance(uri, SipUri) and self._proxy.identity.is_local_domain(uri)

    def has_totag(self) -> bool:
        """The To header has a tag: the request is inside a dialog."""
        return self.original.to.tag is not None

    def is_known_dlg(self) -> bool:
        """dialog's is_known_dlg(): sbc set up the dialog this request belongs to."""
        return bool(self._proxy.known_dialog(self.original, self.message))

    @property
    def routed_by_us(self) -> bool:
        """loose_route() consumed a Record-Route entry sbc signed for this dialog."""
        if self._signed is None or self._signed[0] is not self.message:
            signed = self._proxy.routed_by_us(self.original, self._consumed, self.now, self.message)
            self._signed = (self.message, bool(signed))
        return self._signed[1]

    # -- the verdict -------------------------------------------------------------------------
    def relay_verdict(self, to_us: bool) -> Verdict:
        """sbc's relay policy for this request (see L{sbc.core.relaypolicy}); C{to_us}:
        the request is for one of our domains and no Route takes it elsewhere."""
        trusted = self.allow_source_address()
        if self.has_totag():
            routed, allow_relay = self.routed_by_us, self.allow_relay
            # Any one of the four lets the request through: the dialog is looked up only
            # when none of the others does (the verdict is the same).
            known = False if routed or trusted or allow_relay else self.is_known_dlg()
            return in_dialog_verdict(
                method=self.original.method,
                routed_by_us=routed,
                known_dialog=known,
                trusted=trusted,
                allow_relay=allow_relay,
            )
        return initial_verdict(
            method=self.original.method,
            to_us=to_us,
            from_local=self.is_from_local(),
            trusted=trusted,
            auth_enabled=self.auth_enabled,
            allow_relay=self.allow_relay,
        )

    def refuse(self, verdict: Verdict) -> bool:
        """Answer a refused request: 403 Relaying Forbidden, 404 Not Here, or nothing (an
        ACK); counted and logged (rate-limited) by the engine."""
        if verdict is Verdict.ABSORB:
            self._proxy.forget(self)
            self.done = True
            return True
        self._reply(*self._proxy.refuse_relay(self.original, self._source, verdict))
        return True

    # -- digest authentication ---------------------------------------------------------------
    def auth_check(
        self, realm: Optional[str] = None, table: str = "subscriber", flags: int = 1
    ) -> Result:
        """auth_db's auth_check(): 1 when the request carries valid credentials for our
        realm; with flag 1 the user must be the From user (the To user of a REGISTER).
        Negative codes as Kamailio's: -2 wrong password, -3 unknown user, -4 nonce
        expired, -5 no credentials, -6 nonce reused, -8 another user's credentials, -1 any
        other failure (also when [auth] is off: there are no credentials to check)."""
        auth = self._proxy.auth
        if auth is None:
            return Result(-1)
        result = auth.check(self.original, self.now, check_user=bool(int(flags) & 1))
        self._auth_result = result
        if result.ok:
            self.authenticated = result.user
            return Result(1)
        return Result(result.code)

    def auth_challenge(self, realm: Optional[str] = None, flags: int = 0) -> bool:
        """auth's auth_challenge(): 401 for a REGISTER, 407 otherwise (stale when the last
        auth_check found an aged nonce); a 403 when the request used another user's
        credentials."""
        if self._proxy.auth is None:
            return False
        result = self._auth_result
        status = result.status if result is not None and result.status == 403 else 0
        stale = bool(result is not None and result.stale)
        self._reply(*self._proxy.auth_answer(self.original, status, stale, self.now))
        return True

    def consume_credentials(self) -> bool:
        """auth's consume_credentials(): remove the credentials for our realm (those for
        other realms stay for the next hop)."""
        auth = self._proxy.auth
        if auth is None or self.authenticated is None:
            return False
        name = "authorization" if self.original.method == "REGISTER" else "proxy-authorization"
        message = self.message
        kept = [h for h in message.headers if not (h.key == name and auth.is_ours(h.value))]
        if len(kept) == len(message.headers):
            return False
        self.message = message.with_headers([Header(h.name, h.value) for h in kept])
        return True

    # -- the safety net of save() and t_relay() ---------------------------------------------
    def challenge_unauthenticated(self) -> bool:
        """With [auth] on, a REGISTER for us or a request from one of our users that the
        script did not authenticate is challenged here instead of being saved or relayed
        (True: answered)."""
        if self.authenticated is not None or not self._proxy.needs_auth(
            self.original, self._source
        ):
            return False
        result = self.auth_check(flags=1)
        if result:
            return False
        self.auth_challenge()
        return True
