"""Ready-to-paste router rules and provider messages, filled in with what check detected (pure text)."""

from __future__ import annotations

import ipaddress

from nodereach.net import PortSpec

__all__ = ["PortSpec", "dmz_rules", "firewall_accept_rules", "ipv6_firewall_rules", "port_forward_rules",
           "provider_message_cgnat", "provider_message_double_nat", "provider_message_filter"]

WAN_PLACEHOLDER = "wan"  # interface name on the router; we cannot see it from the node


def port_forward_rules(node_ip: str, ports: list[PortSpec], wan_if: str = WAN_PLACEHOLDER) -> dict[str, str]:
    """Destination NAT (port forward) to the node, one snippet per router family."""
    nft = ["# nftables (Linux router): forward to the node, and let the forwarded packets through",
           "nft add table ip nat",
           "nft 'add chain ip nat prerouting { type nat hook prerouting priority dstnat; }'"]
    ipt = ["# iptables (Linux router)"]
    uci: list[str] = ["# OpenWrt"]
    ros = ["# MikroTik RouterOS"]
    for p in ports:
        nft.append(f"nft add rule ip nat prerouting iifname \"{wan_if}\" {p.protocol} dport {p.port} "
                   f"dnat to {node_ip}:{p.port}")
        ipt.append(f"iptables -t nat -A PREROUTING -i {wan_if} -p {p.protocol} --dport {p.port} "
                   f"-j DNAT --to-destination {node_ip}:{p.port}")
        ipt.append(f"iptables -A FORWARD -p {p.protocol} -d {node_ip} --dport {p.port} -j ACCEPT")
        name = f"nodereach-{p.port}-{p.protocol}"
        uci += ["uci add firewall redirect",
                f"uci set firewall.@redirect[-1].name='{name}'",
                "uci set firewall.@redirect[-1].target='DNAT'",
                "uci set firewall.@redirect[-1].src='wan'",
                "uci set firewall.@redirect[-1].dest='lan'",
                f"uci set firewall.@redirect[-1].proto='{p.protocol}'",
                f"uci set firewall.@redirect[-1].src_dport='{p.port}'",
                f"uci set firewall.@redirect[-1].dest_ip='{node_ip}'",
                f"uci set firewall.@redirect[-1].dest_port='{p.port}'"]
        ros.append(f"/ip firewall nat add chain=dstnat in-interface-list=WAN protocol={p.protocol} "
                   f"dst-port={p.port} action=dst-nat to-addresses={node_ip} to-ports={p.port} "
                   f"comment=\"nodereach {p}\"")
    nft.append("# if the forward chain drops by default:")
    nft.append("nft add rule inet filter forward ct status dnat accept")
    uci += ["uci commit firewall", "/etc/init.d/firewall restart"]
    return {"nftables": "\n".join(nft), "iptables": "\n".join(ipt), "openwrt": "\n".join(uci),
            "routeros": "\n".join(ros)}


def dmz_rules(node_ip: str, wan_if: str = WAN_PLACEHOLDER) -> dict[str, str]:
    """Exposed host: every unsolicited inbound connection goes to the node (only for a dedicated machine)."""
    return {
        "nftables": f"nft add rule ip nat prerouting iifname \"{wan_if}\" fib daddr type local dnat to {node_ip}",
        "iptables": f"iptables -t nat -A PREROUTING -i {wan_if} -j DNAT --to-destination {node_ip}",
        "openwrt": "\n".join(["uci add firewall redirect", "uci set firewall.@redirect[-1].name='nodereach-dmz'",
                              "uci set firewall.@redirect[-1].target='DNAT'",
                              "uci set firewall.@redirect[-1].src='wan'",
                              "uci set firewall.@redirect[-1].dest='lan'",
                              f"uci set firewall.@redirect[-1].dest_ip='{node_ip}'",
                              "uci commit firewall", "/etc/init.d/firewall restart"]),
        "routeros": f"/ip firewall nat add chain=dstnat in-interface-list=WAN action=dst-nat "
                    f"to-addresses={node_ip} comment=\"nodereach dmz\"",
    }


def firewall_accept_rules(ports: list[PortSpec]) -> dict[str, str]:
    """Inbound accept rules for a stateful firewall on the node itself or on a router without NAT."""
    nft = ["# nftables (on the node; table/chain names as in your ruleset, here inet filter input)"]
    ipt = ["# iptables"]
    ufw = ["# ufw"]
    ros = ["# MikroTik RouterOS"]
    for p in ports:
        nft.append(f"nft add rule inet filter input {p.protocol} dport {p.port} accept")
        ipt.append(f"iptables -I INPUT -p {p.protocol} --dport {p.port} -j ACCEPT")
        ufw.append(f"ufw allow {p.port}/{p.protocol}")
        ros.append(f"/ip firewall filter add chain=forward protocol={p.protocol} dst-port={p.port} "
                   f"action=accept place-before=0 comment=\"nodereach {p}\"")
    return {"nftables": "\n".join(nft), "iptables": "\n".join(ipt), "ufw": "\n".join(ufw),
            "routeros": "\n".join(ros)}


