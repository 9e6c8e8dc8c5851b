"""The lab's stable, documented addresses: a user (and every test) can rely on them.

The simulated internet uses only the documentation ranges 198.51.100.0/24 (subscribers) and
203.0.113.0/24 (servers); carrier-grade NAT uses 100.64.0.0/10; RFC 1918 ranges appear only on links
between lab namespaces. Nothing in the lab has a route to the host's real network.
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
