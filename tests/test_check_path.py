"""The path to the internet when outbound UDP is blocked right behind the home router: the TTL-limited UDP
probes see only the first router, TCP SYNs with small TTLs see the provider's CGNAT behind it (IP_RECVERR
on a connecting TCP socket), so NAT layers and CGNAT stay known."""

from __future__ import annotations

import asyncio
import time

import pytest

from nodereach.diagnose import ttlprobe
from nodereach.lab import Lab
from nodereach.lab import addresses as A
from test_check_lab import ensure_serve, run_check

# A filter on the home router that drops every forwarded UDP datagram from the LAN (a router firewall rule or
# a provider CPE that blocks UDP). The router itself still answers a TTL that expires there.
BLOCK_UDP = ("table inet nodereach_udp_block {\n"
             "  chain forward {\n"
             "    type filter hook forward priority -10; policy accept;\n"
             f"    ip saddr {A.CLIENT_IP} meta l4proto udp drop\n"
             "  }\n"
             "}\n")


async def _trace_here(transport: str) -> list[str | None]:
    end = time.monotonic() + 2.0
    trace = ttlprobe.trace_tcp if transport == "tcp" else ttlprobe.trace
    return await trace((A.SERVER_IP, 3478), max_ttl=8, deadline=lambda: end, rto=lambda: 0.1)


def _trace(net: Lab, transport: str) -> list[str | None]:
    """One trace from inside the client's namespace (the probe itself, no CLI around it)."""
    return asyncio.run(net.run_async("client", _trace_here, transport))


@pytest.mark.lab
def test_tcp_trace_sees_the_whole_path(lab) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab("cgnat")
    ensure_serve(net)
    hops = _trace(net, "tcp")
    assert hops == [A.HOME_LAN_GW, A.CGNAT_ISP_LAN, A.INET_SUBSCRIBER_GW, A.SERVER_IP]
    assert _trace(net, "udp") == hops  # no filter: both see the same routers


@pytest.mark.lab
def test_udp_blocked_behind_the_router_still_sees_cgnat(private_lab) -> None:  # type: ignore[no-untyped-def]
    net: Lab = private_lab("cgnat")
    ensure_serve(net)
    net.exec("router", ["nft", "-f", "-"], input=BLOCK_UDP)
    assert _trace(net, "udp") == [A.HOME_LAN_GW]  # the UDP probes see only the home router
    code, doc, _err, _took = run_check(net, "--server", A.SERVER_IP, "--port", "30303/tcp")
    nat = doc["nat"]
    assert doc["udp"]["outbound"] is False and doc["tcp"]["outbound"] is True
    assert [h["address"] for h in nat["hops"]][:2] == [A.HOME_LAN_GW, A.CGNAT_ISP_LAN]
    assert (nat["present"], nat["layers"], nat["cgnat"]) == (True, 2, True)
    assert doc["causes"][:2] == ["udp-blocked", "cgnat"] and code == 1
    assert doc["advice"][0]["code"] == "ask-provider-lift-filter"
    assert "ask-provider-public-ipv4" in [a["code"] for a in doc["advice"]]


def test_tcp_trace_on_loopback_is_one_hop() -> None:
    """Without a lab: the destination answers at TTL 1 (handshake or refusal), nothing else is reported."""
    async def both() -> tuple[list[str | None], float]:
        start = time.monotonic()
        hops = await ttlprobe.trace_tcp(("127.0.0.1", 9), max_ttl=4, deadline=lambda: start + 2.0, rto=lambda: 0.05)
        return hops, time.monotonic() - start

    hops, took = asyncio.run(both())
    assert hops == ["127.0.0.1"] and took < 1.0
