"""nftables rulesets for the lab's routers, firewalls and provider filters (recipes proven in tests).

- masquerade = endpoint-independent mapping (port kept when free) + address-and-port-dependent filtering;
  `masquerade fully-random` = a random port per 5-tuple (symmetric).
- Full cone / restricted cone (UDP only): a postrouting chain after srcnat (priority 200) learns
  `external port -> client ip . port` into a dynamic map (and, for restricted cone, `remote ip . external
  port` into a dynamic set); a prerouting dnat uses the map for new inbound flows.
- The forward chain accepts `ct status dnat`, so port forwards (ours and miniupnpd's) carry traffic.
- IPv6 on a home router (`table inet nrl6`): a stateful firewall as RFC 6092 CPE ship it (replies and
  ICMPv6 errors/echo in, unsolicited inbound dropped), whose forward chain jumps to the pinhole chains
  (ours, then miniupnpd's) before its drop; NPTv6 (`table ip6 nrl6nat`): `snat/dnat ip6 prefix to`.
"""

from __future__ import annotations

from collections.abc import Iterable

from nodereach.lab import addresses as A

TABLE = "nrl"
TABLE6 = "nrl6"
"""The home router's IPv6 table (inet family: miniupnpd adds its pinhole rules to NFPROTO_INET tables)."""
TABLE6_NAT = "nrl6nat"
PINHOLE_CHAIN = "pinholes"
"""Static IPv6 pinholes (`Lab.open_pinhole`): what an operator adds by hand; flushed by `Lab.reset`."""
MINIUPNPD_CHAIN6 = "miniupnpd"
"""miniupnpd's filter chain on IPv6 routers (`upnp_table_name=nrl6`, `upnp_forward_chain=miniupnpd`)."""
# ICMPv6 that passes any IPv6 firewall here: errors (PMTU discovery needs packet-too-big) and echo, as
# RFC 4890 section 4.3.1 recommends and RFC 6092 CPE do.
ICMP6_TRANSIT = "destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, echo-reply"
SUBSCRIBER_NET = "198.51.100.0/24"
LEARN_TIMEOUT_S = 120
"""How long a learned cone mapping survives without outbound traffic (conntrack's UDP stream timeout)."""


def router(recipe: str, lan_net: str, *, wan: str = "wan", lan: str = "lan",
           learn_timeout_s: int = LEARN_TIMEOUT_S) -> str:
    """A home/ISP router: NAT per `recipe` for traffic from `lan_net` (the router's own traffic, e.g.
    miniupnpd's STUN check, keeps its address and port), stateful forward filter, input open to the LAN."""
    full = recipe in ("full-cone", "restricted-cone")
    restricted = recipe == "restricted-cone"
    masq = "masquerade fully-random" if recipe == "symmetric" else "masquerade"
    sets = ""
    inbound = ""
    learn = ""
    if full:
        sets += (f"  map cone {{ type inet_service : ipv4_addr . inet_service; flags dynamic, timeout; "
                 f"timeout {learn_timeout_s}s; size 65535; }}\n")
        learn += (f'    oifname "{wan}" ct original ip saddr {lan_net} meta l4proto udp ct direction original '
                  "update @cone { ct reply proto-dst : ct original ip saddr . ct original proto-src }\n")
        guard = "ip saddr . udp dport @allowed " if restricted else ""
        inbound = f'    iifname "{wan}" meta l4proto udp {guard}dnat ip addr . port to udp dport map @cone\n'
    if restricted:
        sets += (f"  set allowed {{ type ipv4_addr . inet_service; flags dynamic, timeout; "
                 f"timeout {learn_timeout_s}s; size 65535; }}\n")
        learn += (f'    oifname "{wan}" ct original ip saddr {lan_net} meta l4proto udp ct direction original '
                  "update @allowed { ip daddr . ct reply proto-dst }\n")
    return f"""table ip {TABLE} {{
{sets}  chain forwards {{
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    jump forwards
{inbound}  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "{wan}" ip saddr {lan_net} {masq}
  }}
  chain learn {{
    type filter hook postrouting priority 200; policy accept;
{learn}  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct status dnat accept
    iifname "{lan}" oifname "{wan}" accept
  }}
  chain input {{
    type filter hook input priority filter; policy drop;
    iif lo accept
    ct state established,related accept
    iifname "{lan}" accept
    # miniupnpd's ext_perform_stun check: answers from the lab's STUN server, also from its other
    # address/port (CHANGE-REQUEST), must reach the router itself.
    ip saddr {{ {A.COTURN_IP}, {A.COTURN_ALT_IP} }} udp sport {{ 3478, 3479 }} accept
    icmp type {{ echo-request, echo-reply, destination-unreachable, time-exceeded }} accept
  }}
}}
"""


