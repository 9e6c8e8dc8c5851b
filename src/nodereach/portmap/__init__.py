"""Port mapping: PCP (RFC 6887), NAT-PMP (RFC 6886), UPnP IGD; mappings that keep themselves alive.

    async with nodereach.portmap.open_port(30303, "tcp") as mapping:
        print(mapping.external)            # ("198.51.100.2", 30303)
        async for event in mapping.changes():
            ...                            # renewed, address-changed, restarted, port-changed, error
"""

from __future__ import annotations

from typing import Any

__all__ = ["Event", "LiveMapping", "MethodAvailability", "PortMapper", "PortMapping", "open_port", "probe_gateway"]


def __getattr__(name: str) -> Any:
    """Lazy exports: importing the package stays cheap for the CLI."""
    if name in ("Event", "LiveMapping", "PortMapper", "PortMapping", "open_port"):
        from nodereach.portmap import keeper

        return getattr(keeper, name)
    if name in ("MethodAvailability", "probe_gateway"):
        from nodereach.portmap import probe

        return getattr(probe, name)
    raise AttributeError(name)
