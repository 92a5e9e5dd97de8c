"""
A real NAT in network namespaces, made and torn down by the tests themselves.

    ns "pub"  203.0.113.1 (sbc), 203.0.113.3 (public UA)   -- veth --  203.0.113.2  ns "nat"
    ns "priv" 10.0.0.10 (UA behind NAT), default via 10.0.0.1 -- veth -- 10.0.0.1   ns "nat"

With C{second_nat=True} a second phone sits behind a second NAT on another public link:

    ns "pub"  198.51.100.1                                  -- veth --  198.51.100.2 ns "nat2"
    ns "priv2" 10.0.1.10 (2nd UA), default via 10.0.1.1     -- veth -- 10.0.1.1      ns "nat2"

The router namespace masquerades what leaves towards 203.0.113.0/24; with
C{symmetric=True} it uses C{--random-fully}, so every destination gets its own random
public port (a symmetric NAT).  Nothing in the root namespace is touched: every link is
created inside a namespace.  Names carry the test process's PID so parallel runs do not
collide.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Optional

import pytest

SBC_IP = "203.0.113.1"
SBC = f"{SBC_IP}:5060"
ROUTER_PUBLIC_IP = "203.0.113.2"
PUBLIC_UA_IP = "203.0.113.3"
PRIVATE_UA_IP = "10.0.0.10"
PUBLIC2_IP = "198.51.100.1"
ROUTER2_PUBLIC_IP = "198.51.100.2"
PRIVATE_UA2_IP = "10.0.1.10"


#: A phone behind the NAT registers and answers with one SIPp process; the caller reuses the
#: REGISTER's Call-ID so that SIPp maps the INVITE to that call (it matches by Call-ID).
SHARED_CALL_ID = ("-cid_str", "natreg-%u@sbc.test")


def nat_phone(
    lab: NatLab,
    folder,
    scenario: str,
    transport: str = "u1",  # type: ignore[no-untyped-def]
    timeout: float = 30.0,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen:
    """A SIPp phone (user alice, port 5070) in the private namespace running C{scenario}."""
    from tests.system.harness import sipp_command

    folder.mkdir(exist_ok=True)
    command = sipp_command(
        scenario,
        SBC,
        transport,
        local_ip=PRIVATE_UA_IP,
        timeout=timeout,
        extra=("-s", "alice", "-p", "5070", *extra, *SHARED_CALL_ID),
        prefix=tuple(lab.prefix(lab.priv)),
    )
    return subprocess.Popen(
        command, cwd=str(folder), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen, timeout: float = 40.0) -> tuple[int, str]:
    """Wait for a SIPp run (killed if it outlives C{timeout}); its exit code and output tail."""
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate(timeout=5)
    return process.returncode, (out or "")[-2500:]


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=20)


class NatLab:
    """Three namespaces and the NAT between them; use as a context manager."""

    def __init__(
        self, symmetric: bool = False, udp_timeout: Optional[int] = None, second_nat: bool = False
    ) -> None:
        tag = f"{os.getpid() % 100000}{'s' if symmetric else 'c'}{'2' if second_nat else ''}"
        self.pub = f"sbcpub{tag}"
        self.nat = f"sbcnat{tag}"
        self.priv = f"sbcpriv{tag}"
        self.nat2 = f"sbcnatb{tag}"
        self.priv2 = f"sbcprivb{tag}"
        self.second_nat = second_nat
        self.symmetric = symmetric
        self.udp_timeout = udp_timeout
        self._made: list[str] = []

    @staticmethod
    def check() -> None:
        """Skip the calling test, saying why, when namespaces cannot be made (CI=true: fail)."""
        if os.geteuid() != 0:
            pytest.skip("real-NAT tests need root (network namespaces, iptables)")
        for tool in ("ip", "iptables", "sipp"):
            if shutil.which(tool) is None:
                pytest.skip(f"real-NAT tests need {tool} (scripts/install-test-deps)")

    def prefix(self, namespace: str) -> list[str]:
        """The command prefix that runs a program inside C{namespace}."""
        return ["ip", "netns", "exec", namespace]

    def __enter__(self) -> NatLab:
        try:
            extra = (self.nat2, self.priv2) if self.second_nat else ()
            for ns in (self.pub, self.nat, self.priv, *extra):
                _run("ip", "netns", "add", ns)
                self._made.append(ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run(
                "ip",
                "-n",
                self.pub,
                "link",
                "add",
                "vpub",
                "type",
                "veth",
                "peer",
                "name",
                "vnatpub",
                "netns",
                self.nat,
            )
            _run(
                "ip",
                "-n",
                self.priv,
                "link",
                "add",
                "vpriv",
                "type",
                "veth",
                "peer",
                "name",
                "vnatpriv",
                "netns",
                self.nat,
            )
            for ns, dev, addresses in (
                (self.pub, "vpub", (f"{SBC_IP}/24", f"{PUBLIC_UA_IP}/24")),
                (self.nat, "vnatpub", (f"{ROUTER_PUBLIC_IP}/24",)),
                (self.nat, "vnatpriv", ("10.0.0.1/24",)),
                (self.priv, "vpriv", (f"{PRIVATE_UA_IP}/24",)),
            ):
                for address in addresses:
                    _run("ip", "-n", ns, "addr", "add", address, "dev", dev)
                _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", self.priv, "route", "add", "default", "via", "10.0.0.1")
            self._router(self.nat, "vnatpub")
            if self.second_nat:
                self._second_nat()
        except (subprocess.CalledProcessError, OSError) as error:
            self.__exit__()
            detail = getattr(error, "stderr", "") or str(error)
            pytest.skip(f"cannot build the NAT namespaces here: {detail.strip()}")
        return self

    def _router(self, namespace: str, public_dev: str) -> None:
        """Forwarding and masquerading (symmetric: --random-fully) out of C{public_dev}."""
        nat = self.prefix(namespace)
        _run(*nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        masquerade = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", public_dev]
        masquerade += ["-j", "MASQUERADE"]
        if self.symmetric:
            masquerade.append("--random-fully")
        _run(*nat, *masquerade)
        if self.udp_timeout is not None:
            # Both the unreplied and the assured ("stream") UDP timeouts, so that an idle
            # NAT binding really expires after udp_timeout seconds.
            for name in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
                _run(*nat, "sysctl", "-qw", f"net.netfilter.{name}={self.udp_timeout}")

    def _second_nat(self) -> None:
        """The second NAT: its own public link to "pub" and its own private network."""
        for ns, dev, peer in ((self.pub, "vpub2", "vnatbpub"), (self.priv2, "vpriv2", "vnatbpriv")):
            _run("ip", "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", peer)
            _run("ip", "-n", ns, "link", "set", peer, "netns", self.nat2)
        for ns, dev, address in (
            (self.pub, "vpub2", f"{PUBLIC2_IP}/24"),
            (self.nat2, "vnatbpub", f"{ROUTER2_PUBLIC_IP}/24"),
            (self.nat2, "vnatbpriv", "10.0.1.1/24"),
            (self.priv2, "vpriv2", f"{PRIVATE_UA2_IP}/24"),
        ):
            _run("ip", "-n", ns, "addr", "add", address, "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        _run("ip", "-n", self.priv2, "route", "add", "default", "via", "10.0.1.1")
        # The second NAT reaches sbc's network through "pub".
        _run("ip", "-n", self.nat2, "route", "add", "default", "via", PUBLIC2_IP)
        self._router(self.nat2, "vnatbpub")

    def __exit__(self, *exc: object) -> None:
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self._made = []
