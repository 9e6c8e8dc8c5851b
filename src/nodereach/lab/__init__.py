"""Simulated networks with real kernel NAT (Linux network namespaces + nftables). See docs/lab.md."""
