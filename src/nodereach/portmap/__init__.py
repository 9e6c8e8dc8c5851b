"""Port mapping: PCP (RFC 6887), NAT-PMP (RFC 6886), UPnP IGD; mappings that keep themselves alive."""
