"""A way out of carrier-grade NAT without IPv6: a WireGuard tunnel to a rented host with a public address."""
