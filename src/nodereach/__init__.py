"""nodereach: make peer-to-peer nodes reachable.

Finds out why peers cannot reach a node (NAT layers, RFC 4787 behaviour, CGNAT, filters), fixes what can
be fixed (port mappings that keep themselves alive), proves the result from outside (dial-back), and says
what to do next.

Library entry points for node software (imported lazily, so `import nodereach` stays cheap):

    async with nodereach.open_port(30303, "tcp") as mapping:   # PCP > NAT-PMP > UPnP, kept alive
        print(mapping.external)
    result = await nodereach.probe_port("203.0.113.10", 30303, "tcp", timeout=5)   # dial-back
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "open_port", "probe_gateway", "probe_port"]

_LAZY = {
    "open_port": "nodereach.portmap",
    "probe_gateway": "nodereach.portmap",
    "probe_port": "nodereach.reach.client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nodereach' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