def ipv6_firewall_rules(node_ip6: str, ports: list[PortSpec], wan_if: str = WAN_PLACEHOLDER) -> dict[str, str]:
    """Inbound accept rules for the node's IPv6 address in a router's IPv6 firewall (no NAT: the router only
    has to let new connections to the node through its forward chain), one snippet per router family."""
    nft = ["# nftables (Linux router): new inbound connections to the node, before the forward chain's drop",
           "# (table/chain names as in your ruleset, here inet filter forward)"]
    ipt = ["# ip6tables (Linux router)"]
    uci = ["# OpenWrt (dest_ip '::" + _iid(node_ip6) + "/-64' instead follows the node if the prefix changes)"]
    ros = ["# MikroTik RouterOS"]
    for p in ports:
        nft.append(f"nft insert rule inet filter forward iifname \"{wan_if}\" ip6 daddr {node_ip6} "
                   f"{p.protocol} dport {p.port} accept")
        ipt.append(f"ip6tables -I FORWARD -i {wan_if} -d {node_ip6} -p {p.protocol} --dport {p.port} -j ACCEPT")
        uci += ["uci add firewall rule",
                f"uci set firewall.@rule[-1].name='nodereach-{p.port}-{p.protocol}-ipv6'",
                "uci set firewall.@rule[-1].family='ipv6'",
                "uci set firewall.@rule[-1].src='wan'",
                "uci set firewall.@rule[-1].dest='lan'",
                f"uci set firewall.@rule[-1].proto='{p.protocol}'",
                f"uci set firewall.@rule[-1].dest_ip='{node_ip6}'",
                f"uci set firewall.@rule[-1].dest_port='{p.port}'",
                "uci set firewall.@rule[-1].target='ACCEPT'"]
        ros.append(f"/ipv6 firewall filter add chain=forward in-interface-list=WAN protocol={p.protocol} "
                   f"dst-address={node_ip6}/128 dst-port={p.port} action=accept place-before=0 "
                   f"comment=\"nodereach {p}\"")
    uci += ["uci commit firewall", "/etc/init.d/firewall restart"]
    ports_text = ", ".join(f"{p.port} ({p.protocol.upper()})" for p in ports)
    home = (f"In the router's web interface, allow incoming IPv6 connections to this device ({node_ip6}) on "
            f"port(s) {ports_text}. The setting is called 'IPv6 firewall' / 'IPv6 pinhole' / 'port sharing' "
            "or 'permit access' for the device (FRITZ!Box: Internet > Permit Access > Port Sharing, the "
            "device, new sharing, IPv6 enabled). Some routers only offer to open the device's ports entirely "
            "('exposed host' for IPv6): prefer single ports.")
    return {"nftables": "\n".join(nft), "ip6tables": "\n".join(ipt), "openwrt": "\n".join(uci),
            "routeros": "\n".join(ros), "home-router": home}


def _iid(address: str) -> str:
    """The interface identifier (low 64 bits) of an IPv6 address, as OpenWrt's negative-mask suffix matches it
    (`::10/-64`); the address itself when it does not parse."""
    try:
        raw = ipaddress.IPv6Address(address).packed
    except ValueError:
        return address
    return str(ipaddress.IPv6Address(bytes(8) + raw[8:])).lstrip(":")


def _ports_text(ports: list[PortSpec]) -> str:
    return ", ".join(str(p) for p in ports) if ports else "the port my node listens on"


def provider_message_cgnat(public_ip: str | None, wan_ip: str | None, ports: list[PortSpec],
                           hop_ip: str | None = None) -> str:
    if wan_ip:
        wan = f" (my router's WAN address is {wan_ip}, in the shared range 100.64.0.0/10)"
    elif hop_ip:
        wan = f" (the first router after mine, {hop_ip}, is in the shared range 100.64.0.0/10)"
    else:
        wan = ""
    pub = f" The address the internet sees is {public_ip}." if public_ip else ""
    return (f"Hello, my line appears to be behind carrier-grade NAT{wan}.{pub} I run a peer-to-peer node that "
            f"must accept incoming connections on {_ports_text(ports)}. Could you please give my line a public "
            "IPv4 address (take it out of CGNAT), or tell me which option or tariff provides one? Thank you.")


def provider_message_filter(blocked: list[PortSpec], udp_blocked: bool) -> str:
    what = "all outgoing UDP traffic" if udp_blocked else f"traffic on {_ports_text(blocked)}"
    return (f"Hello, my connection seems to filter {what}. I run a peer-to-peer node that needs it. "
            "Could you please lift this filter for my line, or tell me how to opt out of it? Thank you.")


def provider_message_double_nat(public_ip: str | None, ports: list[PortSpec]) -> str:
    pub = f" (the internet sees {public_ip})" if public_ip else ""
    return (f"Hello, my router gets a private WAN address from your network{pub}, so my connection is behind "
            f"two NATs. I run a peer-to-peer node that must accept incoming connections on {_ports_text(ports)}. "
            "Could you please give my router a public IPv4 address, or put your modem into bridge mode? Thank you.")
