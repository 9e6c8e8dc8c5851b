"""Port-mapping availability in check, against the lab's real miniupnpd (UPnP IGD, NAT-PMP, PCP)."""

from __future__ import annotations

import pytest

from nodereach.lab import Lab
from nodereach.lab import addresses as A
from test_check_lab import assert_matches_truth, ensure_serve, run_check

pytestmark = pytest.mark.lab


def test_home_router_offers_mapping_and_open_is_last_resort(lab) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab("port-restricted", home_router=True)
    ensure_serve(net)
    _code, doc, _err, _took = run_check(net, "--server", A.SERVER_IP, "--port", "30303/udp")
    pm = doc["portmap"]
    assert pm["natpmp"]["available"] is True and pm["pcp"]["available"] is True, pm
    assert pm["upnp"]["available"] is True, pm
    assert pm["natpmp"]["external_address"] == A.ROUTER_WAN_IP
    assert pm["upnp"]["external_address"] == A.ROUTER_WAN_IP and pm["pcp"]["external_address"] == A.ROUTER_WAN_IP
    assert_matches_truth(net, doc)
    codes = [a["code"] for a in doc["advice"]]
    # Nothing of a node listens on 30303 in the lab: check/2 also says to start the node (its own advice).
    assert [c for c in codes if c != "start-node"] == ["port-forward", "dmz", "nodereach-open"]
    last = next(a for a in doc["advice"] if a["code"] == "nodereach-open")
    assert "security" in last["detail"].lower() and last["commands"]["shell"] == "nodereach open 30303/udp"


def test_cgnat_home_router_never_suggests_mapping(lab) -> None:  # type: ignore[no-untyped-def]
    """miniupnpd behind CGNAT happily offers mappings (its STUN-derived address looks public), but they cannot
    carry inbound traffic: check must still lead with the provider and never offer UPnP/forwarding."""
    net: Lab = lab("cgnat", home_router=True)
    ensure_serve(net)
    _code, doc, _err, _took = run_check(net, "--server", A.SERVER_IP, "--port", "30303/udp")
    assert doc["portmap"]["upnp"]["available"] is True or doc["portmap"]["natpmp"]["available"] is True
    assert doc["nat"]["cgnat"] is True and doc["nat"]["layers"] == 2
    codes = [a["code"] for a in doc["advice"]]
    assert codes[0] == "ask-provider-public-ipv4"
    assert not {"port-forward", "dmz", "nodereach-open"} & set(codes)


def test_router_without_upnp(lab) -> None:  # type: ignore[no-untyped-def]
    """miniupnpd with NAT-PMP/PCP only: the search goes unanswered (`timeout`), the others are found, and the
    check does not wait for UPnP beyond its SSDP window."""
    net: Lab = lab("port-restricted", home_router=True)
    ensure_serve(net)
    net.start_miniupnpd(upnp=False, natpmp=True)
    try:
        _code, doc, _err, _took = run_check(net, "--server", A.SERVER_IP, "--port", "30303/udp")
    finally:
        net.start_miniupnpd()
    pm = doc["portmap"]
    assert (pm["upnp"]["available"], pm["upnp"]["reason"]) == (False, "timeout"), pm
    assert pm["natpmp"]["available"] is True and pm["pcp"]["available"] is True
    assert_matches_truth(net, doc)


def test_no_gateway_protocols_in_a_plain_lab(lab) -> None:  # type: ignore[no-untyped-def]
    """No miniupnpd: nothing answers PCP / NAT-PMP (the router's kernel refuses) nor the SSDP search."""
    net: Lab = lab("port-restricted")
    ensure_serve(net)
    _code, doc, _err, _took = run_check(net, "--server", A.SERVER_IP, "--port", "30303/udp")
    pm = doc["portmap"]
    assert {k: (v["available"], v["reason"]) for k, v in pm.items() if k in ("pcp", "natpmp", "upnp")} == {
        "pcp": (False, "port-unreachable"), "natpmp": (False, "port-unreachable"), "upnp": (False, "timeout")}, pm
