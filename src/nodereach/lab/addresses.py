"""The lab's stable, documented addresses: a user (and every test) can rely on them.

The simulated internet uses only the documentation ranges 198.51.100.0/24 (subscribers) and
203.0.113.0/24 (servers); carrier-grade NAT uses 100.64.0.0/10; RFC 1918 ranges appear only on links
between lab namespaces. IPv6 comes from the documentation prefix 2001:db8::/32 only (RFC 3849), numbered
to echo the IPv4 plan (2001:db8:203::10 is 203.0.113.10's twin); the NPTv6 home LAN uses a ULA prefix.
Nothing in the lab has a route to the host's real network, in either family.
"""

from __future__ import annotations

# The internet core ("inet" host): a router between the two documentation /24s, on a bridge every
# internet-side host is attached to. It is also where provider policy filters sit.
INET_SUBSCRIBER_GW = "198.51.100.1"
INET_SERVER_GW = "203.0.113.1"

# Internet hosts (203.0.113.0/24).
SERVER_IP = "203.0.113.10"       # `server`: run `nodereach serve` here
SERVER_ALT_IP = "203.0.113.11"   # `server`'s second address, for full RFC 5780 STUN
PEER_IP = "203.0.113.20"         # `peer`: a third party on the internet (unsolicited traffic, remote tests)
COTURN_IP = "203.0.113.30"       # `coturn`: the foreign STUN server (coturn) and miniupnpd's STUN target
COTURN_ALT_IP = "203.0.113.31"

# Subscriber side (198.51.100.0/24).
OPEN_CLIENT_IP = "198.51.100.50"  # `client` in `open`/`open-firewalled`: a public address, no NAT
ROUTER_WAN_IP = "198.51.100.2"    # `router` WAN in single-NAT scenarios: the subscriber's public address
ISP_WAN_IP = "198.51.100.3"       # `isp` WAN in double-nat / cgnat: the public address peers see

# Home network behind `router`.
HOME_LAN_GW = "192.168.1.1"
CLIENT_IP = "192.168.1.10"

# Between `router` and `isp`.
DOUBLE_NAT_ROUTER_WAN = "10.0.0.2"     # double-nat: a private upstream network
DOUBLE_NAT_ISP_LAN = "10.0.0.1"
CGNAT_ROUTER_WAN = "100.64.0.2"        # cgnat: RFC 6598 shared address space
CGNAT_ISP_LAN = "100.64.0.1"

# Ports the `p2p-filtered` provider drops in both directions, TCP and UDP, unless a test names others.
DEFAULT_FILTERED_PORTS = (30303, 4001, 6881, 8333, 9000)

# --- IPv6 (2001:db8::/32) ----------------------------------------------------------------------------------
# Internet side: two /64s on inet's bridge, the twins of the two IPv4 /24s.
INET6_SERVER_NET = "2001:db8:203::/64"
INET6_SUBSCRIBER_NET = "2001:db8:198::/64"
INET6_SERVER_GW = "2001:db8:203::1"
INET6_SUBSCRIBER_GW = "2001:db8:198::1"

SERVER_IP6 = "2001:db8:203::10"       # `server`: two IPv6 addresses too (RFC 5780 and dial-back over IPv6)
SERVER_ALT_IP6 = "2001:db8:203::11"
PEER_IP6 = "2001:db8:203::20"
COTURN_IP6 = "2001:db8:203::30"
COTURN_ALT_IP6 = "2001:db8:203::31"

ROUTER_WAN_IP6 = "2001:db8:198::2"     # `router` WAN in single-NAT IPv6 scenarios
ISP_WAN_IP6 = "2001:db8:198::3"        # `isp` WAN in cgnat-ipv6
OPEN_CLIENT_IP6 = "2001:db8:198::50"   # reserved for an open dual-stack client (no scenario uses it yet)

# Between `isp` and `router` (cgnat-ipv6): the provider's link network, routed (no NAT66 at the provider).
ISP6_LINK_NET = "2001:db8:100::/64"
ISP_LAN_IP6 = "2001:db8:100::1"
CGNAT_ROUTER_WAN_IP6 = "2001:db8:100::2"

# The subscriber's delegated prefix, routed by the internet (and the isp) to the home router; the home LAN
# is its first /64. The client's address is also the address peers dial (no translation).
DELEGATED_PREFIX6 = "2001:db8:1::/48"
HOME_LAN6_NET = "2001:db8:1:1::/64"
HOME_LAN_GW6 = "2001:db8:1:1::1"
CLIENT_IP6 = "2001:db8:1:1::10"

# nptv6: the home LAN uses a unique-local prefix the router translates 1:1 to HOME_LAN6_NET (RFC 6296 style;
# Linux keeps the interface identifier, so fd00:192:168:1::10 is seen as 2001:db8:1:1::10).
NPT_LAN6_NET = "fd00:192:168:1::/64"
NPT_LAN_GW6 = "fd00:192:168:1::1"
NPT_CLIENT_IP6 = "fd00:192:168:1::10"