def flush_learned(recipe: str) -> str:
    """Forget learned cone state (the conntrack flush forgets the rest of the NAT bindings)."""
    text = ""
    if recipe in ("full-cone", "restricted-cone"):
        text += f"flush map ip {TABLE} cone\n"
    if recipe == "restricted-cone":
        text += f"flush set ip {TABLE} allowed\n"
    return text


def flush_forwards() -> str:
    return f"flush chain ip {TABLE} forwards\n"


def port_forward(port: int, proto: str, target_ip: str, target_port: int, *, wan: str = "wan") -> str:
    return (f'add rule ip {TABLE} forwards iifname "{wan}" meta l4proto {proto} {proto} dport {port} '
            f"dnat ip to {target_ip}:{target_port}\n")


def host_firewall() -> str:
    """open-firewalled: a stateful input filter on the client (established/related and lo only)."""
    return f"""table inet {TABLE} {{
  chain input {{
    type filter hook input priority filter; policy drop;
    iif lo accept
    ct state established,related accept
  }}
}}
"""


def provider(*, udp_blocked: bool, filtered_ports: Iterable[int]) -> str:
    """The internet core's forward chain: provider policy applied to subscriber traffic."""
    ports = sorted(set(filtered_ports))
    body = ""
    if udp_blocked:
        body += f"    meta l4proto udp ip saddr {SUBSCRIBER_NET} drop\n"
        body += f"    meta l4proto udp ip daddr {SUBSCRIBER_NET} drop\n"
    sets = ""
    if ports:
        sets = f"  set p2p_ports {{ type inet_service; elements = {{ {', '.join(map(str, ports))} }} }}\n"
        body += "    meta l4proto { tcp, udp } th dport @p2p_ports drop\n"
        body += "    meta l4proto { tcp, udp } th sport @p2p_ports drop\n"
    return f"""table ip {TABLE} {{
{sets}  chain forward {{
    type filter hook forward priority filter; policy accept;
{body}  }}
}}
"""


def router6(*, firewall: bool, wan: str = "wan", lan: str = "lan") -> str:
    """The home router's IPv6 rules. With `firewall`, unsolicited inbound is dropped unless a pinhole rule
    (ours or miniupnpd's) accepts it first: miniupnpd's chain must be reached before the drop, which is why
    it lives in this table (a verdict in another table's base chain would not stop this chain's drop).
    IPv4 passes this table untouched: `table ip nrl` filters it."""
    drop = f'    iifname "{wan}" drop\n' if firewall else ""
    return f"""table inet {TABLE6} {{
  chain {PINHOLE_CHAIN} {{
  }}
  chain {MINIUPNPD_CHAIN6} {{
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    meta nfproto ipv4 accept
    ct state established,related accept
    ct state invalid drop
    iifname "{lan}" accept
    icmpv6 type {{ {ICMP6_TRANSIT} }} accept
    jump {PINHOLE_CHAIN}
    jump {MINIUPNPD_CHAIN6}
{drop}  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    meta nfproto ipv4 accept
    iif lo accept
    ct state established,related accept
    iifname "{lan}" accept
    meta l4proto ipv6-icmp accept
{drop}  }}
}}
"""


def nptv6(inside: str, outside: str, *, wan: str = "wan") -> str:
    """1:1 prefix translation (`inside` <-> `outside`, both /64). Linux does it with conntrack NAT and the
    NETMAP range flag: the interface identifier and the ports are kept, checksums are fixed up (RFC 6296's
    checksum-neutral rewrite of one word is not what Linux does). Inbound to `outside` is translated for new
    flows too, so the client is reachable at its translated address when nothing filters."""
    return f"""table ip6 {TABLE6_NAT} {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "{wan}" ip6 saddr {inside} snat ip6 prefix to {outside}
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "{wan}" ip6 daddr {outside} dnat ip6 prefix to {inside}
  }}
}}
"""


def pinhole6(address: str, port: int, proto: str) -> str:
    """A static IPv6 pinhole: inbound `proto` to `address`:`port` passes the firewall."""
    return (f"add rule inet {TABLE6} {PINHOLE_CHAIN} ip6 daddr {address} meta l4proto {proto} {proto} dport {port} "
            "accept\n")


def flush_pinholes6() -> str:
    return f"flush chain inet {TABLE6} {PINHOLE_CHAIN}\n"
