"""STUN interop through real kernel NAT (lab namespaces), in scenarios whose right answer is known:
coturn's turnutils_natdiscovery / turnutils_stunclient, pystun3 and aioice against nodereach's server on
`server` (two IPs, RFC 5780 mode), and nodereach's client against coturn on `coturn`."""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from nodereach.lab import Lab
from nodereach.lab import addresses as LA
from nodereach.stun.client import StunClient
from nodereach.stun.errors import StunTimeout
from nodereach.stun.transaction import Rfc8489Retransmit

pytestmark = pytest.mark.lab

MAPPING_TEXT = {"endpoint-independent": "NAT with Endpoint Independent Mapping!",
                "address-dependent": "NAT with Address Dependent Mapping!",
                "address-and-port-dependent": "NAT with Address and Port Dependent Mapping!"}
FILTERING_TEXT = {"endpoint-independent": "NAT with Endpoint Independent Filtering!",
                  "address-dependent": "NAT with Address Dependent Filtering!",
                  "address-and-port-dependent": "NAT with Address and Port Dependent Filtering!"}


class LabStunServer:
    """nodereach's STUN server as a process on the lab's `server` host; stopped by the fixture."""

    def __init__(self, net: Lab) -> None:
        self.proc = net.spawn("server", [sys.executable, "-m", "nodereach.stun", "--address", LA.SERVER_IP,
                                         "--alt-address", LA.SERVER_ALT_IP, "--port", "0", "--alt-port", "0"],
                              stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        assert ready, "nodereach STUN server did not start in the lab"
        raw = json.loads(self.proc.stdout.readline())["addresses"]
        self.addresses: dict[str, tuple[str, int]] = {k: (v[0], v[1]) for k, v in raw.items()}
        self.port = self.addresses["primary"][1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(3)


@pytest.fixture
def stun_lab(lab: Callable[..., Lab]) -> Iterator[Callable[[str], tuple[Lab, LabStunServer]]]:
    started: list[LabStunServer] = []

    def get(scenario: str) -> tuple[Lab, LabStunServer]:
        net = lab(scenario)
        server = LabStunServer(net)
        started.append(server)
        return net, server

    try:
        yield get
    finally:
        for s in started:
            s.stop()


@pytest.mark.parametrize("scenario", ["full-cone", "restricted-cone", "port-restricted", "symmetric"])
def test_natdiscovery_against_nodereach_server(stun_lab: Callable[[str], tuple[Lab, LabStunServer]],
                                               scenario: str) -> None:
    net, server = stun_lab(scenario)
    out = net.exec("client", ["turnutils_natdiscovery", "-m", "-f", "-p", str(server.port), LA.SERVER_IP],
                   timeout=40).stdout
    assert MAPPING_TEXT[net.truth.mapping] in out, out
    assert FILTERING_TEXT[net.truth.filtering] in out, out


def test_natdiscovery_hairpinning_against_nodereach_server(
        stun_lab: Callable[[str], tuple[Lab, LabStunServer]]) -> None:
    net, server = stun_lab("port-restricted")
    assert net.truth.hairpinning is False
    out = net.exec("client", ["turnutils_natdiscovery", "-H", "-p", str(server.port), LA.SERVER_IP],
                   timeout=40, check=False).stdout
    assert f"UDP reflexive addr: {net.truth.client_public_ip}:" in out, out  # the server told it its mapping
    assert "successful hairpinning" not in out and "STUN receive timeout" in out, out  # ...which does not loop back


def test_stunclient_against_nodereach_server(stun_lab: Callable[[str], tuple[Lab, LabStunServer]]) -> None:
    net, server = stun_lab("open")  # turnutils_stunclient never finishes behind the lab's NATs (even vs coturn)
    out = net.exec("client", ["turnutils_stunclient", "-p", str(server.port), LA.SERVER_IP], timeout=20).stdout
    assert f"UDP reflexive addr: {net.truth.client_public_ip}:" in out, out
    alt = server.addresses["alt_both"]
    assert f"Other addr: : {alt[0]}:{alt[1]}" in out, out


@pytest.mark.parametrize(("scenario", "expect"), [("full-cone", "Full Cone"), ("symmetric", "Symmetric NAT")])
def test_pystun3_against_nodereach_server(stun_lab: Callable[[str], tuple[Lab, LabStunServer]], scenario: str,
                                          expect: str) -> None:
    net, server = stun_lab(scenario)
    code = ("import random, stun, json, sys; print(json.dumps(stun.get_ip_info('0.0.0.0', random.randint(20000, "
            "60000), stun_host=sys.argv[1], stun_port=int(sys.argv[2]))))")
    out = net.exec("client", [sys.executable, "-c", code, LA.SERVER_IP, str(server.port)], timeout=60).stdout
    nat_type, ip, _port = json.loads(out)
    assert (nat_type, ip) == (expect, net.truth.client_public_ip)


async def test_aioice_gathers_srflx_from_nodereach_server(
        stun_lab: Callable[[str], tuple[Lab, LabStunServer]]) -> None:
    net, server = stun_lab("port-restricted")

    async def gather() -> list[str]:
        import aioice

        conn = aioice.Connection(ice_controlling=True, stun_server=(LA.SERVER_IP, server.port), use_ipv6=False)
        try:
            await conn.gather_candidates()
            return [c.host for c in conn.local_candidates if c.type == "srflx"]
        finally:
            await conn.close()

    assert await net.run_async("client", gather) == [net.truth.client_public_ip]


async def test_client_against_coturn_through_nat(lab: Callable[..., Lab]) -> None:
    """Mapped address and OTHER-ADDRESS agree with coturn; CHANGE-REQUEST replies pass a full-cone NAT
    and are filtered by a port-restricted one (the right answer for each)."""
    for scenario, change_passes in (("open", True), ("full-cone", True), ("port-restricted", False)):
        net = lab(scenario)
        net.start_coturn(rfc5780=True)
        seen = None
        if scenario == "open":  # turnutils_stunclient never finishes behind the lab's NATs
            out = net.exec("client", ["turnutils_stunclient", LA.COTURN_IP], timeout=20).stdout
            seen = re.search(r"UDP reflexive addr: ([\d.]+):\d+", out)
            assert seen is not None, out

        async def probe() -> tuple[object, ...]:
            async with StunClient(local=("0.0.0.0", 0), retransmit=Rfc8489Retransmit(rto=0.1, rc=3, rm=4)) as c:
                r = await c.binding((LA.COTURN_IP, 3478), timeout=2)
                try:
                    changed = await c.binding((LA.COTURN_IP, 3478), change_ip=True, change_port=True, timeout=1)
                    source = changed.source
                except StunTimeout:
                    source = None
                return r.mapped, r.other_address, r.response_origin, source

        mapped, other, origin, changed_source = await net.run_async("client", probe)
        assert mapped is not None and mapped[0] == net.truth.client_public_ip  # type: ignore[index]
        if seen is not None:
            assert mapped[0] == seen.group(1)  # type: ignore[index]
        assert other == (LA.COTURN_ALT_IP, 3479) and origin == (LA.COTURN_IP, 3478)
        assert changed_source == ((LA.COTURN_ALT_IP, 3479) if change_passes else None)


async def test_client_sees_symmetric_mapping(stun_lab: Callable[[str], tuple[Lab, LabStunServer]]) -> None:
    net, server = stun_lab("symmetric")

    async def probe() -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
        async with StunClient(local=("0.0.0.0", 0)) as c:
            a = await c.binding(server.addresses["primary"], timeout=2)
            b = await c.binding(server.addresses["alt_both"], timeout=2)
            return a.mapped, b.mapped

    a, b = await net.run_async("client", probe)
    assert a is not None and b is not None
    assert a[0] == b[0] == net.truth.client_public_ip and a[1] != b[1]


async def test_client_on_socket_from_lab_namespace(stun_lab: Callable[[str], tuple[Lab, LabStunServer]]) -> None:
    """A socket created inside the client's namespace and handed to a client running on this loop."""
    net, server = stun_lab("port-restricted")
    sock = net.socket("client")
    sock.bind(("0.0.0.0", 0))
    local_port = sock.getsockname()[1]
    try:
        async with StunClient(sock=sock) as c:
            r = await c.binding(server.addresses["primary"], timeout=2)
            again = await c.binding(server.addresses["alt_both"], timeout=2)  # EIM: same mapping
            with pytest.raises(StunTimeout):  # APDF: the changed-address reply is filtered
                await c.binding(server.addresses["primary"], change_port=True, timeout=0.5)
        assert r.mapped is not None and r.mapped[0] == net.truth.client_public_ip
        assert again.mapped == r.mapped
        assert r.local[1] == local_port
    finally:
        sock.close()
